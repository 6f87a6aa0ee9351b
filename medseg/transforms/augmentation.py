"""Training-time patch sampling and augmentation, built from MONAI transforms.

Input: a cached case ``{"image": (1, X, Y, Z) float32, "label": (1, X, Y, Z) uint8,
"label_cls_indices": [...]}`` in RAS at the target spacing. Output: one patch of
``plans.patch_size`` with random spatial and intensity changes, probabilities after
nnU-Net (rotation/scaling 0.2, noise 0.1, blur 0.2, brightness/contrast 0.15, gamma 0.3,
low resolution 0.25, mirroring 0.5 per axis).

Patches are drawn with MONAI ``RandCropByLabelClassesd``: a ``foreground_ratio`` share of
patches is centred on a foreground voxel, split evenly over the foreground classes, so
rare small classes (lesions) are seen as often as large ones. When rotation or scaling is
on, a 1.25x larger patch is cropped first and ``RandAffined`` resamples it to the patch
size, so rotated corners hold image data instead of padding (as nnU-Net does). Cases are
zero-padded first (:class:`PadForSamplingd`): to at least that crop, and by the crop's margin
over the patch, so that patches reach every voxel up to the case's border.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    CenterSpatialCropd,
    ClassesToIndicesd,
    Compose,
    ConcatItemsd,
    DeleteItemsd,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandSimulateLowResolutiond,
    SpatialPadd,
    SplitDimd,
)

from medseg.planning.plans import Plans
from medseg.transforms.config import AugmentConfig

KEYS = ("image", "label")


def class_ratios(num_classes: int, foreground_ratio: float) -> list[float]:
    """Sampling weight per class: background ``1 - r``, each foreground class ``r / (C-1)``."""
    fg = num_classes - 1
    if fg <= 0:
        return [1.0]
    return [1.0 - foreground_ratio] + [foreground_ratio / fg] * fg


def _anisotropic_axis(spacing: tuple[float, ...], threshold: float = 3.0) -> int | None:
    sp = np.asarray(spacing)
    worst = int(np.argmax(sp))
    return worst if sp[worst] > threshold * np.min(np.delete(sp, worst)) else None


def sampling_shape(plans: Plans, aug: AugmentConfig) -> tuple[int, ...]:
    """Voxel shape of the region cropped from a case before rotation/scaling, ``(X, Y, Z)``.

    ``plans.patch_size`` enlarged 1.25x when rotation or scaling is on, else the patch size;
    never along ``plans.slice_axis`` (2d: rotation and scaling stay in-plane).
    """
    patch = np.asarray(plans.patch_size)
    affine_on = aug.rotate_prob > 0 or aug.scale_prob > 0
    crop = np.ceil(patch * 1.25) if affine_on else patch.copy()
    if plans.slice_axis is not None:
        crop[plans.slice_axis] = patch[plans.slice_axis]
    return tuple(int(p) for p in crop)


def padded_shape(
    shape: Sequence[int], patch: Sequence[int], crop: Sequence[int]
) -> tuple[int, ...]:
    """Voxel shape a case of ``shape`` is zero-padded to before patch sampling.

    At least ``crop``, and ``crop - patch`` more than the case itself (half on each side),
    so that the final patch, the centre of the crop, can reach every voxel of the case up to
    its border. This is nnU-Net's ``need_to_pad``; without it the outer ``(crop - patch) / 2``
    voxels of a case larger than the crop would never be trained on.
    """
    return tuple(max(s + c - p, c) for s, p, c in zip(shape, patch, crop, strict=True))


class PadForSamplingd(MapTransform):
    """Zero-pad ``image`` and ``label`` to :func:`padded_shape` and re-index the classes.

    Written here because MONAI's ``SpatialPadd`` leaves a precomputed ``label_cls_indices``
    (flat indices into the unpadded shape) as it was, and ``RandCropByLabelClassesd`` then
    unravels them against the padded shape: along any axis but the first that puts patch
    centres on the wrong voxels, so a case thinner than the crop in Y or Z is sampled as if
    it had no foreground. A padded case carries ``sampling_padded`` and passes through again
    untouched: :func:`medseg.training.data.load_cached` pads the training cases once at load
    time, so that the training loop never pays for padding or re-indexing. The price is RAM:
    a case larger than the crop grows by ``crop - patch`` voxels per axis (a 512 x 512 x 300
    CT case with a 128^3 patch, crop 160^3: 1.25x). nnU-Net pads each patch on the fly
    instead; MONAI's label-class crop cannot reach outside the image, hence whole cases.
    """

    def __init__(self, patch: Sequence[int], crop: Sequence[int], num_classes: int) -> None:
        super().__init__(KEYS)
        self.patch = tuple(int(p) for p in patch)
        self.crop = tuple(int(c) for c in crop)
        self.index = ClassesToIndicesd("label", num_classes=num_classes)

    @classmethod
    def from_plans(cls, plans: Plans, aug: AugmentConfig) -> PadForSamplingd:
        """The padding that :func:`training_transforms` with these settings needs."""
        return cls(plans.patch_size, sampling_shape(plans, aug), plans.num_classes)

    def __call__(self, data: Any) -> dict:
        d = dict(data)
        if d.get("sampling_padded"):
            return d
        shape = tuple(int(s) for s in d["label"].shape[1:])
        target = padded_shape(shape, self.patch, self.crop)
        if target != shape:
            d = dict(SpatialPadd(KEYS, spatial_size=target)(d))
            if "label_cls_indices" in d:
                d = dict(self.index(d))
            if "affine" in d:  # the voxel-to-world map moves with the padding ("symmetric")
                before = [(t - s) // 2 for t, s in zip(target, shape, strict=True)]
                shift = torch.eye(4, dtype=torch.float64)
                shift[:3, 3] = -torch.tensor(before, dtype=torch.float64)
                d["affine"] = torch.as_tensor(d["affine"], dtype=torch.float64) @ shift
        d["sampling_padded"] = True
        return d


def spatial_transforms(plans: Plans, aug: AugmentConfig, foreground_ratio: float) -> list[Any]:
    """Patch sampling (with foreground oversampling), rotation/scaling and mirroring."""
    patch = np.asarray(plans.patch_size)
    affine_on = aug.rotate_prob > 0 or aug.scale_prob > 0
    crop = sampling_shape(plans, aug)
    steps: list[Any] = [
        PadForSamplingd(plans.patch_size, crop, plans.num_classes),
        RandCropByLabelClassesd(
            KEYS,
            label_key="label",
            spatial_size=crop,
            ratios=class_ratios(plans.num_classes, foreground_ratio),
            num_classes=plans.num_classes,
            num_samples=1,
            indices_key="label_cls_indices",
            warn=False,
        ),
    ]
    if affine_on:
        angle = np.deg2rad(aug.rotate_degrees) if aug.rotate_prob > 0 else 0.0
        coarse = _anisotropic_axis(plans.target_spacing)
        if plans.slice_axis is not None:  # 2d: rotate and scale within the slice only
            coarse = plans.slice_axis
        # Anisotropic data: rotate only within the fine plane (about the coarse axis).
        rot = [angle if coarse in (None, a) else 0.0 for a in range(3)]
        lo, hi = aug.scale_range if aug.scale_prob > 0 else (1.0, 1.0)
        scale = [(0.0, 0.0) if a == plans.slice_axis else (lo - 1.0, hi - 1.0) for a in range(3)]
        prob = 1.0 - (1.0 - aug.rotate_prob) * (1.0 - aug.scale_prob)
        steps.append(
            RandAffined(
                KEYS,
                prob=prob,
                spatial_size=tuple(int(p) for p in patch),
                rotate_range=rot,
                scale_range=scale,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
                cache_grid=True,
            )
        )
        steps.append(CenterSpatialCropd(KEYS, roi_size=tuple(int(p) for p in patch)))
    axes = plans.mirror_axes if aug.mirror_axes is None else aug.mirror_axes
    steps += [RandFlipd(KEYS, prob=aug.mirror_prob, spatial_axis=a) for a in axes]
    return steps


def intensity_transforms(aug: AugmentConfig, key: str = "image") -> list[Any]:
    """Noise, blur, brightness, contrast, simulated low resolution and gamma (on ``key``)."""
    steps: list[Any] = []
    if aug.noise_prob:
        steps.append(RandGaussianNoised(key, prob=aug.noise_prob, std=0.1))
    if aug.blur_prob:
        steps.append(
            RandGaussianSmoothd(
                key,
                prob=aug.blur_prob,
                sigma_x=(0.5, 1.0),
                sigma_y=(0.5, 1.0),
                sigma_z=(0.5, 1.0),
            )
        )
    if aug.brightness_prob:
        steps.append(RandScaleIntensityd(key, factors=0.25, prob=aug.brightness_prob))
    if aug.contrast_prob:
        steps.append(
            RandScaleIntensityFixedMeand(
                key, factors=0.25, prob=aug.contrast_prob, preserve_range=True
            )
        )
    if aug.lowres_prob:
        steps.append(RandSimulateLowResolutiond(key, prob=aug.lowres_prob, zoom_range=(0.5, 1.0)))
    if aug.gamma_prob:
        steps.append(
            RandAdjustContrastd(key, prob=aug.gamma_prob, gamma=(0.7, 1.5), retain_stats=True)
        )
    return steps


def training_transforms(
    plans: Plans, aug: AugmentConfig, foreground_ratio: float = 0.67
) -> Compose:
    """The whole training-time chain: sampling, spatial and intensity augmentation.

    Returns
    -------
    monai.transforms.Compose
        Maps a cached case to a list with one patch dict (``image`` ``(C, *patch_size)``
        float32, ``label`` ``(1, *patch_size)``); MONAI's ``list_data_collate`` batches it.
    """
    return Compose(
        spatial_transforms(plans, aug, foreground_ratio) + per_channel_intensity(plans, aug),
        map_items=True,
    )


def per_channel_intensity(plans: Plans, aug: AugmentConfig) -> list[Any]:
    """:func:`intensity_transforms`, drawn independently for every input channel.

    One channel: applied to ``image`` directly. Several (CT + PET): ``image`` is split into
    one key per channel (``SplitDimd``), each gets its own random draws, as nnU-Net's
    per-channel intensity augmentation does, and the channels are stacked back.
    """
    if plans.in_channels == 1:
        return intensity_transforms(aug)
    names = [f"c{n}" for n in range(plans.in_channels)]
    keys = [f"image_{n}" for n in names]
    steps: list[Any] = [SplitDimd("image", output_postfixes=names, dim=0, keepdim=True)]
    for key in keys:
        steps += intensity_transforms(aug, key)
    steps += [ConcatItemsd(keys, "image", dim=0), DeleteItemsd(keys)]
    return steps

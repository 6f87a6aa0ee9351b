"""Preprocessing shared by training and inference, so both see exactly the same data.

The pipeline works on dictionaries of MONAI ``MetaTensor`` of shape ``(C, I, J, K)``
whose ``affine`` is voxel-to-RAS in mm. Steps (all MONAI transforms, all invertible
except the intensity normalisation, so ``monai.transforms.Invertd`` can map predictions
back onto the source grid):

1. ``Orientationd`` to RAS (the axis order of ``Plans.target_spacing`` and ``patch_size``);
2. ``CropForegroundd`` to the bounding box of non-zero image voxels (optional);
3. intensity normalisation per input channel, by modality (CT: clip + dataset z-score;
   PET: per-image z-score; MR: per-image z-score over non-zero voxels);
4. ``Spacingd`` to ``Plans.target_spacing`` (trilinear for images, nearest for labels).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    Spacingd,
    Transform,
)

from medseg.errors import MedsegError
from medseg.io.channels import load_channels
from medseg.io.reader import load_volume
from medseg.planning.plans import ChannelPlan, Plans
from medseg.preprocessing.streamed import ClipScaleIntensity, ZScoreIntensity


class LoadVolumed(MapTransform):
    """Load paths with :func:`medseg.io.load_volume` into ``MetaTensor`` ``(1, I, J, K)``.

    Unlike MONAI's ``LoadImaged`` it reads DICOM series folders with medseg's checks
    (slice sorting, gaps, several series) and raises :class:`~medseg.errors.MedsegError`
    naming the file. A list of paths is one case's input channels
    (:func:`medseg.io.channels.load_channels`: ``(C, I, J, K)`` on channel 0's grid).
    Values that are already tensors are passed through.
    """

    def __init__(self, keys: Sequence[str], *, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if isinstance(value, torch.Tensor):
                continue
            is_label = str(key) == "label"
            if isinstance(value, list | tuple):
                volume = load_channels(value)
            else:
                volume = load_volume(value, allow_empty=is_label)
            d[key] = volume.to_metatensor()
        return d


def _is_nonzero(x: torch.Tensor) -> torch.Tensor:
    return x != 0


def _channel_transform(channel: ChannelPlan) -> Transform:
    """One channel's normalisation as a MONAI array transform on ``(1, X, Y, Z)``."""
    if channel.normalization == "ct":
        lo, hi = channel.intensity_clip  # type: ignore[misc]
        mean, std = float(channel.intensity_mean), float(channel.intensity_std)  # type: ignore[arg-type]
        # Clip-then-z-score is one linear map with clipping: MONAI's ScaleIntensityRange,
        # in place (bounded memory)
        return ClipScaleIntensity(
            a_min=lo, a_max=hi, b_min=(lo - mean) / std, b_max=(hi - mean) / std
        )
    # MONAI's NormalizeIntensity, in place with streamed statistics (bounded memory)
    return ZScoreIntensity(nonzero=channel.normalization == "zscore_nonzero")


class ChannelNormalized(MapTransform):
    """Normalise each input channel of ``key`` by its own :class:`ChannelPlan`.

    MONAI's intensity transforms apply one scheme to every channel; a CT + PET input needs
    the CT clipped and z-scored with dataset statistics and the PET z-scored per image, so
    each channel goes through its own MONAI transform.
    """

    def __init__(self, key: str, channels: Sequence[ChannelPlan]) -> None:
        super().__init__([key])
        self.key = key
        self.transforms = [_channel_transform(c) for c in channels]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = d[self.key]
        if img.shape[0] != len(self.transforms):
            raise MedsegError(
                f"expected {len(self.transforms)} input channel(s), found {img.shape[0]}",
                getattr(img, "meta", {}).get("filename_or_obj"),
            )
        # On a clone: MONAI's NormalizeIntensity z-scores in place, and the input may share
        # memory with the caller's Volume (which must never change).
        out = img.clone()
        for c, transform in enumerate(self.transforms):
            out[c : c + 1] = torch.as_tensor(transform(out[c : c + 1]))
        d[self.key] = out
        return d


def normalization_transform(plans: Plans, image_key: str = "image") -> MapTransform:
    """The intensity normalisation of ``plans`` as a MONAI transform on ``image_key``."""
    # every scheme works in place on one copy of the image (ChannelNormalized clones it)
    return ChannelNormalized(image_key, plans.channel_plans)


def preprocessing_transforms(
    plans: Plans,
    *,
    keys: Sequence[str] = ("image", "label"),
    load: bool = True,
) -> Compose:
    """Build the invertible preprocessing pipeline of ``plans``.

    Parameters
    ----------
    plans
        The run's plans.
    keys
        ``("image", "label")`` for training, ``("image",)`` for inference. The first key is
        the image: it drives foreground cropping and is normalised; others are label maps
        (resampled with nearest neighbour).
    load
        Prepend :class:`LoadVolumed` (inputs are paths) or not (inputs are MetaTensors).

    Returns
    -------
    monai.transforms.Compose
        Output image ``(C, X, Y, Z)`` float32 in RAS at ``plans.target_spacing`` (``C =
        plans.in_channels``, each channel normalised by its own scheme); labels
        ``(1, X, Y, Z)`` on the same grid.
    """
    keys = list(keys)
    image_key = keys[0]
    modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
    steps: list[Any] = [LoadVolumed(keys)] if load else []
    steps.append(EnsureTyped(keys, dtype=[torch.float32] + [torch.int16] * (len(keys) - 1)))
    steps.append(Orientationd(keys, axcodes="RAS", labels=None))
    if plans.crop_foreground:
        steps.append(
            CropForegroundd(keys, source_key=image_key, select_fn=_is_nonzero, allow_smaller=True)
        )
    steps.append(normalization_transform(plans, image_key))
    steps.append(
        Spacingd(keys, pixdim=plans.target_spacing, mode=modes, dtype=[np.float32] * len(keys))
    )
    return Compose(steps)

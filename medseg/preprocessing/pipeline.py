"""Preprocessing shared by training and inference, so both see exactly the same data.

The pipeline works on dictionaries of MONAI ``MetaTensor`` of shape ``(C, I, J, K)``
whose ``affine`` is voxel-to-RAS in mm. Steps (all MONAI transforms, all invertible
except the intensity normalisation, so ``monai.transforms.Invertd`` can map predictions
back onto the source grid):

1. ``Orientationd`` to RAS (the axis order of ``Plans.target_spacing`` and ``patch_size``);
2. ``CropForegroundd`` to the bounding box of non-zero image voxels (optional);
3. intensity normalisation by modality (CT: clip + dataset z-score; MR: per-image z-score);
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
    NormalizeIntensityd,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
)

from medseg.io.reader import load_volume
from medseg.planning.plans import Plans


class LoadVolumed(MapTransform):
    """Load paths with :func:`medseg.io.load_volume` into ``MetaTensor`` ``(1, I, J, K)``.

    Unlike MONAI's ``LoadImaged`` it reads DICOM series folders with medseg's checks
    (slice sorting, gaps, several series) and raises :class:`~medseg.errors.MedsegError`
    naming the file. Values that are already tensors are passed through.
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
            volume = load_volume(value, allow_empty=is_label)
            d[key] = volume.to_metatensor()
        return d


def _is_nonzero(x: torch.Tensor) -> torch.Tensor:
    return x != 0


def normalization_transform(plans: Plans, image_key: str = "image") -> MapTransform:
    """The intensity normalisation of ``plans`` as a MONAI transform on ``image_key``."""
    if plans.normalization == "ct":
        lo, hi = plans.intensity_clip  # type: ignore[misc]
        mean, std = float(plans.intensity_mean), float(plans.intensity_std)  # type: ignore[arg-type]
        # Clip-then-z-score is one linear map with clipping: ScaleIntensityRanged does it.
        return ScaleIntensityRanged(
            image_key,
            a_min=lo,
            a_max=hi,
            b_min=(lo - mean) / std,
            b_max=(hi - mean) / std,
            clip=True,
        )
    return NormalizeIntensityd(
        image_key, nonzero=plans.normalization == "zscore_nonzero", channel_wise=True
    )


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
        Output image ``(1, X, Y, Z)`` float32 in RAS at ``plans.target_spacing``; labels
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

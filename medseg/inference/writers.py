"""Output helpers: label volumes in millilitres and mm^3, and probability maps as 4D NIfTI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.io.atomic import atomic_path
from medseg.io.volume import Volume


def voxel_volume_mm3(mask: Volume) -> float:
    """Volume of one voxel in mm^3: ``|det(affine[:3, :3])|`` (any orientation or shear)."""
    return abs(float(np.linalg.det(mask.affine[:3, :3])))


def label_voxel_counts(mask: Volume, label_names: Mapping[int, str]) -> dict[str, int]:
    """Voxels of every non-background label, keyed by label name (absent labels: 0).

    Parameters
    ----------
    mask
        Label map ``(I, J, K)``.
    label_names
        ``{value: name}``; labels without a name are reported as ``label_<value>``.
    """
    # chunk by chunk: np.bincount copies its input to int64 (1.26 GB for 512x512x600)
    flat = np.asarray(mask.array).reshape(-1)
    counts = np.zeros(int(flat.max(initial=0)) + 1, dtype=np.int64)
    for i in range(0, flat.size, 1 << 22):
        counts += np.bincount(flat[i : i + (1 << 22)], minlength=counts.size)
    values = set(int(v) for v in label_names) | set(np.nonzero(counts)[0].tolist())
    return {
        label_names.get(value, f"label_{value}"): int(counts[value]) if value < counts.size else 0
        for value in sorted(values - {0})
    }


def mask_volumes_ml(mask: Volume, label_names: Mapping[int, str]) -> dict[str, float]:
    """Volume of every non-background label in millilitres (4 decimals), keyed by label name.

    Parameters
    ----------
    mask
        Label map ``(I, J, K)``; the voxel volume is ``|det(affine[:3, :3])|`` mm^3.
    label_names
        ``{value: name}``; labels without a name are reported as ``label_<value>``.
    """
    voxel_ml = voxel_volume_mm3(mask) / 1000.0
    return {k: round(n * voxel_ml, 4) for k, n in label_voxel_counts(mask, label_names).items()}


def mask_volumes_mm3(mask: Volume, label_names: Mapping[int, str]) -> dict[str, float]:
    """Volume of every non-background label in mm^3, unrounded, keyed by label name.

    Exactly ``voxel count * voxel volume`` (:func:`voxel_volume_mm3`), so a reader can
    recover the voxel count; ``mask_volumes_ml`` is the same divided by 1000 and rounded.
    """
    voxel = voxel_volume_mm3(mask)
    return {k: n * voxel for k, n in label_voxel_counts(mask, label_names).items()}


def write_probabilities(probabilities: Volume, path: str | os.PathLike[str]) -> Path:
    """Write class probabilities ``(C, I, J, K)`` as a 4D NIfTI ``(I, J, K, C)`` (atomic).

    Stored as uint8 with NIfTI scaling (``scl_slope`` about 1/255), so viewers read values
    in [0, 1] at a quarter of the float32 size; the affine (RAS, mm) is the scan's.
    """
    path = Path(path)
    data = np.moveaxis(np.asarray(probabilities.array, dtype=np.float32), 0, -1)
    img = nib.Nifti1Image(data, probabilities.affine)
    img.set_data_dtype(np.uint8)
    img.set_qform(probabilities.affine, code=1)
    img.set_sform(probabilities.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path

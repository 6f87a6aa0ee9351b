"""Output helpers: label volumes in millilitres and probability maps as 4D NIfTI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.io.atomic import atomic_path
from medseg.io.volume import Volume


def mask_volumes_ml(mask: Volume, label_names: Mapping[int, str]) -> dict[str, float]:
    """Volume of every non-background label in millilitres, keyed by label name.

    Parameters
    ----------
    mask
        Label map ``(I, J, K)``; the voxel volume is ``|det(affine[:3, :3])|`` mm^3.
    label_names
        ``{value: name}``; labels without a name are reported as ``label_<value>``.
    """
    voxel_ml = abs(float(np.linalg.det(mask.affine[:3, :3]))) / 1000.0
    counts = np.bincount(np.asarray(mask.array).ravel().astype(np.int64))
    values = set(int(v) for v in label_names) | set(np.nonzero(counts)[0].tolist())
    out = {}
    for value in sorted(values - {0}):
        n = int(counts[value]) if value < counts.size else 0
        out[label_names.get(value, f"label_{value}")] = round(n * voxel_ml, 4)
    return out


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

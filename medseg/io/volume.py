"""The in-memory volume: a voxel array that carries its scanner geometry.

Conventions used everywhere in medseg
-------------------------------------
- ``array`` has shape ``(I, J, K)`` (or ``(C, I, J, K)`` for multi-channel data such as
  probabilities), in the voxel order of the file: the NIfTI order for NIfTI, and
  (column, row, slice) for DICOM and ITK formats.
- ``affine`` is a 4x4 float64 matrix mapping voxel indices ``(i, j, k, 1)`` to world
  coordinates in millimetres in the **RAS+** frame, as nibabel defines it: world axis 0
  increases towards the patient's Right, axis 1 towards Anterior, axis 2 towards Superior.
  DICOM and ITK use LPS+; the conversion is done in one place,
  :func:`medseg.io.geometry.lps_to_ras`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np


@dataclass(frozen=True)
class Volume:
    """A 3D scan (or label map, or multi-channel map) with its geometry.

    Parameters
    ----------
    array
        Voxel data, shape ``(I, J, K)`` or ``(C, I, J, K)``.
    affine
        4x4 voxel-to-world matrix, world in RAS+ millimetres.
    path
        Where the volume was read from (file or DICOM folder), ``None`` if made in memory.
    meta
        Source metadata (format, modality, series UID, NIfTI q/sform codes, ...).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {aff.shape}")
        object.__setattr__(self, "affine", aff)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Shape of the three spatial axes ``(I, J, K)``."""
        return tuple(int(s) for s in self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(I, J, K)`` (norms of the affine's columns)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Anatomical direction each voxel axis points to, e.g. ``("R", "A", "S")``."""
        return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, **meta: Any) -> Volume:
        """Return a new volume on the same grid with other voxel data (same affine)."""
        if tuple(array.shape[-3:]) != self.spatial_shape:
            raise ValueError(
                f"array spatial shape {tuple(array.shape[-3:])} differs from {self.spatial_shape}"
            )
        return replace(self, array=array, meta={**self.meta, **meta})

    def to_metatensor(self) -> Any:
        """Return a MONAI ``MetaTensor`` of shape ``(C, I, J, K)`` with the RAS affine.

        A channel axis is added for 3D arrays. The meta dict records ``space="RAS"`` so
        MONAI's spatial transforms and ``Invertd`` use the same frame as medseg.
        """
        import torch
        from monai.data import MetaTensor
        from monai.utils import SpaceKeys

        arr = self.array if self.array.ndim == 4 else self.array[None]
        meta = {
            "filename_or_obj": str(self.path) if self.path else "",
            "space": SpaceKeys.RAS,
            "original_affine": torch.as_tensor(self.affine),
            "spatial_shape": np.asarray(self.spatial_shape),
        }
        return MetaTensor(
            torch.as_tensor(np.ascontiguousarray(arr)),
            affine=torch.as_tensor(self.affine),
            meta=meta,
        )


def describe_volume(volume: Volume) -> dict[str, Any]:
    """Plain-data summary of a volume (what ``medseg info`` prints and ``--json`` writes).

    Returns
    -------
    dict
        ``path``, ``format``, ``shape`` (voxels, array axis order), ``dtype``, ``spacing_mm``,
        ``axcodes`` (e.g. ``"RAS"``), ``origin_ras_mm`` and ``affine_ras`` (voxel -> RAS mm),
        intensity ``min``/``max``/``mean``, ``modality``, ``description``, ``series_uid``.
    """
    arr = volume.array
    return {
        "path": str(volume.path) if volume.path else None,
        "format": volume.meta.get("format"),
        "shape": [int(n) for n in arr.shape],
        "dtype": str(arr.dtype),
        "spacing_mm": [round(s, 6) for s in volume.spacing],
        "axcodes": "".join(volume.axcodes),
        "origin_ras_mm": [round(float(v), 4) for v in volume.affine[:3, 3]],
        "affine_ras": np.round(volume.affine, 6).tolist(),
        "intensity": {
            "min": float(arr.min()),
            "max": float(arr.max()),
            "mean": float(arr.mean(dtype=np.float64)),
        },
        "modality": volume.meta.get("modality"),
        "description": volume.meta.get("description"),
        "series_uid": volume.meta.get("series_uid"),
    }

"""Geometry helpers: the one place where LPS (DICOM/ITK) and RAS (NIfTI/medseg) meet."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Flipping x and y maps LPS+ world coordinates to RAS+ and back (it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a 4x4 voxel-to-LPS affine (DICOM, ITK) into a voxel-to-RAS affine (mm)."""
    return LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


def ras_to_lps(affine_ras: np.ndarray) -> np.ndarray:
    """Convert a 4x4 voxel-to-RAS affine into a voxel-to-LPS affine (mm)."""
    return LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)


def affine_from_itk(
    origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]
) -> np.ndarray:
    """Build a voxel-to-RAS affine from ITK/SimpleITK geometry (which is LPS).

    Parameters
    ----------
    origin
        World position (LPS, mm) of voxel (0, 0, 0).
    spacing
        Voxel size (mm) along the ITK index axes (i, j, k).
    direction
        Row-major 3x3 direction cosine matrix, column ``n`` is the LPS direction of axis ``n``.

    Returns
    -------
    numpy.ndarray
        4x4 voxel-to-RAS affine.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = d * np.asarray(spacing, dtype=np.float64)[None, :]
    aff[:3, 3] = np.asarray(origin, dtype=np.float64)
    return lps_to_ras(aff)


def world_coordinates(affine: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Map voxel indices ``(N, 3)`` to world coordinates ``(N, 3)`` in mm."""
    idx = np.asarray(indices, dtype=np.float64)
    return idx @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def affines_match(a: np.ndarray, b: np.ndarray, tolerance_mm: float = 1e-3) -> bool:
    """True when two affines put every voxel corner of a unit cube within ``tolerance_mm``."""
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
    diff = world_coordinates(a, corners) - world_coordinates(b, corners)
    return bool(np.abs(diff).max() <= tolerance_mm)

"""Helpers for the I/O tests (``from io_test_helpers import ...``): affines, volumes, digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from medseg.io import Volume

UNIT = {
    "R": (1, 0, 0),
    "L": (-1, 0, 0),
    "A": (0, 1, 0),
    "P": (0, -1, 0),
    "S": (0, 0, 1),
    "I": (0, 0, -1),
}


def axcodes_affine(
    codes: str, spacing: tuple[float, float, float], origin: tuple[float, float, float]
) -> np.ndarray:
    """A voxel-to-RAS affine whose voxel axes point along ``codes`` (e.g. "PSR")."""
    aff = np.eye(4)
    for n, code in enumerate(codes):
        aff[:3, n] = np.asarray(UNIT[code], dtype=float) * spacing[n]
    aff[:3, 3] = origin
    return aff


def oblique_affine(
    angles_deg: tuple[float, float, float],
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
) -> np.ndarray:
    """A rotated (oblique) voxel-to-RAS affine with anisotropic spacing."""
    aff = np.eye(4)
    rot = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    aff[:3, :3] = rot * np.asarray(spacing)[None, :]
    aff[:3, 3] = origin
    return aff


def random_volume(
    affine: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator, lo: int, hi: int
) -> Volume:
    """Integer-valued (stored as int16) random voxels on the given grid."""
    return Volume(array=rng.integers(lo, hi, size=shape).astype(np.int16), affine=affine)


def flip_k(volume_array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same world image with the slice axis reversed (array and affine)."""
    out = affine.copy()
    n_k = volume_array.shape[2]
    out[:3, 3] = affine[:3, 3] + affine[:3, 2] * (n_k - 1)
    out[:3, 2] = -affine[:3, 2]
    return volume_array[:, :, ::-1], out


def right_handed(affine: np.ndarray) -> bool:
    """DICOM readers stack slices along row x column: True when ``k`` already points that way."""
    from medseg.io.geometry import ras_to_lps

    lps = ras_to_lps(affine)[:3, :3]
    return bool(np.cross(lps[:, 0], lps[:, 1]) @ lps[:, 2] > 0)


def sitk_reference(folder: Path) -> Volume:
    """SimpleITK ImageSeriesReader's reading of a DICOM folder, as a RAS :class:`Volume`."""
    import SimpleITK as sitk

    from medseg.io.itk import sitk_to_volume

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk_to_volume(reader.Execute(), folder, {})


def tree_digest(path: Path) -> str:
    """SHA-256 over every file (name and bytes) below ``path`` (or of the file itself)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()

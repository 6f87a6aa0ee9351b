"""NRRD and MetaImage reading: ITK's LPS geometry becomes the same RAS affine as NIfTI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import MedsegError
from medseg.io import load_volume
from medseg.io.geometry import ras_to_lps, world_coordinates


def _oblique_affine() -> np.ndarray:
    """An LPI-ish, oblique, anisotropic voxel-to-RAS affine (0.7 x 1.3 x 3.0 mm)."""
    a = np.deg2rad(17.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    flip = np.diag([-1.0, -1.0, -1.0])  # L, P, I axis directions before rotation
    aff = np.eye(4)
    aff[:3, :3] = rot @ flip @ np.diag([0.7, 1.3, 3.0])
    aff[:3, 3] = [12.5, -40.0, 88.0]
    return aff


def _itk_geometry(affine_ras: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """ITK ``(origin, spacing, direction)`` (LPS) of a voxel-to-RAS affine, to write test files."""
    lps = ras_to_lps(affine_ras)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing[None, :]
    return lps[:3, 3].tolist(), spacing.tolist(), direction.ravel().tolist()


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_itk_files_keep_world_geometry(tmp_path: Path, rng, suffix: str) -> None:
    affine = _oblique_affine()
    array = rng.integers(-1000, 1000, size=(9, 7, 5)).astype(np.int16)
    image = sitk.GetImageFromArray(np.transpose(array, (2, 1, 0)))  # ITK wants (K, J, I)
    origin, spacing, direction = _itk_geometry(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(image, str(path))
    vol = load_volume(path)
    np.testing.assert_array_equal(vol.array, array)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-5)
    np.testing.assert_allclose(vol.spacing, (0.7, 1.3, 3.0), atol=1e-6)
    # voxel (i, j, k) lands where ITK puts it, after LPS -> RAS
    idx = (4, 2, 3)
    lps = np.asarray(image.TransformIndexToPhysicalPoint(idx))
    ras = world_coordinates(vol.affine, np.asarray([idx]))[0]
    np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-5)


def test_corrupt_nrrd_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n12")
    with pytest.raises(MedsegError, match=r"bad\.nrrd"):
        load_volume(bad)


@pytest.mark.realdata
def test_real_nrrd_segmentation_matches_its_dicom_series(shared_data: Path) -> None:
    folder = shared_data / "dicom" / "ct_3slice_with_seg"
    seg = load_volume(folder / "liver_seg.nrrd", allow_empty=True)
    ct = load_volume(folder / "ct-3slice")
    assert seg.spatial_shape == ct.spatial_shape
    np.testing.assert_allclose(seg.affine, ct.affine, atol=1e-3)
    assert int(np.count_nonzero(seg.array)) == 107098  # SOURCE.txt

"""Multi-channel loading: channels on other grids land where their world positions say."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.io import write_nifti
from medseg.io.channels import field_of_view_overlap, load_channels
from medseg.io.geometry import world_coordinates


def _affine(spacing, origin, flip=(1, 1, 1)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = np.diag(np.asarray(spacing, float) * np.asarray(flip))
    aff[:3, 3] = origin
    return aff


def test_point_source_lands_at_its_world_position(tmp_path: Path) -> None:
    # channel 0: LPS-ordered (non-RAS), anisotropic; channel 1: coarse, RAS, shifted origin
    ref_aff = _affine((0.8, 0.9, 2.5), (40.0, 30.0, -20.0), flip=(-1, -1, 1))
    ref = np.zeros((50, 44, 16), np.int16)
    src_aff = _affine((4.0, 4.0, 2.5), (0.3, -10.3, -20.6))
    src = np.zeros((12, 12, 18), np.float32)
    src[5, 4, 9] = 100.0  # a point source
    write_nifti(ref, ref_aff, tmp_path / "ct.nii.gz")
    write_nifti(src, src_aff, tmp_path / "pet.nii.gz")
    vol = load_channels([tmp_path / "ct.nii.gz", tmp_path / "pet.nii.gz"])
    assert vol.array.shape == (2, 50, 44, 16)
    np.testing.assert_allclose(vol.affine, ref_aff)  # channel 0's grid
    pet = vol.array[1]
    peak = np.array(np.unravel_index(np.argmax(pet), pet.shape), float)
    # the brightest voxel of the resampled PET lies within one reference voxel of the source
    target = world_coordinates(src_aff, np.array([[5.0, 4.0, 9.0]]))[0]
    got = world_coordinates(ref_aff, peak[None])[0]
    assert np.all(np.abs(got - target) <= np.array([0.8, 0.9, 2.5]) + 1e-6)
    # trilinear: mass is spread, the total scales with the voxel-volume ratio
    ratio = (4.0 * 4.0 * 2.5) / (0.8 * 0.9 * 2.5)
    assert pet.sum() == pytest.approx(100.0 * ratio, rel=0.05)
    assert vol.meta["channels"][1]["overlap"] == pytest.approx(1.0)


def test_same_grid_channels_are_stacked_unchanged(tmp_path: Path) -> None:
    aff = _affine((1.0, 1.0, 2.0), (0, 0, 0))
    a = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    write_nifti(a, aff, tmp_path / "a.nii.gz")
    write_nifti(a * 2, aff, tmp_path / "b.nii.gz")
    vol = load_channels([tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"], n_channels=2)
    np.testing.assert_array_equal(vol.array[1], a * 2)


def test_msd_4d_nifti_is_read_as_channels(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).normal(size=(6, 5, 4, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "brats.nii.gz")
    vol = load_channels([tmp_path / "brats.nii.gz"], n_channels=3)
    assert vol.array.shape == (3, 6, 5, 4)
    np.testing.assert_allclose(vol.array[2], arr[..., 2])
    with pytest.raises(MedsegError, match="expected a 4D NIfTI with 2 channels") as err:
        load_channels([tmp_path / "brats.nii.gz"], n_channels=2)
    assert "brats.nii.gz" in str(err.value)


def test_channel_outside_the_field_of_view_names_both_files(tmp_path: Path) -> None:
    write_nifti(
        np.zeros((10, 10, 10), np.int16), _affine((1, 1, 1), (0, 0, 0)), tmp_path / "ct.nii.gz"
    )
    far = _affine((1, 1, 1), (6.0, 0, 0))  # covers 40 % of the CT
    write_nifti(np.ones((10, 10, 10), np.float32), far, tmp_path / "pet.nii.gz")
    with pytest.raises(MedsegError) as err:
        load_channels([tmp_path / "ct.nii.gz", tmp_path / "pet.nii.gz"])
    msg = str(err.value)
    assert "pet.nii.gz" in msg and "ct.nii.gz" in msg and "expected at least 90%" in msg
    # accepted when the caller lowers the bar: covered voxels keep the PET's value
    vol = load_channels([tmp_path / "ct.nii.gz", tmp_path / "pet.nii.gz"], min_overlap=0.3)
    assert np.all(vol.array[1][6:] == 1.0)


def test_channel_count_mismatch_and_unreadable_channel(tmp_path: Path) -> None:
    write_nifti(np.zeros((6, 6, 6), np.int16), np.eye(4), tmp_path / "ct.nii.gz")
    (tmp_path / "pet.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(MedsegError, match=r"expected 2 image channel\(s\), found 3"):
        load_channels([tmp_path / "ct.nii.gz"] * 3, n_channels=2)
    with pytest.raises(MedsegError) as err:
        load_channels([tmp_path / "ct.nii.gz", tmp_path / "pet.nii.gz"])
    assert "pet.nii.gz" in str(err.value)


def test_overlap_is_a_share_of_the_reference_grid() -> None:
    ref = _affine((1, 1, 1), (0, 0, 0))
    half = _affine((1, 1, 1), (5.0, 0, 0))
    share = field_of_view_overlap(ref, (20, 20, 20), half, (20, 20, 20), stride=1)
    assert share == pytest.approx(16 / 20)  # x = 4..19 covered (box widened by half a voxel)


def test_dicom_channels_of_two_frames_of_reference_warn(tmp_path: Path, caplog) -> None:
    """CT and PET are placed by patient coordinates: with different FrameOfReferenceUIDs those
    are not known to agree, which used to pass without a word."""
    import logging

    from medseg.io import Volume, load_volume, write_dicom_series

    aff = _affine((1.0, 1.0, 2.0), (-3.0, 4.0, 5.0), flip=(-1, -1, 1))  # LPS-ordered voxels
    arr = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    write_dicom_series(Volume(arr, aff), tmp_path / "ct")
    write_dicom_series(Volume(arr * 2, aff), tmp_path / "pet")
    frames = [load_volume(tmp_path / f).meta["frame_of_reference_uid"] for f in ("ct", "pet")]
    assert frames[0] != frames[1]  # each synthetic series gets its own
    with caplog.at_level(logging.WARNING, logger="medseg.io.channels"):
        vol = load_channels([tmp_path / "ct", tmp_path / "pet"])
    assert "FrameOfReferenceUID" in caplog.text and frames[0] in caplog.text
    assert frames[1] in caplog.text and str(tmp_path / "pet") in caplog.text
    np.testing.assert_array_equal(vol.array[1], vol.array[0] * 2)  # still placed, same grid


def test_overlap_sees_uncovered_end_slices_of_a_thin_stack() -> None:
    """A PET two slices lower than its 47-slice CT (as STS_019): every 4th slice used to be
    sampled, none of them uncovered, and the share came out 1.0 instead of 46/47."""
    ref = np.diag([1.0, 1.0, 3.27, 1.0])
    low = ref.copy()
    low[2, 3] = -2 * 3.27
    share = field_of_view_overlap(ref, (40, 40, 47), low, (40, 40, 47))
    assert share == pytest.approx(46 / 47)  # the top slice lies beyond the widened box
    exact = field_of_view_overlap(ref, (40, 40, 47), low, (40, 40, 47), stride=1)
    assert share == exact

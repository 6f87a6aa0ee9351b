"""Real DICOM series (../shared/data/dicom): voxels and geometry agree with SimpleITK."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from io_test_helpers import sitk_reference

from medseg.errors import MedsegError
from medseg.io import list_series, load_volume

pytestmark = pytest.mark.realdata

MR_SERIES = (
    "11-T1post-18670",
    "11_HCropVolume",
    "26401-T1prereg-52906",
    "36468-FLAIRreg-58706",
    "37830-T2reg-78532",
)


def assert_same_as_sitk(folder: Path) -> None:
    ours = load_volume(folder)
    ref = sitk_reference(folder)
    assert ours.array.shape == ref.array.shape
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-4)
    assert np.array_equal(ours.array, ref.array)
    assert ours.array.dtype == ref.array.dtype


@pytest.mark.parametrize("name", ["ct_abdomen_siemens_20slices", "ct_3slice_with_seg/ct-3slice"])
def test_ct_series_match_simpleitk(shared_data, name):
    assert_same_as_sitk(shared_data / "dicom" / name)


def test_ct_abdomen_values_are_hounsfield(shared_data):
    vol = load_volume(shared_data / "dicom/ct_abdomen_siemens_20slices")
    assert vol.array.shape == (512, 512, 20)
    np.testing.assert_allclose(vol.spacing, (0.9765625, 0.9765625, 2.0))
    assert vol.axcodes == ("L", "P", "S")
    assert vol.array.min() == -1024 and vol.meta["rescale_intercept"] == -1024.0


@pytest.mark.parametrize("name", MR_SERIES)
def test_mr_series_match_simpleitk(shared_data, name):
    assert_same_as_sitk(shared_data / "dicom/mr_brain_multiseries" / name)


def test_mr_study_lists_its_series(shared_data):
    root = shared_data / "dicom/mr_brain_multiseries"
    assert list_series(root) == []
    infos = list_series(root, recursive=True)
    assert sorted(s.folder.name for s in infos) == sorted(MR_SERIES)
    assert {s.description for s in infos} >= {"T1post", "T2_reg", "FLAIR_reg"}
    assert all(s.modality == "MR" and s.is_image for s in infos)
    with pytest.raises(MedsegError, match=r"no DICOM files found in folder.*11-T1post-18670"):
        load_volume(root)


def test_tiny_ct_gap_is_reported_and_contiguous_part_matches(shared_data, tmp_path):
    folder = shared_data / "dicom/ct_tiny_4slices"
    # its first slice lies 202.5 mm below the three others (1.25 mm apart): 161 slices missing
    with pytest.raises(MedsegError, match=r"missing slice\(s\).*161 in all.*7106 and 7136"):
        load_volume(folder)
    for name in ("7136", "7166", "7196"):
        shutil.copy(folder / name, tmp_path / name)
    assert_same_as_sitk(tmp_path)


def test_seg_only_folder_lists_segmentations(shared_data):
    folder = shared_data / "dicom/ct_3slice_with_seg"
    infos = list_series(folder)
    assert infos and all(s.modality == "SEG" and not s.is_image for s in infos)
    with pytest.raises(MedsegError, match="expected an image series"):
        load_volume(folder)

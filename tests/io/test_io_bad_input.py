"""Bad input: each case is one clear MedsegError naming the file, and the input is untouched."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from io_test_helpers import tree_digest

from medseg.errors import MedsegError
from medseg.io import load_volume, write_nifti


def _truncated(tmp_path: Path) -> Path:
    good = write_nifti(
        np.arange(4096, dtype=np.float32).reshape(16, 16, 16), np.eye(4), tmp_path / "good.nii.gz"
    )
    data = good.read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.nii"
    path.write_text("this is a text file, not an image\n" * 20)
    return path


def _nifti(tmp_path: Path, name: str, array: np.ndarray) -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(array, np.diag([0.5, 0.5, 2.0, 1.0])), str(path))
    return path


def _nan(tmp_path: Path) -> Path:
    arr = np.zeros((5, 5, 5), np.float32)
    arr[1, 1, 1] = np.nan
    arr[2, 2, 2] = np.inf
    arr[3, 3, 3] = np.nan
    return _nifti(tmp_path, "nan.nii.gz", arr)


def _zero_spacing(tmp_path: Path) -> Path:
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)
    path = tmp_path / "flat.nii.gz"
    nib.save(img, str(path))
    return path


def _empty_folder(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _junk_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "scan.dcm").write_bytes(b"\x00" * 64)
    (folder / "readme.txt").write_text("hello")
    return folder


CASES = {
    "truncated .nii.gz": (_truncated, "cannot read as NIfTI"),
    "text named .nii": (_text, "cannot read as NIfTI.*found none"),
    "4D": (
        lambda t: _nifti(t, "four.nii.gz", np.zeros((4, 4, 4, 3), np.float32)),
        r"found 4D with shape \(4, 4, 4, 3\).*extract one 3D volume",
    ),
    "4D trailing singleton": (
        lambda t: _nifti(t, "one.nii.gz", np.zeros((4, 4, 4, 1), np.int16)),
        r"found 4D with shape \(4, 4, 4, 1\).*not dropped silently",
    ),
    "2D": (lambda t: _nifti(t, "flat2d.nii.gz", np.zeros((4, 4), np.int16)), "found 2D"),
    "NaN": (_nan, "found 2 NaN and 1 inf voxel"),
    "zero spacing": (_zero_spacing, r"expected positive voxel spacing, found \(1, 0, 1\)"),
    "empty folder": (_empty_folder, "no DICOM files found in folder"),
    "folder without DICOM": (_junk_folder, "no readable DICOM files in folder"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_naming_file_and_leaves_it_untouched(tmp_path, case):
    make, pattern = CASES[case]
    path = make(tmp_path)
    before = tree_digest(path)
    with pytest.raises(MedsegError, match=pattern) as err:
        load_volume(path)
    assert err.value.path == str(path)
    assert str(err.value).startswith(str(path))
    assert tree_digest(path) == before


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(MedsegError, match="no such file"):
        load_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(MedsegError, match="unsupported file type"):
        load_volume(tmp_path / "image.png")

"""The io helpers several readers and writers share: case names and sidecars, label dtypes,
reading one DICOM file, importing highdicom."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.io.dicom_scan import read_dicom
from medseg.io.file_names import IMAGE_SUFFIXES, case_name, file_stem, image_stem, sidecar_path
from medseg.io.nifti import label_dtype
from medseg.io.optional_imports import import_highdicom


@pytest.mark.parametrize(
    ("name", "stem", "file", "case"),
    [
        ("case_001.nii.gz", "case_001", "case_001", "case_001"),
        ("case_001.NII.GZ", "case_001", "case_001", "case_001"),
        ("a.b.nii", "a.b", "a.b", "a.b"),
        ("x.nrrd", "x", "x", "x"),
        ("x.nhdr", "x", "x", "x"),
        ("x.mha", "x", "x", "x"),
        ("x.MHD", "x", "x", "x"),
        ("notes.txt", None, "notes", "notes"),
        ("CT", None, "CT", "CT"),
        (".nii.gz", "", "", "mask"),
    ],
)
def test_image_stem_file_stem_and_case_name(
    name: str, stem: str | None, file: str, case: str
) -> None:
    path = Path("some/dir") / name
    assert (image_stem(path), file_stem(path), case_name(path)) == (stem, file, case)


def test_case_name_without_a_path_and_the_suffix_order() -> None:
    assert case_name(None) == "mask"
    assert IMAGE_SUFFIXES.index(".nii.gz") < IMAGE_SUFFIXES.index(".nii")  # longest first


@pytest.mark.parametrize("name", ["CASE.nii.gz", "CASE.nii", "CASE.nrrd", "CASE.NII.GZ"])
def test_sidecar_beside_the_mask(tmp_path: Path, name: str) -> None:
    assert sidecar_path(tmp_path / name) == tmp_path / "CASE.json"


@pytest.mark.parametrize(
    ("values", "dtype"),
    [([], np.uint8), ([0, 1, 255], np.uint8), ([256], np.uint16), ([65535], np.uint16)],
)
def test_label_dtype_of_values_and_arrays(values: list[int], dtype: type) -> None:
    assert label_dtype(values) == np.dtype(dtype)
    assert label_dtype(np.asarray(values, dtype=np.int64).reshape(-1, 1, 1)) == np.dtype(dtype)


@pytest.mark.parametrize(("values", "found"), [([-1, 2], "minimum -1"), ([70000], "70000")])
def test_label_dtype_refuses_values_out_of_range(values: list[int], found: str) -> None:
    with pytest.raises(MedsegError, match=found):
        label_dtype(np.asarray(values))


def test_read_dicom_names_the_file_and_what_was_expected(tmp_path: Path) -> None:
    bad = tmp_path / "slice.dcm"
    bad.write_text("not DICOM")
    with pytest.raises(MedsegError, match=r"expected an RTSTRUCT\), found an unreadable") as err:
        read_dicom(bad, expected="an RTSTRUCT")
    assert err.value.path == str(bad)
    with pytest.raises(MedsegError, match="expected an image slice"):
        read_dicom(tmp_path / "missing.dcm", expected="an image slice")


def test_import_highdicom_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "highdicom", None)  # makes `import highdicom` fail
    with pytest.raises(MedsegError, match=r"DICOM-SEG export needs highdicom.*medseg\[dicomseg\]"):
        import_highdicom("DICOM-SEG export")

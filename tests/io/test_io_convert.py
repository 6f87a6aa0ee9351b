"""``medseg.io.convert``: series choice in study folders, dtype narrowing, NIfTI conversion."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from io_test_helpers import random_volume

from medseg.errors import MedsegError
from medseg.io import write_dicom_series, write_nifti
from medseg.io.convert import convert_to_nifti, nifti_array, resolve_source
from medseg.io.volume import Volume, describe_volume


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([True, False], np.bool_, np.uint8),
        ([0.5, 1.0], np.float16, np.float32),
        ([0, 200], np.int64, np.uint8),
        ([-5, 300], np.int64, np.int16),
        ([0, 60000], np.int64, np.uint16),
        ([-1, 70000], np.int64, np.int32),
        ([0, 2**40], np.int64, np.int64),
        ([0, 7], np.uint64, np.uint8),
        ([1.5, -2.0], np.float32, np.float32),
        ([-3, 3], np.int16, np.int16),
    ],
)
def test_nifti_array_narrows_to_viewer_dtypes(values: list, dtype: type, expected: type) -> None:
    array = np.asarray(values, dtype=dtype)
    out = nifti_array(array)
    assert out.dtype == expected
    np.testing.assert_array_equal(out, array)
    if dtype == expected:
        assert out is array  # unchanged dtypes are not copied
    assert nifti_array(np.zeros(0, np.int64)).dtype == np.int64


def test_resolve_source_file_series_folder_and_study(tmp_path: Path, rng) -> None:
    vol = random_volume(np.diag([1.0, 1.0, 2.0, 1.0]), (4, 4, 3), rng, 0, 10)
    nii = write_nifti(vol.array, vol.affine, tmp_path / "scan.nii.gz")
    assert resolve_source(nii, None) == (nii, None, [])
    study = tmp_path / "study"
    write_dicom_series(vol, study / "t1", series_description="T1")
    write_dicom_series(vol, study / "t2", series_description="T2")
    path, series, infos = resolve_source(study / "t1", None)
    assert (path, series, len(infos)) == (study / "t1", None, 1)
    path, series, infos = resolve_source(study, None, choose=False)
    assert (path, series, [s.description for s in infos]) == (study, None, ["T1", "T2"])
    path, series, _ = resolve_source(study, "2")
    assert path == study / "t2" and series == infos[1].uid
    with pytest.raises(MedsegError, match="expected one DICOM series, found 2 image series"):
        resolve_source(study, None)
    with pytest.raises(MedsegError, match="no series '9'"):
        resolve_source(study, "9")
    (tmp_path / "empty").mkdir()
    assert resolve_source(tmp_path / "empty", None) == (tmp_path / "empty", None, [])


def test_convert_to_nifti_narrows_keeps_geometry_and_refuses_overwrite(tmp_path: Path) -> None:
    affine = np.diag([-0.8, 0.8, 2.5, 1.0])
    labels = np.zeros((5, 4, 3), np.int64)
    labels[1:3, 1:3, 1] = 7
    src = tmp_path / "labels64.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine, dtype=np.int64), src)  # as some tools write
    out = tmp_path / "out" / "labels.nii.gz"
    written = convert_to_nifti(src, out)
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8 and written.array.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    np.testing.assert_allclose(img.get_sform(), affine)
    np.testing.assert_allclose(img.get_qform(), affine)
    with pytest.raises(MedsegError, match="output exists"):
        convert_to_nifti(src, out)
    convert_to_nifti(src, out, overwrite=True)
    with pytest.raises(MedsegError, match=r"ending in \.nii or \.nii\.gz"):
        convert_to_nifti(src, tmp_path / "labels.nrrd")
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_describe_volume_reports_geometry_and_intensity() -> None:
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS-like axis order, anisotropic
    affine[:3, 3] = (10.0, 20.0, -30.0)
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    d = describe_volume(Volume(arr, affine, meta={"format": "nifti", "modality": "CT"}))
    assert d["shape"] == [2, 3, 4] and d["dtype"] == "int16"
    assert d["spacing_mm"] == [0.8, 0.8, 2.5]
    assert d["axcodes"] == "LPS"
    assert d["origin_ras_mm"] == [10.0, 20.0, -30.0]
    assert d["affine_ras"] == affine.tolist()
    assert d["intensity"] == {"min": 0.0, "max": 23.0, "mean": 11.5}
    assert (d["format"], d["modality"], d["path"]) == ("nifti", "CT", None)


@pytest.mark.parametrize("link", ["same path", "symlink", "hard link"])
def test_convert_never_overwrites_its_own_input(tmp_path: Path, link: str) -> None:
    src = tmp_path / "a.nii"
    labels = np.arange(60, dtype=np.int64).reshape(5, 4, 3)
    nib.save(nib.Nifti1Image(labels, np.eye(4), dtype=np.int64), src)
    out = {"same path": src, "symlink": tmp_path / "b.nii", "hard link": tmp_path / "c.nii"}[link]
    if link == "symlink":
        out.symlink_to(src)
    elif link == "hard link":
        out.hardlink_to(src)
    before = src.read_bytes()
    with pytest.raises(MedsegError, match="expected an output file other than the input") as err:
        convert_to_nifti(src, out, overwrite=True)
    assert err.value.path == str(out) and str(src) in str(err.value)
    assert src.read_bytes() == before  # int64 would have been narrowed in place


def test_convert_refuses_outputs_it_cannot_write(tmp_path: Path, monkeypatch) -> None:
    src = write_nifti(np.zeros((4, 4, 3), np.float32), np.eye(4), tmp_path / "scan.nii.gz")
    (tmp_path / "folder.nii.gz").mkdir()
    with pytest.raises(MedsegError, match="expected an output file, found a folder"):
        convert_to_nifti(src, tmp_path / "folder.nii.gz", overwrite=True)
    (tmp_path / "notes").write_text("a file, not a folder")
    with pytest.raises(MedsegError, match=r"OUTPUT: expected a folder path, found that .*notes is"):
        convert_to_nifti(src, tmp_path / "notes" / "sub" / "out.nii.gz")
    assert not (tmp_path / "notes").is_dir()

    (tmp_path / "locked").mkdir()
    monkeypatch.setattr("os.access", lambda path, mode: Path(path) != tmp_path / "locked")
    with pytest.raises(MedsegError, match="expected a writable folder, found that the folder"):
        convert_to_nifti(src, tmp_path / "locked" / "out.nii.gz")  # mocked: root writes anywhere

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "ro" / ".out.part.nii.gz"))

    monkeypatch.setattr("medseg.io.convert.write_nifti", denied)
    with pytest.raises(MedsegError, match="expected a writable file, found Permission denied"):
        convert_to_nifti(src, tmp_path / "ro" / "out.nii.gz")


def test_convert_refuses_an_output_inside_the_dicom_input(tmp_path: Path, rng) -> None:
    vol = random_volume(np.diag([1.0, 1.0, 2.0, 1.0]), (4, 4, 3), rng, 0, 10)
    write_dicom_series(vol, tmp_path / "series")
    with pytest.raises(MedsegError, match="expected a folder separate from INPUT") as err:
        convert_to_nifti(tmp_path / "series", tmp_path / "series" / "ct.nii.gz")
    assert err.value.path == str(tmp_path / "series")
    assert len(list((tmp_path / "series").iterdir())) == 3


def test_convert_creates_missing_output_folders(tmp_path: Path) -> None:
    src = write_nifti(np.zeros((4, 4, 3), np.float32), np.eye(4), tmp_path / "scan.nii.gz")
    out = tmp_path / "new" / "deeper" / "out.nii.gz"
    convert_to_nifti(src, out)
    assert out.is_file()


def test_resolve_source_for_listing_picks_the_only_series(tmp_path: Path, rng) -> None:
    vol = random_volume(np.diag([1.0, 1.0, 2.0, 1.0]), (4, 4, 3), rng, 0, 10)
    study = tmp_path / "export"
    write_dicom_series(vol, study / "DICOM" / "S0001", series_description="T1")
    (study / "index.html").write_text("<html>viewer</html>")  # a disc's viewer, not DICOM
    path, series, infos = resolve_source(study, None, choose=False)
    assert path == study / "DICOM" / "S0001" and series == infos[0].uid
    assert len(infos) == 1

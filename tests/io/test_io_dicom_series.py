"""DICOM series written by the tests (known geometry, shuffled names) read back exactly."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from atomic_helpers import DiskFullError, folder_state, raise_after
from io_test_helpers import (
    axcodes_affine,
    flip_k,
    oblique_affine,
    random_volume,
    right_handed,
    sitk_reference,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medseg.errors import MedsegError
from medseg.io import Volume, list_series, load_volume, read_dicom_series, write_dicom_series

SHAPE = (6, 5, 7)
GEOMETRIES = {
    "axial LPS": axcodes_affine("LPS", (0.7, 0.7, 2.5), (120.0, 95.5, -300.0)),
    "sagittal PSR": axcodes_affine("PSR", (1.1, 0.9, 3.0), (-40.0, 60.0, -20.0)),
    "coronal RSA (left-handed)": axcodes_affine("RSA", (0.8, 1.2, 2.0), (-50.0, 10.0, 5.0)),
    "oblique anisotropic": oblique_affine((12.0, -25.0, 40.0), (0.7, 1.3, 3.0), (3.0, -7.5, 11.0)),
}


def _expected(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """DICOM readers stack along row x column: left-handed grids come back with k reversed."""
    if right_handed(volume.affine):
        return volume.array, volume.affine
    return flip_k(volume.array, volume.affine)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_written_series_reads_back_with_same_geometry(tmp_path, rng, name):
    vol = random_volume(GEOMETRIES[name], SHAPE, rng, -1024, 2000)
    files = write_dicom_series(vol, tmp_path, rng=rng)
    names = [f.name for f in files]
    assert names != sorted(names)  # shuffled names: sorting must ignore them
    got = load_volume(tmp_path)
    array, affine = _expected(vol)
    np.testing.assert_allclose(got.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(got.array, array)
    assert got.array.dtype == np.int16  # stored int16, no rescale -> kept
    assert got.meta["format"] == "dicom" and got.meta["modality"] == "CT"
    assert len(got.meta["files"]) == SHAPE[2]


def test_rescale_slope_and_intercept(tmp_path, rng):
    affine = GEOMETRIES["oblique anisotropic"]
    values = rng.integers(0, 1500, size=SHAPE) * 2 - 1024  # stored (v + 1024) / 2 >= 0
    vol = Volume(values.astype(np.int32), affine)
    write_dicom_series(vol, tmp_path, modality="MR", rescale_slope=2.0, rescale_intercept=-1024.0)
    raw = pydicom.dcmread(next(tmp_path.iterdir()))
    assert float(raw.RescaleSlope) == 2.0 and float(raw.RescaleIntercept) == -1024.0
    assert raw.PixelRepresentation == 0 and raw.BitsAllocated == 16
    got = read_dicom_series(tmp_path)
    assert np.issubdtype(got.array.dtype, np.integer)
    np.testing.assert_array_equal(got.array, _expected(vol)[0])
    assert got.meta["rescale_slope"] == 2.0 and got.meta["rescale_intercept"] == -1024.0
    ref = sitk_reference(tmp_path)  # another reader agrees on the written files
    np.testing.assert_allclose(ref.affine, got.affine, atol=1e-5)
    np.testing.assert_array_equal(ref.array, got.array)


def test_non_integer_rescale_gives_float32(tmp_path, rng):
    vol = Volume(rng.integers(0, 100, size=SHAPE) * 0.5, GEOMETRIES["axial LPS"])
    write_dicom_series(vol, tmp_path, rescale_slope=0.5)
    got = read_dicom_series(tmp_path)
    assert got.array.dtype == np.float32
    np.testing.assert_allclose(got.array, vol.array)


def test_missing_slice_is_named(tmp_path, rng):
    vol = random_volume(axcodes_affine("LPS", (1.0, 1.0, 2.0), (0, 0, -10.0)), SHAPE, rng, 0, 9)
    files = write_dicom_series(vol, tmp_path, file_names=[f"s{k}.dcm" for k in range(SHAPE[2])])
    files[3].unlink()  # LPS grid: slice k sits at z = -10 + 2k in LPS along the normal
    with pytest.raises(MedsegError, match=r"missing slice\(s\) at -4\.00 mm") as err:
        load_volume(tmp_path)
    assert "between files s2.dcm and s4.dcm" in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_two_series_listed_and_selectable(tmp_path, rng):
    a = random_volume(GEOMETRIES["axial LPS"], SHAPE, rng, 0, 50)
    b = random_volume(GEOMETRIES["sagittal PSR"], (4, 4, 3), rng, 0, 50)
    uid_a, uid_b = generate_uid(), generate_uid()
    write_dicom_series(a, tmp_path, series_uid=uid_a, series_description="A first", rng=rng)
    write_dicom_series(b, tmp_path, series_uid=uid_b, series_description="B second", rng=rng)
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "README").write_text("not dicom either")
    with pytest.raises(MedsegError, match="found 2 image series") as err:
        load_volume(tmp_path)
    msg = str(err.value)
    for text in (uid_a, uid_b, "A first", "B second", "7 file(s)", "3 file(s)", "--series"):
        assert text in msg
    infos = list_series(tmp_path)
    assert [(s.number, s.uid, s.n_files) for s in infos] == [(1, uid_a, 7), (2, uid_b, 3)]
    for key in (uid_b, "2"):
        got = load_volume(tmp_path, series=key)
        array, affine = _expected(b)
        np.testing.assert_array_equal(got.array, array)
        np.testing.assert_allclose(got.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(load_volume(tmp_path, series="1").array, a.array)
    with pytest.raises(MedsegError, match="no series '3'"):
        load_volume(tmp_path, series="3")


def _rewrite(path, **changes):
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_gantry_tilt_raises(tmp_path, rng):
    vol = random_volume(axcodes_affine("LPS", (0.5, 0.5, 2.0), (0, 0, 0)), SHAPE, rng, 0, 9)
    files = write_dicom_series(vol, tmp_path, rng=rng)
    tilt = np.tan(np.radians(15.0))
    for k, f in enumerate(files):  # slide each slice along the column direction: 15 degrees
        ipp = [float(v) for v in pydicom.dcmread(f).ImagePositionPatient]
        ipp[1] += 2.0 * k * tilt
        _rewrite(f, ImagePositionPatient=ipp)
    with pytest.raises(MedsegError, match="gantry tilt") as err:
        load_volume(tmp_path)
    assert "15.00 degrees" in str(err.value)


def test_mixed_orientation_and_duplicates_raise(tmp_path, rng):
    vol = random_volume(axcodes_affine("LPS", (1.0, 1.0, 1.0), (0, 0, 0)), SHAPE, rng, 0, 9)
    files = write_dicom_series(vol, tmp_path / "dup", rng=rng)
    _rewrite(files[2], ImagePositionPatient=pydicom.dcmread(files[1]).ImagePositionPatient)
    with pytest.raises(MedsegError, match="duplicate slice position"):
        load_volume(tmp_path / "dup")
    files = write_dicom_series(vol, tmp_path / "ori", rng=rng)
    _rewrite(files[4], ImageOrientationPatient=[1, 0, 0, 0, 0.8, 0.6])
    with pytest.raises(MedsegError, match=f"mixed slice orientations.*{files[4].name}"):
        load_volume(tmp_path / "ori")


def test_single_slice_is_2d_error(tmp_path, rng):
    vol = random_volume(np.eye(4), (4, 4, 1), rng, 0, 9)
    write_dicom_series(vol, tmp_path)
    with pytest.raises(MedsegError, match="single 2D slice"):
        load_volume(tmp_path)


def _fake_seg(path, series_uid):
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "SEG"
    ds.SeriesDescription = "liver seg"
    ds.Rows, ds.Columns = 5, 6
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def test_seg_object_is_listed_not_read_as_slices(tmp_path, rng):
    vol = random_volume(GEOMETRIES["axial LPS"], SHAPE, rng, 0, 9)
    write_dicom_series(vol, tmp_path, rng=rng)
    seg_uid = generate_uid()
    _fake_seg(tmp_path / "seg.dcm", seg_uid)
    (tmp_path / ".hidden.dcm").write_bytes(b"junk")
    (tmp_path / "DICOMDIR").write_bytes(b"junk")
    infos = list_series(tmp_path)
    assert sorted((s.modality, s.is_image, s.n_files) for s in infos) == [
        ("CT", True, 7),
        ("SEG", False, 1),
    ]
    np.testing.assert_array_equal(load_volume(tmp_path).array, vol.array)
    with pytest.raises(MedsegError, match="holds no image slices"):
        load_volume(tmp_path, series=seg_uid)


def test_enhanced_multiframe_matches_single_frame_series(tmp_path, rng):
    legacy = pytest.importorskip("highdicom.legacy")
    vol = random_volume(GEOMETRIES["oblique anisotropic"], SHAPE, rng, -1000, 1000)
    files = write_dicom_series(vol, tmp_path / "single", rescale_intercept=-1024.0, rng=rng)
    enhanced = legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in files],
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    (tmp_path / "multi").mkdir()
    enhanced.save_as(tmp_path / "multi" / "enhanced.dcm")
    single = load_volume(tmp_path / "single")
    multi = load_volume(tmp_path / "multi")
    np.testing.assert_allclose(multi.affine, single.affine, atol=1e-6)
    np.testing.assert_array_equal(multi.array, single.array)
    assert multi.meta["n_frames"] == SHAPE[2]


@pytest.mark.parametrize("existing", [True, False], ids=["old-series", "no-series"])
def test_failed_slice_write_keeps_old_slice(tmp_path, rng, monkeypatch, existing):
    folder = tmp_path / "series"
    folder.mkdir()
    affine = GEOMETRIES["axial LPS"]
    names = [f"s{k}.dcm" for k in range(SHAPE[2])]
    if existing:
        write_dicom_series(random_volume(affine, SHAPE, rng, 0, 100), folder, file_names=names)
    before = folder_state(tmp_path)
    monkeypatch.setattr(Dataset, "save_as", raise_after(Dataset.save_as))
    with pytest.raises(DiskFullError):
        write_dicom_series(random_volume(affine, SHAPE, rng, 0, 100), folder, file_names=names)
    assert folder_state(tmp_path) == before

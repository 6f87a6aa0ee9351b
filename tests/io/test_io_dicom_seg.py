"""DICOM-SEG -> label map on the reference grid: synthetic SEGs built with highdicom, bad input,
and the dcmqi SEGs of ../shared/data against their NRRD label maps."""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest
from io_test_helpers import axcodes_affine, oblique_affine
from pydicom.uid import generate_uid
from rtstruct_helpers import ct_series, phantom_mask, write_rtstruct
from seg_helpers import series_datasets, write_seg

from medseg.errors import MedsegError
from medseg.io import Volume, affines_match, load_volume, write_nifti
from medseg.io.dicom_seg import read_dicom_seg

pytest.importorskip("highdicom")

SHAPE = (12, 10, 6)
GEOMETRIES = {
    "axial anisotropic": axcodes_affine("LPS", (0.8, 0.9, 2.5), (40.0, -12.0, -60.0)),
    "coronal left-handed": axcodes_affine("RSA", (1.1, 0.7, 2.0), (-50.0, 10.0, 5.0)),
    "oblique": oblique_affine((15.0, -20.0, 35.0), (0.75, 1.2, 3.0), (3.0, -7.5, 11.0)),
}


def _boxes(shape):
    a = np.zeros(shape, dtype=bool)
    a[1:6, 2:7, 1:4] = True
    b = np.zeros(shape, dtype=bool)
    b[4:10, 5:9, 2:5] = True  # overlaps a
    return a, b


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_segments_land_on_their_voxels(tmp_path, name):
    reference = ct_series(GEOMETRIES[name], SHAPE, tmp_path / "ct")
    mask = phantom_mask(SHAPE)
    path = write_seg(tmp_path / "seg.dcm", reference, {"Tumour": mask})
    labels = read_dicom_seg(path, reference)
    assert labels.array.dtype == np.uint8 and labels.array.shape == reference.spatial_shape
    np.testing.assert_array_equal(labels.affine, reference.affine)
    np.testing.assert_array_equal(labels.array, mask.astype(np.uint8))
    assert labels.meta["labels"] == {"Tumour": 1}


def test_placement_is_by_position_not_by_order(tmp_path):
    """A SEG whose frames come in reverse slice order still lands slice for slice."""
    reference = ct_series(GEOMETRIES["coronal left-handed"], SHAPE, tmp_path / "ct")
    mask = np.zeros(SHAPE, dtype=bool)
    mask[2:5, 3:6, 0] = True  # only the first slice of the grid medseg reads
    sources = series_datasets(reference)[::-1]
    path = write_seg(tmp_path / "seg.dcm", reference, {"A": mask[:, :, ::-1]}, datasets=sources)
    labels = read_dicom_seg(path, reference)
    assert labels.array[:, :, 0].sum() == 9
    np.testing.assert_array_equal(labels.array > 0, mask)


def test_overlap_later_wins_and_label_map(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    a, b = _boxes(SHAPE)
    path = write_seg(tmp_path / "seg.dcm", reference, {"Liver": a, "Spine": b})
    default = read_dicom_seg(path, reference).array
    assert default[5, 5, 3] == 2 and default[1, 2, 1] == 1  # higher segment number wins
    mapped = read_dicom_seg(path, reference, {"spine": 7, "LIV*": 3}).array
    assert mapped[5, 5, 3] == 3 and mapped[9, 8, 4] == 7  # map order: Liver painted last
    only = read_dicom_seg(path, reference, {"re:Sp.ne": 300}).array
    assert only.dtype == np.uint16 and set(np.unique(only)) == {0, 300}
    with pytest.raises(MedsegError, match=r"matches no segment.*'Liver', 'Spine'"):
        read_dicom_seg(path, reference, {"Heart": 1})


def test_fractional_segments_are_thresholded_at_one_half(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    prob = np.zeros(SHAPE, dtype=np.float32)
    prob[2:6, 2:6, 2] = 0.8
    prob[6:8, 2:6, 2] = 0.3
    path = write_seg(tmp_path / "seg.dcm", reference, {"P": prob}, segmentation_type="FRACTIONAL")
    out = read_dicom_seg(path, reference).array
    np.testing.assert_array_equal(out > 0, prob >= 0.5)


def test_nifti_reference_by_geometry_with_a_warning(tmp_path, caplog):
    reference = ct_series(GEOMETRIES["oblique"], SHAPE, tmp_path / "ct")
    mask = phantom_mask(SHAPE)
    path = write_seg(tmp_path / "seg.dcm", reference, {"T": mask})
    nifti = load_volume(write_nifti(reference.array, reference.affine, tmp_path / "ct.nii.gz"))
    with caplog.at_level(logging.WARNING):
        out = read_dicom_seg(path, nifti).array
    assert "could not be checked" in caplog.text
    np.testing.assert_array_equal(out, mask.astype(np.uint8))


def test_frame_of_reference_mismatch(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    path = write_seg(tmp_path / "seg.dcm", reference, {"T": phantom_mask(SHAPE)})
    ds = pydicom.dcmread(path)
    ds.FrameOfReferenceUID = other = generate_uid()
    ds.save_as(path)
    with pytest.raises(MedsegError, match="FrameOfReferenceUID") as err:
        read_dicom_seg(path, reference)
    msg = str(err.value)
    assert other in msg and reference.meta["frame_of_reference_uid"] in msg and str(path) in msg


def test_segmentation_of_another_series_is_refused(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    other = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "other")
    path = write_seg(tmp_path / "seg.dcm", other, {"T": phantom_mask(SHAPE)})
    ds = pydicom.dcmread(path)
    ds.FrameOfReferenceUID = reference.meta["frame_of_reference_uid"]
    ds.save_as(path)
    with pytest.raises(MedsegError, match="not in the reference series") as err:
        read_dicom_seg(path, reference)
    assert other.meta["series_uid"] in str(err.value)


def test_other_grid_is_refused_not_resampled(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    path = write_seg(tmp_path / "seg.dcm", reference, {"T": phantom_mask(SHAPE)})
    coarse = np.array(reference.affine)
    coarse[:3, :3] *= 2.0
    other = Volume(np.zeros(SHAPE, np.int16), coarse)
    with pytest.raises(MedsegError, match=r"not on the reference grid.*resample first"):
        read_dicom_seg(path, other)
    shifted = np.array(reference.affine)
    shifted[:3, 3] += shifted[:3, 0] * 0.5  # half a voxel along i
    with pytest.raises(MedsegError, match="not on the reference grid"):
        read_dicom_seg(path, Volume(np.zeros(SHAPE, np.int16), shifted))


def test_segment_outside_a_smaller_reference_is_refused(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    mask = np.zeros(SHAPE, dtype=bool)
    mask[8:12, 2:4, 1] = True
    path = write_seg(tmp_path / "seg.dcm", reference, {"T": mask})
    small = Volume(np.zeros((10, 10, 6), np.int16), reference.affine)
    with pytest.raises(MedsegError, match="segment 1 'T': 4 of its 8 voxels lie outside"):
        read_dicom_seg(path, small)
    # cropped inside: everything lands, the rest of the SEG's grid is dropped
    inner = np.zeros(SHAPE, dtype=bool)
    inner[2:4, 2:4, 1] = True
    ok = write_seg(tmp_path / "ok.dcm", reference, {"T": inner})
    assert read_dicom_seg(ok, small).array.sum() == 4


def test_not_a_seg(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    rtstruct = write_rtstruct(tmp_path / "rs.dcm", reference, {"A": []})
    with pytest.raises(MedsegError, match=r"expected a DICOM-SEG.*found an RTSTRUCT"):
        read_dicom_seg(rtstruct, reference)
    ct_file = reference.meta["files"][0]
    with pytest.raises(MedsegError, match="not a DICOM segmentation") as err:
        read_dicom_seg(ct_file, reference)
    assert ct_file in str(err.value)


SEG_DATA = "dicom/ct_3slice_with_seg"


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("seg", "nrrd", "label_map"),
    [
        ("liver.dcm", "liver_seg.nrrd", None),
        (
            "partial_overlaps.dcm",
            "partial_overlaps-1.nrrd",
            {"GREEN": 1, "LIGHT_BLUE": 4, "DARK_BLUE": 5},
        ),
        ("partial_overlaps.dcm", "partial_overlaps-2.nrrd", {"ORANGE": 2}),
        ("partial_overlaps.dcm", "partial_overlaps-3.nrrd", {"PURPLE": 3}),
    ],
)
def test_real_dcmqi_segs_equal_their_nrrd(shared_data, seg, nrrd, label_map):
    folder = shared_data / SEG_DATA
    reference = load_volume(folder / "ct-3slice")
    labels = read_dicom_seg(folder / seg, reference, label_map)
    expected = load_volume(folder / nrrd, allow_empty=True)
    assert affines_match(expected.affine, labels.affine, tolerance_mm=1e-3)
    np.testing.assert_array_equal(labels.array, expected.array)


@pytest.mark.realdata
def test_real_sparse_labelmap_seg_on_a_nrrd_grid(shared_data, caplog):
    """LABELMAP SEGs with 2 frames of a 3-slice grid; the reference is the NRRD (no UIDs)."""
    folder = shared_data / SEG_DATA
    grid = load_volume(folder / "sparse_labelmap_noppv_seg.nrrd")
    with caplog.at_level(logging.WARNING):
        noppv = read_dicom_seg(folder / "sparse-labelmap-noppv.dcm", grid)
    assert "could not be checked" in caplog.text
    np.testing.assert_array_equal(noppv.array, grid.array)
    ppv5 = read_dicom_seg(folder / "sparse-labelmap-ppv5.dcm", grid)
    dcmqi = load_volume(folder / "sparse_labelmap_ppv5_seg.nrrd").array
    # dcmqi fills the frameless middle slice with PixelPaddingValue 5; medseg with background
    assert set(np.unique(dcmqi[:, :, 1])) == {5} and ppv5.array[:, :, 1].max() == 0
    np.testing.assert_array_equal(ppv5.array[:, :, [0, 2]], dcmqi[:, :, [0, 2]])


def test_a_one_frame_seg_with_another_slice_thickness_lands_on_its_slice(tmp_path):
    """A SEG with frames on one slice has no slice step of its own; highdicom takes its
    SliceThickness (here 1.0 mm on a 2.5 mm series, as overlapping reconstructions have). It
    used to be refused as 'not on the reference grid'; a frame off the slices still is."""
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    mask = np.zeros(SHAPE, dtype=bool)
    mask[2:5, 3:6, 3] = True
    ds = pydicom.dcmread(write_seg(tmp_path / "seg.dcm", reference, {"T": mask}))
    assert ds.NumberOfFrames == 1
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    del measures.SpacingBetweenSlices
    measures.SliceThickness = 1.0
    ds.save_as(tmp_path / "thin.dcm")
    out = read_dicom_seg(tmp_path / "thin.dcm", reference).array
    np.testing.assert_array_equal(out, mask.astype(np.uint8))
    frame = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    frame.ImagePositionPatient[2] = float(frame.ImagePositionPatient[2]) + 1.0  # off the slice
    ds.save_as(tmp_path / "off.dcm")
    with pytest.raises(MedsegError, match="not on the reference grid"):
        read_dicom_seg(tmp_path / "off.dcm", reference)


def test_an_empty_label_map_means_none_for_a_seg(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    a, b = _boxes(SHAPE)
    path = write_seg(tmp_path / "seg.dcm", reference, {"Liver": a, "Spine": b})
    np.testing.assert_array_equal(
        read_dicom_seg(path, reference, {}).array, read_dicom_seg(path, reference).array
    )
    assert set(np.unique(read_dicom_seg(path, reference, {}).array)) == {0, 1, 2}


@pytest.mark.parametrize("fraction", [0.3, 0.9, 0.98])
def test_a_truncated_seg_is_refused_saying_what_was_expected(tmp_path, fraction):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    whole = write_seg(tmp_path / "seg.dcm", reference, {"T": phantom_mask(SHAPE)}).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[: int(len(whole) * fraction)])
    with pytest.raises(MedsegError, match="expected a complete Segmentation object") as err:
        read_dicom_seg(cut, reference)
    assert str(cut) in str(err.value)

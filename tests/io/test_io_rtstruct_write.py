"""RTSTRUCT export (medseg.io.rtstruct_write): read-back Dice, holes, references, instances."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pydicom
import pytest
from dicom_export_helpers import (
    LABELS,
    STS_CASES,
    add_private_header_fields,
    assert_contours_reference_the_series,
    assert_only_link_attributes_copied,
    dciodvfy_errors,
    dice,
    mask_on,
    parse_rtstruct,
    source_uids,
)
from io_test_helpers import tree_digest

from medseg.errors import MedsegError
from medseg.io import Volume, load_volume, ras_to_lps
from medseg.io.rtstruct import read_rtstruct
from medseg.io.rtstruct_write import slice_contours, write_rtstruct
from medseg.io.seg_codes import AlgorithmInfo

MIN_DICE = 0.97


def test_read_back_dice_per_roi_with_two_readers(series, tmp_path):
    mask = mask_on(series)
    before = tree_digest(series)
    out = write_rtstruct(mask, series, tmp_path / "out", labels=LABELS)
    assert out == tmp_path / "out" / "case7_rtstruct.dcm"
    ref = load_volume(series)
    ours = parse_rtstruct(out, ref)
    theirs = read_rtstruct(out, ref, {"liver": 1, "liver tumour": 2}).array
    for value, name in LABELS.items():
        assert dice(ours[name], mask.array == value) >= MIN_DICE
    # contours on the pixel edges: medseg's reader fills exactly the voxels written (measured;
    # a Dice bound would let a half-voxel shift of the outline through)
    np.testing.assert_array_equal(theirs, mask.array)
    assert tree_digest(series) == before


def test_holes_are_inner_contours_and_stay_empty(series, tmp_path):
    mask = mask_on(series)
    k = mask.array.shape[2] // 2
    assert len(slice_contours(mask.array[:, :, k] == 1)) == 3  # outer, hole, island
    out = write_rtstruct(mask, series, tmp_path, labels=LABELS)
    liver = parse_rtstruct(out, load_volume(series))["liver"]
    hole = (mask.array == 0) & np.pad(
        np.ones(np.subtract(mask.array.shape, 2), bool), 1
    )  # background inside the grid, including the hole of the hollow ellipsoid
    assert not (liver & hole).any()
    assert np.array_equal(liver, mask.array == 1)


def test_contours_reference_their_slices_and_the_series(series, tmp_path):
    out = write_rtstruct(mask_on(series), series, tmp_path, labels=LABELS)
    ds = pydicom.dcmread(out)
    src = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    files = source_uids(series)
    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == src.FrameOfReferenceUID
    (study,) = frame.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == src.StudyInstanceUID == ds.StudyInstanceUID
    (ref_series,) = study.RTReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == src.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in ref_series.ContourImageSequence} == set(files)
    to_index = np.linalg.inv(ras_to_lps(load_volume(series).affine))

    def slice_of(lps: np.ndarray) -> float:
        return float((np.append(lps, 1.0) @ to_index.T)[2])

    for roi in ds.ROIContourSequence:
        for c in roi.ContourSequence:
            assert c.ContourGeometricType == "CLOSED_PLANAR"
            (img,) = c.ContourImageSequence
            assert img.ReferencedSOPClassUID == src.SOPClassUID
            pts = np.asarray(c.ContourData, float).reshape(-1, 3)
            assert len(pts) == c.NumberOfContourPoints
            position = pydicom.dcmread(files[img.ReferencedSOPInstanceUID]).ImagePositionPatient
            # every point lies in the plane of the slice the contour references
            target = slice_of(np.asarray(position, float))
            assert max(abs(slice_of(p) - target) for p in pts) < 1e-3


def test_rois_observations_and_colours(series, tmp_path):
    algo = AlgorithmInfo(model_name="run_liver", weights_hash="0123abcd")
    out = write_rtstruct(mask_on(series), series, tmp_path, labels=LABELS, algorithm=algo)
    ds = pydicom.dcmread(out)
    names = [r.ROIName for r in ds.StructureSetROISequence]
    assert names == ["liver", "liver tumour"]
    assert all(r.ROIGenerationAlgorithm == "AUTOMATIC" for r in ds.StructureSetROISequence)
    assert "run_liver" in ds.StructureSetROISequence[0].ROIGenerationDescription
    types = [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence]
    assert types == ["ORGAN", "GTV"]
    colours = [tuple(r.ROIDisplayColor) for r in ds.ROIContourSequence]
    assert len(set(colours)) == len(colours)
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"


def test_only_the_link_attributes_are_copied(series, tmp_path):
    add_private_header_fields(series)
    ds = pydicom.dcmread(write_rtstruct(mask_on(series), series, tmp_path, labels=LABELS))
    assert_only_link_attributes_copied(ds, series)


def test_one_roi_per_instance(series, tmp_path, caplog):
    mask = mask_on(series)
    inst = np.zeros(mask.array.shape, np.uint16)
    tumour = mask.array == 2
    half = np.zeros_like(tumour)
    half[:, : mask.array.shape[1] // 2] = True
    inst[tumour & half] = 1
    inst[tumour & ~half] = 2
    instances = Volume(inst, mask.affine)
    with caplog.at_level(logging.WARNING):
        out = write_rtstruct(mask, series, tmp_path, labels=LABELS, instances=instances)
    rois = parse_rtstruct(out, load_volume(series))
    assert sorted(rois) == ["liver", "liver tumour_1", "liver tumour_2"]
    assert "outside every instance" in caplog.text  # the liver has no instance ids
    assert dice(rois["liver tumour_1"], tumour & half) >= MIN_DICE
    assert dice(rois["liver tumour_2"], tumour & ~half) >= MIN_DICE
    back = read_rtstruct(out, load_volume(series), {"liver tumour_1": 1, "liver tumour_2": 2})
    np.testing.assert_array_equal(back.array, inst)  # each instance exactly its voxels


def test_an_instance_map_off_the_grid_is_refused(series, tmp_path):
    mask = mask_on(series)
    with pytest.raises(MedsegError, match="instance map is not on the grid"):
        write_rtstruct(
            mask, series, tmp_path, labels=LABELS, instances=Volume(mask.array[:-1], mask.affine)
        )


def test_bad_masks_are_refused_and_nothing_is_written(series, tmp_path):
    mask = mask_on(series)
    with pytest.raises(MedsegError, match="empty mask"):
        write_rtstruct(mask.with_array(np.zeros_like(mask.array)), series, tmp_path, labels={})
    shifted = mask.affine.copy()
    shifted[2, 3] += 1.0
    with pytest.raises(MedsegError, match="not on the grid"):
        write_rtstruct(Volume(mask.array, shifted, path=mask.path), series, tmp_path, labels={})
    with pytest.raises(MedsegError, match="negative"):
        write_rtstruct(mask.with_array(mask.array.astype(np.int8) - 1), series, tmp_path, labels={})
    assert list(tmp_path.glob("*.dcm")) == []


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_reports_no_errors(series, tmp_path):
    out = write_rtstruct(mask_on(series), series, tmp_path, labels=LABELS)
    assert dciodvfy_errors(out) == []


@pytest.mark.realdata
def test_real_ct_series_read_back(shared_data, tmp_path):
    folder = shared_data / "dicom" / "ct_abdomen_siemens_20slices"
    ref = load_volume(folder)
    mask = mask_on(folder, ref)
    out = write_rtstruct(mask, folder, tmp_path, labels=LABELS)
    rois = parse_rtstruct(out, ref)
    for value, name in LABELS.items():
        assert dice(rois[name], mask.array == value) >= MIN_DICE
    assert_contours_reference_the_series(out, folder)


@pytest.mark.realdata
@pytest.mark.parametrize("case", STS_CASES)
def test_sarcoma_cases_read_back(shared_data, tmp_path, case):
    root = shared_data / "sts_ct_pet" / case
    folder = root / "dicom" / "CT"
    mask = load_volume(root / "CT_mask.nii.gz", allow_empty=True)
    out = write_rtstruct(mask, folder, tmp_path, labels={1: "GTV"})
    ref = load_volume(folder)
    back = read_rtstruct(out, ref, {"GTV": 1}).array
    np.testing.assert_array_equal(back == 1, mask.array == 1)  # measured: exact on all four
    assert dice(parse_rtstruct(out, ref)["GTV"], mask.array == 1) >= MIN_DICE
    assert_contours_reference_the_series(out, folder)
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(out) == []

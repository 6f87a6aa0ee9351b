"""DICOM-SEG export (medseg.io.dicom_seg_write): exact round trips, references, header, errors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_export_helpers import (
    LABELS,
    STS_CASES,
    add_private_header_fields,
    assert_only_link_attributes_copied,
    dciodvfy_errors,
    mask_on,
    source_uids,
    synthetic_series,
    uids_in_k_order,
)
from io_test_helpers import tree_digest
from pydicom.sr.codedict import codes

from medseg import __version__
from medseg.errors import MedsegError
from medseg.io import Volume, load_volume
from medseg.io.dicom_seg import read_dicom_seg
from medseg.io.dicom_seg_write import write_dicom_seg
from medseg.io.seg_codes import AlgorithmInfo


def read_back(seg_path: Path, folder: Path) -> np.ndarray:
    """highdicom's reading of the SEG on the series grid ``(I, J, K)``, as label values."""
    seg = hd.seg.segread(seg_path)
    frames = seg.get_pixels_by_source_instance(
        uids_in_k_order(folder), combine_segments=True, assert_missing_frames_are_empty=True
    )  # (K, rows, columns) of segment numbers
    values = {int(s.SegmentNumber): k for s in seg.SegmentSequence for k, v in LABELS.items()
              if v == s.SegmentLabel}  # fmt: skip
    lut = np.zeros(max(values) + 1, np.uint8)
    for number, value in values.items():
        lut[number] = value
    return lut[frames.transpose(2, 1, 0)]


def test_round_trip_is_exact_and_leaves_the_series_untouched(series, tmp_path):
    mask = mask_on(series)
    before = tree_digest(series)
    out = write_dicom_seg(mask, series, tmp_path / "out", labels=LABELS)
    assert out == tmp_path / "out" / "case7_seg.dcm"
    assert np.array_equal(read_back(out, series), mask.array)
    back = read_dicom_seg(out, load_volume(series), {"liver": 1, "liver tumour": 2})
    assert np.array_equal(back.array, mask.array)
    assert tree_digest(series) == before
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["case7_seg.dcm"]  # no temp file


def test_every_reference_resolves_to_a_file_of_the_series(series, tmp_path):
    out = write_dicom_seg(mask_on(series), series, tmp_path / "s.dcm", labels=LABELS)
    seg = pydicom.dcmread(out)
    src = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    files = source_uids(series)
    listed = [
        str(i.ReferencedSOPInstanceUID)
        for s in seg.ReferencedSeriesSequence
        for i in s.ReferencedInstanceSequence
    ]
    per_frame = [
        str(img.ReferencedSOPInstanceUID)
        for fg in seg.PerFrameFunctionalGroupsSequence
        for der in fg.DerivationImageSequence
        for img in der.SourceImageSequence
    ]
    assert set(listed) == set(files)  # the whole series is referenced
    assert per_frame and set(per_frame) <= set(files)
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID
    assert seg.SegmentationType == "BINARY"


def test_segments_carry_codes_names_and_the_algorithm(series, tmp_path):
    algo = AlgorithmInfo(model_name="run_liver", weights_hash="0123abcd")
    out = write_dicom_seg(
        mask_on(series), series, tmp_path, labels=LABELS, algorithm=algo,
        series_description="liver AI",
    )  # fmt: skip
    seg = pydicom.dcmread(out)
    first, second = seg.SegmentSequence
    assert (first.SegmentLabel, second.SegmentLabel) == ("liver", "liver tumour")
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Liver.value
    assert second.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Neoplasm.value
    assert (
        second.SegmentedPropertyCategoryCodeSequence[0].CodeValue
        == codes.cid7150.MorphologicallyAbnormalStructure.value
    )
    assert first.RecommendedDisplayCIELabValue != second.RecommendedDisplayCIELabValue
    ident = first.SegmentationAlgorithmIdentificationSequence[0]
    assert (ident.AlgorithmName, ident.AlgorithmVersion) == ("medseg", __version__)
    assert ident.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # Artificial Intelligence
    assert "run_liver" in ident.AlgorithmParameters and "0123abcd" in ident.AlgorithmParameters
    assert first.SegmentAlgorithmType == "AUTOMATIC"
    assert "run_liver" in seg.ContentDescription
    assert seg.SeriesDescription == "liver AI"


def test_only_the_link_attributes_are_copied(series, tmp_path):
    add_private_header_fields(series)
    seg = pydicom.dcmread(write_dicom_seg(mask_on(series), series, tmp_path, labels=LABELS))
    assert_only_link_attributes_copied(seg, series)


def test_a_mask_in_another_axis_order_is_reordered_exactly(series, tmp_path):
    mask = mask_on(series)
    img = nib.Nifti1Image(mask.array, mask.affine).as_reoriented([[1, -1], [2, 1], [0, -1]])
    moved = Volume(np.asarray(img.dataobj), img.affine, path=mask.path)
    assert moved.array.shape != mask.array.shape
    out = write_dicom_seg(moved, series, tmp_path, labels=LABELS)
    assert np.array_equal(read_back(out, series), mask.array)


def test_empty_labels_are_omitted_with_a_warning(series, tmp_path, caplog):
    labels = {**LABELS, 3: "spleen"}
    with caplog.at_level(logging.WARNING):
        out = write_dicom_seg(mask_on(series), series, tmp_path, labels=labels)
    assert "spleen=3" in caplog.text
    assert [s.SegmentLabel for s in pydicom.dcmread(out).SegmentSequence] == list(LABELS.values())


def test_unnamed_values_are_called_label_v(series, tmp_path):
    out = write_dicom_seg(mask_on(series), series, tmp_path, labels={})
    labels = [s.SegmentLabel for s in pydicom.dcmread(out).SegmentSequence]
    assert labels == ["label_1", "label_2"]


@pytest.mark.parametrize("shift_mm", [0.5, 0.01])
def test_a_mask_off_the_series_grid_is_refused(series, tmp_path, shift_mm):
    mask = mask_on(series)
    affine = mask.affine.copy()
    affine[0, 3] += shift_mm
    with pytest.raises(MedsegError) as err:
        write_dicom_seg(Volume(mask.array, affine, path=mask.path), series, tmp_path, labels=LABELS)
    assert str(series) in str(err.value) and "case7.nii.gz" in str(err.value)
    assert "not on the grid" in str(err.value)
    assert not any(tmp_path.glob("*.dcm"))


def test_a_mask_of_another_shape_is_refused(series, tmp_path):
    mask = mask_on(series)
    with pytest.raises(MedsegError, match="different shape"):
        write_dicom_seg(Volume(mask.array[:-1], mask.affine), series, tmp_path, labels=LABELS)


def test_an_empty_mask_is_refused(series, tmp_path):
    mask = mask_on(series)
    with pytest.raises(MedsegError, match="empty mask"):
        write_dicom_seg(mask.with_array(np.zeros_like(mask.array)), series, tmp_path, labels={})
    assert not any(tmp_path.glob("*.dcm"))


def test_a_folder_with_no_series_or_two_series_is_refused(series, tmp_path, rng):
    mask = mask_on(series)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsegError, match="no DICOM files"):
        write_dicom_seg(mask, tmp_path / "empty", tmp_path / "o", labels=LABELS)
    two = tmp_path / "two"
    shutil.copytree(series, two)
    synthetic_series(two, rng)
    with pytest.raises(MedsegError, match="found 2 image series"):
        write_dicom_seg(mask, two, tmp_path / "o", labels=LABELS)


def test_existing_output_and_output_inside_the_series_are_refused(series, tmp_path):
    mask = mask_on(series)
    out = write_dicom_seg(mask, series, tmp_path / "o", labels=LABELS)
    with pytest.raises(MedsegError, match="exists"):
        write_dicom_seg(mask, series, tmp_path / "o", labels=LABELS)
    assert write_dicom_seg(mask, series, tmp_path / "o", labels=LABELS, overwrite=True) == out
    with pytest.raises(MedsegError, match="outside the source series folder"):
        write_dicom_seg(mask, series, series, labels=LABELS)


def test_non_integer_labels_are_refused(series, tmp_path):
    mask = mask_on(series)
    with pytest.raises(MedsegError, match="integer label values"):
        write_dicom_seg(mask.with_array(mask.array * 0.5), series, tmp_path, labels=LABELS)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_reports_no_errors(series, tmp_path):
    out = write_dicom_seg(mask_on(series), series, tmp_path, labels=LABELS)
    assert dciodvfy_errors(out) == []


@pytest.mark.realdata
def test_real_ct_series_round_trip(shared_data, tmp_path):
    folder = shared_data / "dicom" / "ct_abdomen_siemens_20slices"
    mask = mask_on(folder)
    out = write_dicom_seg(mask, folder, tmp_path, labels=LABELS)
    assert np.array_equal(read_back(out, folder), mask.array)
    seg = pydicom.dcmread(out)
    referenced = {
        str(i.ReferencedSOPInstanceUID)
        for s in seg.ReferencedSeriesSequence
        for i in s.ReferencedInstanceSequence
    }
    assert referenced == set(source_uids(folder))


@pytest.mark.realdata
@pytest.mark.parametrize("case", STS_CASES)
def test_sarcoma_cases_round_trip(shared_data, tmp_path, case):
    root = shared_data / "sts_ct_pet" / case
    folder = root / "dicom" / "CT"
    mask = load_volume(root / "CT_mask.nii.gz", allow_empty=True)
    out = write_dicom_seg(mask, folder, tmp_path, labels={1: "GTV"})
    seg = hd.seg.segread(out)
    frames = seg.get_pixels_by_source_instance(
        uids_in_k_order(folder), combine_segments=True, assert_missing_frames_are_empty=True
    )
    assert np.array_equal(frames.transpose(2, 1, 0), mask.array)
    back = read_dicom_seg(out, load_volume(folder), {"GTV": 1})
    assert np.array_equal(back.array, mask.array)
    per_frame = {
        str(img.ReferencedSOPInstanceUID)
        for fg in seg.PerFrameFunctionalGroupsSequence
        for der in fg.DerivationImageSequence
        for img in der.SourceImageSequence
    }
    assert per_frame <= set(source_uids(folder))
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(out) == []

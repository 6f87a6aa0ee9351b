"""RTSTRUCT -> label map on the reference grid: synthetic round trips, label maps, bad input,
and the four real sarcoma cases against MIRP's masks."""

from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest
from io_test_helpers import axcodes_affine, flip_k, oblique_affine, right_handed
from pydicom.uid import generate_uid
from rtstruct_helpers import (
    ct_series,
    mask_contours,
    phantom_mask,
    rtstruct_dataset,
    save_dataset,
    write_rtstruct,
)

from medseg.errors import MedsegError
from medseg.io import affines_match, load_volume, write_nifti
from medseg.io.geometry import ras_to_lps, world_coordinates
from medseg.io.rtstruct import list_rois, read_rtstruct

SHAPE = (22, 18, 9)
GEOMETRIES = {
    "axial anisotropic": axcodes_affine("LPS", (0.8, 0.9, 2.5), (40.0, -12.0, -60.0)),
    "coronal left-handed (k flipped on reading)": axcodes_affine(
        "RSA", (1.1, 0.7, 2.0), (-50.0, 10.0, 5.0)
    ),
    "oblique": oblique_affine((15.0, -20.0, 35.0), (0.75, 1.2, 3.0), (3.0, -7.5, 11.0)),
}


def _case(tmp_path, affine):
    """A CT series on ``affine`` and the phantom as it lies on the grid medseg reads."""
    reference = ct_series(affine, SHAPE, tmp_path / "ct")
    mask = phantom_mask(SHAPE)
    if not right_handed(affine):  # the reader stacks along row x column: k comes back reversed
        mask, flipped = flip_k(mask, affine)
        assert affines_match(flipped, reference.affine)
    return reference, mask, mask_contours(phantom_mask(SHAPE), affine)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_round_trip_on_the_reference_grid(tmp_path, name):
    reference, mask, contours = _case(tmp_path, GEOMETRIES[name])
    path = write_rtstruct(tmp_path / "rs.dcm", reference, {"Tumour": contours})
    labels = read_rtstruct(path, reference)
    assert labels.array.shape == reference.spatial_shape and labels.array.dtype == np.uint8
    np.testing.assert_array_equal(labels.affine, reference.affine)
    assert set(np.unique(labels.array)) == {0, 1}
    # the contours run on the pixel edges: filling voxel centres gives the mask back exactly
    np.testing.assert_array_equal(labels.array == 1, mask)
    assert labels.meta["labels"] == {"Tumour": 1}


def test_holes_follow_the_even_odd_rule(tmp_path):
    reference, mask, contours = _case(tmp_path, GEOMETRIES["axial anisotropic"])
    k = SHAPE[2] // 2
    assert sum(c[0] == k for c in contours) == 2  # outline and hole on the middle slice
    labels = read_rtstruct(
        write_rtstruct(tmp_path / "rs.dcm", reference, {"T": contours}), reference
    )
    np.testing.assert_array_equal(labels.array[:, :, k] == 1, mask[:, :, k])
    assert labels.array[10, 10, k] == 0 and labels.array[10, 10, 2] == 1  # a hole, then none


def test_nifti_reference_is_used_by_geometry_with_a_warning(tmp_path, caplog):
    reference, mask, contours = _case(tmp_path, GEOMETRIES["oblique"])
    path = write_rtstruct(tmp_path / "rs.dcm", reference, {"T": contours})
    nifti = load_volume(write_nifti(reference.array, reference.affine, tmp_path / "ct.nii.gz"))
    with caplog.at_level(logging.WARNING):
        labels = read_rtstruct(path, nifti)
    assert "could not be checked" in caplog.text
    np.testing.assert_array_equal(labels.array == 1, mask)


def _square(reference, k, lo, hi):
    """A square contour (voxel corners lo..hi in i and j) on slice k, in LPS mm."""
    ij = np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]], dtype=float)
    ijk = np.column_stack([ij, np.full(4, float(k))])
    return (k, world_coordinates(ras_to_lps(reference.affine), ijk), "CLOSED_PLANAR")


def test_label_map_globs_regex_shared_values_and_overlap(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    rois = {
        "GTV_primary": [_square(reference, 2, 1.5, 8.5)],
        "gtv_node": [_square(reference, 5, 1.5, 4.5)],
        "CTV": [_square(reference, 2, 5.5, 12.5)],
        "Body": [_square(reference, 2, -0.5, 15.5)],
    }
    path = write_rtstruct(tmp_path / "rs.dcm", reference, rois)
    out = read_rtstruct(path, reference, {"Body": 9, "GTV*": 1, "re:C.V": 300}).array
    assert out.dtype == np.uint16  # a value above 255
    assert out[3, 3, 2] == 1 and out[3, 3, 5] == 1  # both GTVs (case-insensitive glob)
    assert out[7, 7, 2] == 300 and out[10, 10, 2] == 300  # CTV painted last over the GTV
    assert out[14, 14, 2] == 9 and out[0, 16, 2] == 0
    one = read_rtstruct(path, reference, {"GTV_primary": 2}).array
    assert set(np.unique(one)) == {0, 2} and one.dtype == np.uint8


def test_list_rois(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    point = (3, world_coordinates(ras_to_lps(reference.affine), np.array([[4.0, 4, 3]])), "POINT")
    path = write_rtstruct(
        tmp_path / "rs.dcm", reference, {"A": [_square(reference, 2, 1.5, 5.5), point], "B": []}
    )
    rois = list_rois(path)
    assert [(r.number, r.name, r.n_contours) for r in rois] == [(1, "A", 2), (2, "B", 0)]
    assert rois[0].geometric_types == ("CLOSED_PLANAR", "POINT")


def test_point_contours_are_ignored_with_a_warning(tmp_path, caplog):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    point = (3, world_coordinates(ras_to_lps(reference.affine), np.array([[4.0, 4, 3]])), "POINT")
    path = write_rtstruct(
        tmp_path / "rs.dcm", reference, {"A": [_square(reference, 2, 1.5, 5.5), point]}
    )
    with caplog.at_level(logging.WARNING):
        out = read_rtstruct(path, reference).array
    assert "POINT" in caplog.text and out.sum() == 16 and out[:, :, 3].sum() == 0


def test_self_intersecting_contour_warns_and_fills_even_odd(tmp_path, caplog):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    bow = np.array([[1.5, 1.5, 2], [9.5, 9.5, 2], [9.5, 1.5, 2], [1.5, 9.5, 2]])
    contour = (2, world_coordinates(ras_to_lps(reference.affine), bow), "CLOSED_PLANAR")
    path = write_rtstruct(tmp_path / "rs.dcm", reference, {"Bow": [contour]})
    with caplog.at_level(logging.WARNING):
        out = read_rtstruct(path, reference).array
    assert "Self-intersection" in caplog.text and "'Bow'" in caplog.text
    assert out[5, 3, 2] == 0 and out[3, 5, 2] == 1  # two triangles, tips at the crossing


def _bad(tmp_path, **change):
    """Write an RTSTRUCT on a fresh CT with one change; return (path, reference)."""
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    square = _square(reference, 2, 1.5, 5.5)
    rois = change.pop("rois", {"GTV": [square]})
    ds = rtstruct_dataset(reference, rois, **change)
    return save_dataset(ds, tmp_path / "rs.dcm"), reference


def test_frame_of_reference_mismatch_names_both_uids_and_paths(tmp_path):
    other = generate_uid()
    path, reference = _bad(tmp_path, frame_of_reference_uid=other)
    with pytest.raises(MedsegError) as err:
        read_rtstruct(path, reference)
    msg = str(err.value)
    assert str(path) in msg and other in msg and reference.meta["frame_of_reference_uid"] in msg
    assert str(reference.path) in msg and "'GTV'" in msg


def test_images_of_another_series_are_refused_naming_it(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    other = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "other")
    frame_uid = reference.meta["frame_of_reference_uid"]
    ds = rtstruct_dataset(
        other, {"GTV": [_square(other, 2, 1.5, 5.5)]}, frame_of_reference_uid=frame_uid
    )
    path = save_dataset(ds, tmp_path / "rs.dcm")
    with pytest.raises(MedsegError, match="not in the reference series") as err:
        read_rtstruct(path, reference)
    assert other.meta["series_uid"] in str(err.value) and str(path) in str(err.value)


def test_missing_images_of_the_same_series_only_warn(tmp_path, caplog):
    """A cropped copy of the series (as in the real sarcoma cases): warned, placed by position."""
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    ds = rtstruct_dataset(reference, {"GTV": [_square(reference, 2, 1.5, 5.5)]})
    ds.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[
        0
    ].ReferencedSOPInstanceUID = generate_uid()
    path = save_dataset(ds, tmp_path / "rs.dcm")
    with caplog.at_level(logging.WARNING):
        out = read_rtstruct(path, reference).array
    assert "cropped or re-exported" in caplog.text and out.sum() == 16


@pytest.mark.parametrize(
    ("rois", "expected"),
    [
        ({"GTV": []}, "ROI 'GTV': expected closed contours to fill, found no contours"),
        ({"A": "square", "B": "square"}, "expected one ROI or a label map.*'A', 'B'"),
    ],
)
def test_empty_roi_and_several_rois_without_map(tmp_path, rois, expected):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    square = _square(reference, 2, 1.5, 5.5)
    rois = {k: [square] if v == "square" else v for k, v in rois.items()}
    path = write_rtstruct(tmp_path / "rs.dcm", reference, rois)
    with pytest.raises(MedsegError, match=expected) as err:
        read_rtstruct(path, reference)
    assert str(path) in str(err.value)


def test_map_key_matching_nothing_lists_the_rois(tmp_path):
    path, reference = _bad(tmp_path)
    with pytest.raises(MedsegError, match="key 'PTV' matches no ROI; the file has ROIs: 'GTV'"):
        read_rtstruct(path, reference, {"PTV": 1})
    with pytest.raises(MedsegError, match="label value from 1"):
        read_rtstruct(path, reference, {"GTV": 0})


def _contour_at(reference, ijk, kind="CLOSED_PLANAR"):
    ijk = np.asarray(ijk, dtype=float)
    return (round(ijk[0, 2]), world_coordinates(ras_to_lps(reference.affine), ijk), kind)


@pytest.mark.parametrize(
    ("ijk", "kind", "expected"),
    [
        ([[1, 1, 2], [5, 1, 2], [5, 5, 2]], "OPEN_PLANAR", "found OPEN_PLANAR"),
        ([[1, 1, 2.4], [5, 1, 2.4], [5, 5, 2.4]], "CLOSED_PLANAR", "not on a slice.*1.000 mm off"),
        ([[1, 1, 2], [5, 1, 2], [5, 5, 3]], "CLOSED_PLANAR", "span slices 2..3"),
        (
            [[1, 1, 2], [30, 1, 2], [30, 5, 2]],
            "CLOSED_PLANAR",
            r"\(slice 2\): 2 of its 3 points.*6.80 mm",
        ),
        (
            [[1, 1, 11], [5, 1, 11], [5, 5, 11]],
            "CLOSED_PLANAR",
            "7.50 mm beyond the reference's slices",
        ),
    ],
)
def test_bad_contours_name_file_roi_and_where(tmp_path, ijk, kind, expected):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    path = write_rtstruct(
        tmp_path / "rs.dcm", reference, {"GTV": [_contour_at(reference, ijk, kind)]}
    )
    with pytest.raises(MedsegError, match=expected) as err:
        read_rtstruct(path, reference)
    assert str(path) in str(err.value) and "ROI 'GTV', contour 1" in str(err.value)


def test_not_an_rtstruct(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    ct_file = reference.meta["files"][0]
    with pytest.raises(MedsegError, match=r"expected an RTSTRUCT.*found modality 'CT'") as err:
        read_rtstruct(ct_file, reference)
    assert ct_file in str(err.value)
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    with pytest.raises(MedsegError, match="unreadable"):
        list_rois(text)
    with pytest.raises(MedsegError, match="no such file"):
        read_rtstruct(tmp_path / "missing.dcm", reference)


def test_input_file_is_not_modified(tmp_path):
    path, reference = _bad(tmp_path)
    before = path.read_bytes()
    read_rtstruct(path, reference)
    assert path.read_bytes() == before
    assert pydicom.dcmread(path).Modality == "RTSTRUCT"


REAL_CASES = ("STS_019", "STS_033", "STS_036", "STS_038")


@pytest.mark.realdata
@pytest.mark.parametrize("case", REAL_CASES)
def test_real_sarcoma_rtstruct_matches_mirp(shared_data, case):
    """Measured: Dice 1.0 on all four cases (0 voxels differ from MIRP's CT_mask.nii.gz).

    rt-utils 1.2.7 (OpenCV ``fillPoly`` on rounded vertices), run on the same contours after
    re-pointing their image references to the cropped series: Dice 0.946-0.982 (its fill, on
    the axes it fills), 0.81-0.87 as returned on the non-square cases (transposed masks).
    """
    folder = shared_data / "sts_ct_pet" / case
    reference = load_volume(folder / "dicom" / "CT")
    labels = read_rtstruct(folder / "dicom" / "RTSTRUCT_GTV.dcm", reference, {"GTV_Mass_CT": 1})
    mirp = load_volume(folder / "CT_mask.nii.gz", allow_empty=True)
    assert mirp.array.shape == labels.array.shape
    assert affines_match(mirp.affine, labels.affine, tolerance_mm=1e-3)
    np.testing.assert_array_equal(labels.array == 1, mirp.array > 0)  # as the docstring says


def test_reference_files_give_the_uids_of_a_nifti_reference(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    ds = rtstruct_dataset(
        reference, {"GTV": [_square(reference, 2, 1.5, 5.5)]}, frame_of_reference_uid="1.2.3"
    )
    path = save_dataset(ds, tmp_path / "rs.dcm")
    nifti = load_volume(write_nifti(reference.array, reference.affine, tmp_path / "ct.nii.gz"))
    assert read_rtstruct(path, nifti).array.sum() == 16  # geometry alone: no UID to compare
    with pytest.raises(MedsegError, match=r"FrameOfReferenceUID 1\.2\.3 differs"):
        read_rtstruct(path, nifti, reference_files=reference.meta["files"])


def test_contour_data_not_in_triplets(tmp_path):
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    ds = rtstruct_dataset(reference, {"GTV": [_square(reference, 2, 1.5, 5.5)]})
    item = ds.ROIContourSequence[0].ContourSequence[0]
    item.ContourData = list(item.ContourData)[:-1]
    path = save_dataset(ds, tmp_path / "rs.dcm")
    with pytest.raises(MedsegError, match="x, y, z triplets, found 11 values"):
        read_rtstruct(path, reference)


@pytest.mark.parametrize("value", ["NaN", "inf"])
def test_non_finite_contour_data_is_refused(tmp_path, value):
    """A NaN vertex used to be dropped (with its neighbour) as a 'repeated point' and the
    polygon filled without it (28 of 49 voxels); inf raised a bare ValueError."""
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    ds = rtstruct_dataset(reference, {"GTV": [_square(reference, 2, 1.5, 8.5)]})
    item = ds.ROIContourSequence[0].ContourSequence[0]
    data = list(item.ContourData)
    data[3] = value
    item.ContourData = data
    path = save_dataset(ds, tmp_path / "rs.dcm")
    with pytest.raises(MedsegError, match=r"finite ContourData.*found 1 NaN or inf") as err:
        read_rtstruct(path, reference)
    assert str(path) in str(err.value) and "ROI 'GTV', contour 1" in str(err.value)


@pytest.mark.parametrize("keyword", ["ROINumber", "ReferencedROINumber"])
def test_roi_items_without_their_number_are_refused(tmp_path, keyword):
    """Used to be a bare AttributeError (ROINumber) or 'an empty ROI' (ReferencedROINumber)."""
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    ds = rtstruct_dataset(reference, {"GTV": [_square(reference, 2, 1.5, 5.5)]})
    seq = ds.StructureSetROISequence if keyword == "ROINumber" else ds.ROIContourSequence
    delattr(seq[0], keyword)
    path = save_dataset(ds, tmp_path / "rs.dcm")
    with pytest.raises(MedsegError, match=f"item 1: expected an integer {keyword}, found none"):
        read_rtstruct(path, reference)
    with pytest.raises(MedsegError, match="truncated or corrupt") as err:
        list_rois(path)
    assert str(path) in str(err.value)


def test_a_truncated_rtstruct_is_named_as_such(tmp_path):
    """pydicom reads a file cut inside its ROIContourSequence without an error (here 10 of 11
    contours, the item's ReferencedROINumber lost); it used to read as 'an empty ROI'."""
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    contours = mask_contours(phantom_mask(SHAPE), reference.affine)
    whole = write_rtstruct(tmp_path / "rs.dcm", reference, {"GTV": contours}).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[: int(len(whole) * 0.9)])
    with pytest.raises(MedsegError, match=r"ReferencedROINumber, found none.*truncated") as err:
        read_rtstruct(cut, reference)
    assert str(cut) in str(err.value)


def test_contours_of_one_roi_in_two_items_are_all_filled(tmp_path):
    """Two ROIContourSequence items for one ROI: the second used to replace the first."""
    reference = ct_series(GEOMETRIES["axial anisotropic"], SHAPE, tmp_path / "ct")
    ds = rtstruct_dataset(
        reference, {"GTV": [_square(reference, 2, 1.5, 5.5), _square(reference, 5, 1.5, 4.5)]}
    )
    first = ds.ROIContourSequence[0]
    second = pydicom.Dataset()
    second.ReferencedROINumber = first.ReferencedROINumber
    second.ContourSequence = pydicom.Sequence([first.ContourSequence.pop()])
    ds.ROIContourSequence.append(second)
    path = save_dataset(ds, tmp_path / "rs.dcm")
    out = read_rtstruct(path, reference).array
    assert out[:, :, 2].sum() == 16 and out[:, :, 5].sum() == 9 and out.sum() == 25
    assert list_rois(path)[0].n_contours == 2


def test_an_empty_label_map_means_none(tmp_path):
    """``label_map={}`` used to paint nothing: an all-background label map, no error."""
    path, reference = _bad(tmp_path)
    assert read_rtstruct(path, reference, {}).array.sum() == 16

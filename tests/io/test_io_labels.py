"""``load_label`` dispatch, ``is_dicom_label_object``, the series UIDs in DICOM meta, and
``medseg convert`` of an RTSTRUCT / DICOM-SEG onto ``--reference``."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from atomic_helpers import folder_state
from io_test_helpers import axcodes_affine
from rtstruct_helpers import ct_series, mask_contours, phantom_mask, write_rtstruct

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.io import load_volume, write_nifti
from medseg.io.labels import is_dicom_label_object, load_label

SHAPE = (16, 14, 5)
AFFINE = axcodes_affine("LPS", (0.8, 0.9, 2.5), (40.0, -12.0, -60.0))


@pytest.fixture
def case(tmp_path):
    """A CT series, an RTSTRUCT of the phantom on it, and the phantom."""
    reference = ct_series(AFFINE, SHAPE, tmp_path / "ct")
    mask = phantom_mask(SHAPE, hole=False)
    rs = write_rtstruct(tmp_path / "rs.dcm", reference, {"GTV": mask_contours(mask, AFFINE)})
    return reference, rs, mask


def test_dicom_meta_has_uids_in_slice_order(case):
    reference, _, _ = case
    meta = reference.meta
    assert meta["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2"
    assert len(meta["sop_instance_uids"]) == SHAPE[2] == len(set(meta["sop_instance_uids"]))
    lps_first = pydicom.dcmread(meta["files"][0]).FrameOfReferenceUID
    assert meta["frame_of_reference_uid"] == lps_first
    for k, uid in enumerate(meta["sop_instance_uids"]):
        ds = next(d for d in map(pydicom.dcmread, meta["files"]) if d.SOPInstanceUID == uid)
        ras = reference.affine @ np.array([0.0, 0.0, k, 1.0])
        np.testing.assert_allclose(ds.ImagePositionPatient, ras[:3] * [-1, -1, 1], atol=1e-4)


def test_is_dicom_label_object(case, tmp_path):
    reference, rs, _ = case
    assert is_dicom_label_object(rs) == "RTSTRUCT"
    assert is_dicom_label_object(reference.meta["files"][0]) is None
    assert is_dicom_label_object(tmp_path / "ct") is None
    assert is_dicom_label_object(tmp_path / "missing.dcm") is None
    nifti = write_nifti(np.zeros(SHAPE, np.uint8), AFFINE, tmp_path / "m.nii.gz")
    assert is_dicom_label_object(nifti) is None


def test_is_dicom_label_object_seg(case, tmp_path):
    from seg_helpers import write_seg

    pytest.importorskip("highdicom")
    reference, _, mask = case
    seg = write_seg(tmp_path / "seg.dcm", reference, {"GTV": mask})
    assert is_dicom_label_object(seg) == "SEG"
    np.testing.assert_array_equal(load_label(seg, reference).array, mask.astype(np.uint8))


def test_load_label_dispatches(case, tmp_path):
    reference, rs, mask = case
    labels = load_label(rs, reference, {"GTV": 2})
    assert labels.meta["format"] == "rtstruct" and set(np.unique(labels.array)) == {0, 2}
    assert (labels.array == 2).sum() == mask.sum()
    nifti = write_nifti(mask.astype(np.uint8), AFFINE, tmp_path / "m.nii.gz")
    plain = load_label(nifti, reference)
    np.testing.assert_array_equal(plain.array, mask.astype(np.uint8))
    with pytest.raises(MedsegError, match="applies to RTSTRUCT and DICOM-SEG") as err:
        load_label(nifti, reference, {"GTV": 1})
    assert str(nifti) in str(err.value)


def test_convert_rtstruct_writes_the_label_map_on_the_reference_grid(case, tmp_path, capsys):
    reference, rs, mask = case
    out = tmp_path / "out" / "gtv.nii.gz"
    args = ["convert", str(rs), str(out), "--reference", str(tmp_path / "ct")]
    assert main([*args, "--label-map", "gtv*=3"]) == 0
    assert "labels GTV=3" in capsys.readouterr().out
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.get_sform(), reference.affine, atol=1e-5)
    np.testing.assert_allclose(img.get_qform(), reference.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), mask.astype(np.uint8) * 3)
    assert main(args) == 1  # exists, no --force
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], "expected --reference"),
        (["-r", "ct", "-l", "GTV"], "expected NAME=VALUE"),
        (["-r", "ct", "-l", "PTV=1"], "key 'PTV' matches no ROI; the file has ROIs: 'GTV'"),
        (["-r", "ct", "-l", "GTV=0"], "label value from 1"),
    ],
)
def test_convert_label_errors_are_one_line_and_write_nothing(
    case, tmp_path, capsys, extra, expected
):
    _, rs, _ = case
    extra = [str(tmp_path / e) if e == "ct" else e for e in extra]
    before = folder_state(tmp_path)
    assert main(["convert", str(rs), str(tmp_path / "out" / "o.nii.gz"), *extra]) == 1
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert folder_state(tmp_path) == before


def test_convert_refuses_reference_for_a_scan_and_output_in_the_reference(case, tmp_path, capsys):
    _, rs, _ = case
    ct = str(tmp_path / "ct")
    assert main(["convert", ct, str(tmp_path / "x.nii.gz"), "--reference", ct]) == 1
    assert "apply to an RTSTRUCT or DICOM-SEG input" in capsys.readouterr().err
    assert main(["convert", str(rs), str(tmp_path / "ct" / "x.nii.gz"), "--reference", ct]) == 1
    assert "--reference" in capsys.readouterr().err
    assert not (tmp_path / "ct" / "x.nii.gz").exists()


def test_convert_with_a_nifti_reference(case, tmp_path):
    reference, rs, mask = case
    ref = write_nifti(reference.array, reference.affine, tmp_path / "ct.nii.gz")
    out = tmp_path / "out" / "gtv.nii"
    assert main(["convert", str(rs), str(out), "-r", str(ref)]) == 0
    np.testing.assert_array_equal(load_volume(out).array, mask.astype(np.uint8))


@pytest.mark.realdata
def test_convert_real_rtstruct(shared_data, tmp_path):
    folder = shared_data / "sts_ct_pet" / "STS_019"
    out = tmp_path / "out" / "gtv.nii.gz"
    rs, ct = folder / "dicom" / "RTSTRUCT_GTV.dcm", folder / "dicom" / "CT"
    assert main(["convert", str(rs), str(out), "--reference", str(ct)]) == 0
    mirp = load_volume(folder / "CT_mask.nii.gz", allow_empty=True)
    ours = load_volume(out, allow_empty=True)
    np.testing.assert_allclose(ours.affine, mirp.affine, atol=1e-3)
    np.testing.assert_array_equal(ours.array > 0, mirp.array > 0)

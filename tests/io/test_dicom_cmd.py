"""``medseg export-dicom``: flags, label names from --labels / the sidecar, clean refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_export_helpers import phantom, synthetic_series
from io_test_helpers import tree_digest

from medseg.cli import main
from medseg.io import load_volume, write_nifti
from medseg.io.dicom_export import parse_labels


@pytest.fixture
def case(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    """A synthetic series and a prediction ``pred/case7.nii.gz`` on its grid."""
    series = synthetic_series(tmp_path / "series", rng)
    ref = load_volume(series)
    mask = write_nifti(phantom(ref.spatial_shape), ref.affine, tmp_path / "pred" / "case7.nii.gz")
    return series, mask


def export(mask: Path, *flags: str) -> int:
    return main(["export-dicom", str(mask), *flags])


def test_dicom_seg_with_labels_flags(case, tmp_path):
    series, mask = case
    before = tree_digest(series), tree_digest(mask)
    rc = export(
        mask, "--reference", str(series), "--format", "dicom-seg", "--output",
        str(tmp_path / "out"), "--labels", "liver=1", "--labels", "tumour=2",
    )  # fmt: skip
    assert rc == 0
    seg = pydicom.dcmread(tmp_path / "out" / "case7_seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "tumour"]
    assert (tree_digest(series), tree_digest(mask)) == before


def test_names_model_and_series_come_from_the_sidecar(case, tmp_path):
    series, mask = case
    sidecar = {
        "case": "case7",
        "input": str(series),
        "labels": {"0": "background", "1": "spleen", "2": "lesion"},
        "model": {"kind": "run", "path": "/runs/abdo_v2", "weights_sha256": {"0": "feedbeef"}},
    }
    (mask.parent / "case7.json").write_text(json.dumps(sidecar))
    out = tmp_path / "rt.dcm"
    assert export(mask, "--format", "rtstruct", "-o", str(out)) == 0
    ds = pydicom.dcmread(out)
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["spleen", "lesion"]
    description = ds.StructureSetROISequence[0].ROIGenerationDescription
    assert "abdo_v2" in description and "feedbeef" in description


def test_values_without_names_are_label_v(case, tmp_path):
    series, mask = case
    out = tmp_path / "s.dcm"
    assert export(mask, "-r", str(series), "--format", "dicom-seg", "-o", str(out)) == 0
    assert [s.SegmentLabel for s in pydicom.dcmread(out).SegmentSequence] == [
        "label_1",
        "label_2",
    ]


def test_rtstruct_with_an_instance_map(case, tmp_path):
    series, mask = case
    labels = load_volume(mask, allow_empty=True)
    inst = (labels.array == 2).astype(np.uint8) * 4
    inst_path = write_nifti(inst, labels.affine, tmp_path / "inst.nii.gz")
    out = tmp_path / "rt.dcm"
    rc = export(
        mask, "-r", str(series), "--format", "rtstruct", "-o", str(out), "--instances",
        str(inst_path), "--labels", "organ=1,lesion=2",
    )  # fmt: skip
    assert rc == 0
    names = [r.ROIName for r in pydicom.dcmread(out).StructureSetROISequence]
    assert names == ["organ", "lesion_4"]


def test_a_nifti_mask_without_reference_is_refused(case, tmp_path, capsys):
    _, mask = case
    assert export(mask, "--format", "dicom-seg", "-o", str(tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert "--reference" in err and "case7.nii.gz" in err
    assert not (tmp_path / "o").exists()


def test_a_sidecar_without_input_does_not_mean_the_working_directory(
    case, tmp_path, capsys, monkeypatch
):
    """``Path("")`` is ``"."``: a sidecar without ``"input"`` used to export onto whatever series
    the working directory held (here the right one, by luck), without --reference."""
    series, mask = case
    (mask.parent / "case7.json").write_text(json.dumps({"labels": {"1": "liver"}}))
    monkeypatch.chdir(series)
    out = tmp_path / "o"
    assert export(mask, "--format", "dicom-seg", "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert "expected --reference" in err and "case7.nii.gz" in err
    assert not out.exists()


def test_an_existing_file_as_output_folder_is_refused(case, tmp_path, capsys):
    """An output that is an existing file not named .dcm used to end in a FileExistsError."""
    series, mask = case
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    assert export(mask, "-r", str(series), "--format", "rtstruct", "-o", str(taken)) == 1
    err = capsys.readouterr().err
    assert "expected a .dcm file name or a folder" in err and str(taken) in err
    assert "Traceback" not in err and taken.read_text() == "not a folder"


def test_an_existing_output_needs_force(case, tmp_path, capsys):
    series, mask = case
    flags = ["-r", str(series), "--format", "rtstruct", "-o", str(tmp_path / "o")]
    assert export(mask, *flags) == 0
    assert export(mask, *flags) == 1
    assert "--force" in capsys.readouterr().err
    assert export(mask, *flags, "--force") == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--format", "dicom-seg", "--instances", "x.nii.gz"], "--format rtstruct"),
        (["--format", "rtstruct", "--labels", "liver"], "name=value"),
        (["--format", "rtstruct", "--labels", "a=1,b=1"], "given twice"),
    ],
)
def test_bad_flags_are_refused(case, tmp_path, capsys, flags, message):
    series, mask = case
    assert export(mask, "-r", str(series), "-o", str(tmp_path / "o"), *flags) == 1
    assert message in capsys.readouterr().err


def test_a_folder_as_mask_is_refused(case, tmp_path, capsys):
    series, _ = case
    rc = export(series, "-r", str(series), "--format", "rtstruct", "-o", str(tmp_path / "o"))
    assert rc == 1
    assert "found a folder" in capsys.readouterr().err


def test_an_unknown_format_is_a_usage_error(case, tmp_path):
    series, mask = case
    assert export(mask, "-r", str(series), "--format", "png", "-o", str(tmp_path / "o")) == 2


def test_parse_labels():
    assert parse_labels(["liver=1", "kidney left=2,tumour=3"]) == {
        1: "liver",
        2: "kidney left",
        3: "tumour",
    }

"""``medseg evaluate`` end to end on a folder of NIfTI pairs, plus grid alignment."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.io import Volume, write_nifti
from medseg.metrics.evaluate import resample_to_reference

AFFINE = np.diag([0.8, 1.0, 2.0, 1.0])
AFFINE[:3, 3] = (-10.0, 5.0, 20.0)


def labels_map(rng: np.random.Generator, shape=(24, 20, 12)) -> np.ndarray:
    a = np.zeros(shape, np.uint8)
    a[4:14, 5:15, 3:8] = 1
    a[15:21, 4:10, 5:10] = 2
    jitter = rng.random(shape) < 0.02
    return np.where(jitter & (a == 0), 1, a).astype(np.uint8)


@pytest.fixture
def folders(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path, Path]:
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_a, ref_b, ref_c = labels_map(rng), labels_map(rng), labels_map(rng)
    for name, arr in (("case_a", ref_a), ("case_b", ref_b), ("case_c", ref_c)):
        write_nifti(arr, AFFINE, ref_dir / f"{name}.nii.gz")
    write_nifti(np.roll(ref_a, 1, axis=0), AFFINE, pred_dir / "case_a.nii.gz")
    # case_b: the same labels at twice the resolution along axis 0 (another grid, same world)
    fine = np.repeat(ref_b, 2, axis=0)
    fine_aff = AFFINE.copy()
    fine_aff[0, 0] = 0.4
    fine_aff[0, 3] = AFFINE[0, 3] - 0.2
    write_nifti(fine, fine_aff, pred_dir / "case_b.nii.gz")
    write_nifti(ref_a, AFFINE, pred_dir / "orphan.nii.gz")  # no reference: not scored, exit 1
    return ref_dir, pred_dir, tmp_path / "report"


def test_evaluate_writes_csv_summary_and_report(folders, capsys):
    ref_dir, pred_dir, out = folders
    args = ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out)]
    # the orphan prediction cannot be scored: the others are, and the exit code says so
    assert main([*args, "--tolerance", "1.5", "--lesion-labels", "2"]) == 1
    assert "orphan: prediction without a reference" in capsys.readouterr().err
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 6  # 3 cases x labels 1, 2
    assert {r["case"] for r in rows} == {"case_a", "case_b", "case_c"}
    by = {(r["case"], r["label"]): r for r in rows}
    assert float(by["case_b", "1"]["dice"]) == 1.0  # resampled exactly back
    assert by["case_c", "1"]["missing"] == "1" and by["case_c", "1"]["hd95"] == "inf"
    assert float(by["case_c", "1"]["dice"]) == 0.0
    assert by["case_a", "2"]["lesion_f1"] != "" and by["case_a", "1"]["lesion_f1"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["missing_predictions"] == ["case_c"]
    assert summary["resampled_predictions"] == ["case_b"]
    assert summary["unmatched_predictions"] == ["orphan"]
    assert summary["tolerance_mm"] == 1.5
    hd95 = summary["labels"]["1"]["hd95"]
    assert set(hd95) >= {"mean", "median", "std", "n", "n_inf"}
    assert hd95["n_inf"] == 1 and hd95["n"] == 3
    assert summary["labels"]["1"]["dice"]["mean"] < 1.0
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) == 6 and all(p.stat().st_size > 1000 for p in pngs)
    assert "figures/case_c_label1.png" in (out / "report.md").read_text()
    assert not list(out.rglob("*.part*"))


def test_existing_report_needs_force(folders):
    ref_dir, pred_dir, out = folders
    (pred_dir / "orphan.nii.gz").unlink()  # every prediction has its reference: exit 0
    args = ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out)]
    assert main([*args, "--qc-cases", "0"]) == 0
    before = (out / "metrics.csv").stat().st_mtime_ns
    assert main([*args, "--qc-cases", "0"]) == 1
    assert (out / "metrics.csv").stat().st_mtime_ns == before
    assert main([*args, "--qc-cases", "0", "--force", "--labels", "2"]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["label"] for r in rows} == {"2"}


def test_instances_adds_panoptic_columns_and_pooled_summary(folders, capsys):
    ref_dir, pred_dir, out = folders
    (pred_dir / "orphan.nii.gz").unlink()
    args = ["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), "--out", str(out)]
    assert main([*args, "--qc-cases", "0", "--instances", "2", "--lesion-labels", "2"]) == 0
    printed = capsys.readouterr().out
    assert " PQ " in printed and "0.6857" in printed  # the pooled PQ in the table
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    header = next(csv.reader((out / "metrics.csv").open()))
    assert header.index("lesion_f1") < header.index("pq_tp") < header.index("pq")
    by = {(r["case"], r["label"]): r for r in rows}
    # case_a: the 6x6x5 box of label 2 shifted by one voxel (IoU 5/7); case_b: exact after
    # resampling; case_c: no prediction (one FN)
    assert float(by["case_a", "2"]["pq"]) == pytest.approx(5 / 7, abs=1e-5)
    assert by["case_a", "2"]["pq_tp"] == "1" and by["case_a", "2"]["pq_fp"] == "0"
    assert float(by["case_b", "2"]["pq"]) == 1.0
    assert by["case_c", "2"]["pq_fn"] == "1" and float(by["case_c", "2"]["pq"]) == 0.0
    assert by["case_a", "1"]["pq"] == ""  # label 1 not asked for
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"]["2"]["pq"]["mean"] == pytest.approx((5 / 7 + 1) / 3, abs=1e-5)
    pooled = summary["panoptic_pooled"]["2"]
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (2, 0, 1)
    assert pooled["pq"] == pytest.approx((5 / 7 + 1) / 2.5, abs=1e-5)
    assert "1" not in summary["panoptic_pooled"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--labels", "a,b"],
        ["--connectivity", "4"],
        ["--lesion-match", "best"],
        ["--labels", "0"],
        ["--instances", "0"],
        ["--instances", "x"],
        ["--labels", "1", "--instances", "2"],
    ],
)
def test_user_errors_exit_1(folders, extra):
    ref_dir, pred_dir, _ = folders
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir), *extra]) == 1


def test_missing_folder_and_no_ref_exit_1(tmp_path, folders):
    _, pred_dir, _ = folders
    assert main(["evaluate", "--pred", str(pred_dir), "--ref", str(tmp_path / "nope")]) == 1
    assert main(["evaluate", "--pred", str(pred_dir)]) == 1


def test_resampling_warns_and_non_overlapping_grid_is_an_error(caplog, rng):
    ref = Volume(labels_map(rng), AFFINE, Path("ref.nii.gz"))
    coarse_aff = AFFINE.copy()
    coarse_aff[2, 2] = 4.0
    coarse = Volume(ref.array[:, :, ::2].copy(), coarse_aff, Path("pred.nii.gz"))
    with caplog.at_level(logging.WARNING, logger="medseg.metrics.evaluate"):
        out = resample_to_reference(coarse, ref)
    assert "resampling" in caplog.text
    assert out.shape == ref.spatial_shape
    np.testing.assert_array_equal(out[:, :, ::2], ref.array[:, :, ::2])
    far_aff = AFFINE.copy()
    far_aff[:3, 3] += 1000.0
    with pytest.raises(MedsegError, match="does not overlap"):
        resample_to_reference(Volume(ref.array, far_aff, Path("far.nii.gz")), ref)


def test_non_overlapping_prediction_fails_the_command(tmp_path, rng):
    arr = labels_map(rng)
    write_nifti(arr, AFFINE, tmp_path / "ref" / "x.nii.gz")
    far = AFFINE.copy()
    far[:3, 3] += 500.0
    write_nifti(arr, far, tmp_path / "pred" / "x.nii.gz")
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]
    assert main(args) == 1


def test_manifest_mode_uses_label_names_and_images(tmp_path, rng):
    root = tmp_path / "data"
    entries = []
    for name in ("h_1", "h_2"):
        lab = labels_map(rng)
        img = (rng.normal(size=lab.shape) * 10 + lab * 50).astype(np.float32)
        write_nifti(img, AFFINE, root / "imagesTr" / f"{name}.nii.gz")
        write_nifti(lab, AFFINE, root / "labelsTr" / f"{name}.nii.gz")
        write_nifti(lab, AFFINE, tmp_path / "pred" / f"{name}.nii.gz")
        entries.append({"image": f"imagesTr/{name}.nii.gz", "label": f"labelsTr/{name}.nii.gz"})
    manifest = tmp_path / "dataset.json"
    doc = {
        "name": "toy",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "anterior", "2": "posterior", "3": "absent"},
        "training": entries,
    }
    manifest.write_text(json.dumps(doc))
    out = tmp_path / "report"
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--manifest", str(manifest)]
    assert main([*args, "--data-root", str(root), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["label_names"] == {"1": "anterior", "2": "posterior", "3": "absent"}
    assert summary["labels"]["1"]["dice"]["mean"] == 1.0
    assert summary["labels"]["3"]["dice"]["mean"] == 1.0  # absent from both: both-empty rule
    assert len(list((out / "figures").glob("*.png"))) == 4
    assert main(args) == 1  # --manifest without --data-root

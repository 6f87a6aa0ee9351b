"""Batch prediction: discovery, resumability, failures, atomic outputs, untouched inputs, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from inference_helpers import phantom

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.inference.cases import discover_cases
from medseg.io import write_nifti
from medseg.io.dicom_write import write_dicom_series


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def cases_dir(tmp_path: Path) -> Path:
    """Two NIfTI cases, one DICOM series folder in a sub-folder, one corrupt file."""
    root = tmp_path / "in"
    root.mkdir()
    for s in (0, 1):
        img, _ = phantom(seed=s)
        write_nifti(img.array, img.affine, root / f"case{s}.nii.gz")
    img, _ = phantom(seed=2)
    write_dicom_series(img, root / "patient" / "ct_series", modality="MR", rescale_slope=0.01)
    (root / "broken.nii.gz").write_bytes(b"not a nifti file")
    return root


def test_discovery_finds_files_and_dicom_folders(cases_dir: Path, tmp_path: Path) -> None:
    cases = discover_cases(cases_dir, exclude=cases_dir / "out")
    assert [(c.name, c.is_dicom) for c in cases] == [
        ("broken", False),
        ("case0", False),
        ("case1", False),
        ("ct_series", True),
    ]
    single = discover_cases(cases_dir / "patient" / "ct_series")
    assert [(c.name, c.is_dicom) for c in single] == [("ct_series", True)]
    assert discover_cases(cases_dir / "case0.nii.gz")[0].name == "case0"
    # the output folder inside the input is not an input
    write_nifti(np.zeros((2, 2, 2)), np.eye(4), cases_dir / "out" / "case0.nii.gz")
    assert len(discover_cases(cases_dir, exclude=cases_dir / "out")) == 4
    # colliding names get their relative path
    shutil.copytree(cases_dir / "patient", cases_dir / "other")
    names = [c.name for c in discover_cases(cases_dir, exclude=cases_dir / "out")]
    assert "other_ct_series" in names and "patient_ct_series" in names
    with pytest.raises(MedsegError, match="no cases"):
        (tmp_path / "empty").mkdir()
        discover_cases(tmp_path / "empty")


def test_batch_failures_resume_overwrite(run_dir: Path, cases_dir: Path, tmp_path: Path) -> None:
    before = tree_hashes(cases_dir)
    out = tmp_path / "out"
    args = [
        "predict",
        "--model",
        str(run_dir),
        "--input",
        str(cases_dir),
        "--output",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(args) == 1  # the corrupt file fails, the others are written
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    assert [f["case"] for f in summary["failures"]] == ["broken"]
    assert "broken.nii.gz" in summary["failures"][0]["error"]
    for name in ("case0", "case1", "ct_series"):
        img = nib.load(out / f"{name}.nii.gz")
        src = cases_dir / (f"{name}.nii.gz" if name != "ct_series" else "patient/ct_series")
        from medseg.io import load_volume

        scan = load_volume(src)
        assert np.array_equal(img.affine, scan.affine)
        assert img.shape == scan.spatial_shape
        side = json.loads((out / f"{name}.json").read_text())
        assert side["labels"]["1"] == "organ"
        assert side["volumes_ml"]["organ"] > 0
        assert {"inference", "total"} <= set(side["timings_s"])
        assert side["model"]["kind"] == "run"
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("case,status") and len(csv_lines) == 5
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    assert tree_hashes(cases_dir) == before  # inputs unchanged

    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("case*")}
    os.utime(out / "case0.json", ns=(1, 1))
    assert main(args) == 1
    again = json.loads((out / "summary.json").read_text())
    assert again["counts"] == {"done": 0, "skipped": 3, "failed": 1}
    assert (out / "case0.json").stat().st_mtime_ns == 1  # kept, not rewritten
    assert (out / "case1.nii.gz").stat().st_mtime_ns == stamp["case1.nii.gz"]

    (out / "case1.json").unlink()  # as after a crash between the two writes
    assert main(args) == 1
    assert json.loads((out / "summary.json").read_text())["counts"]["done"] == 1

    assert main([*args, "--overwrite"]) == 1
    redo = json.loads((out / "summary.json").read_text())
    assert redo["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    assert (out / "case0.json").stat().st_mtime_ns != 1
    assert tree_hashes(cases_dir) == before


def test_cli_single_file_with_probabilities(run_dir: Path, tmp_path: Path) -> None:
    img, _ = phantom(seed=3)
    write_nifti(img.array, img.affine, tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            "--model",
            str(run_dir),
            "--input",
            str(tmp_path / "scan.nii.gz"),
            "--output",
            str(out),
            "--device",
            "cpu",
            "--save-probabilities",
            "--no-tta",
            "--folds",
            "0",
            "--overlap",
            "0.25",
            "--sw-batch-size",
            "2",
            "--postprocess",
            "none",
        ]
    )
    assert rc == 0
    probs = nib.load(out / "scan_probabilities.nii.gz")
    assert probs.shape == (*img.spatial_shape, 3)
    data = probs.get_fdata()
    assert np.allclose(data.sum(-1), 1.0, atol=0.02)
    mask = np.asarray(nib.load(out / "scan.nii.gz").dataobj)
    assert (data.argmax(-1) == mask).mean() > 0.99


def test_cli_rejects_bad_options(run_dir: Path, tmp_path: Path) -> None:
    base = [
        "predict",
        "--model",
        str(run_dir),
        "--input",
        str(tmp_path),
        "--output",
        str(tmp_path / "o"),
    ]
    assert main([*base, "--postprocess", "maybe"]) == 1
    assert main([*base, "--overlap", "1.5"]) == 1
    assert main([*base, "--folds", "x"]) == 1
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path),
                "--input",
                str(tmp_path),
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )


@pytest.mark.slow
def test_torchrun_splits_cases_across_ranks(run_dir: Path, cases_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "medseg",
        "predict",
        "--model",
        str(run_dir),
        "--input",
        str(cases_dir),
        "--output",
        str(out),
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 1}
    printed = proc.stdout + proc.stderr
    assert printed.count("case(s) failed: broken") == 1, printed  # rank 0 only
    assert printed.count("3 done, 0 skipped, 1 failed") == 1, printed
    assert sorted(r["name"] for r in summary["cases"]) == ["broken", "case0", "case1", "ct_series"]
    resolved = (out / "predict_config.yaml").read_text()  # written once, by rank 0
    assert "device: cpu" in resolved and "cuda" not in resolved


def test_only_rank_0_prints_the_summary(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Under torchrun every rank holds every result; rank 1 exits with the same code, silently."""
    from medseg.cli import predict_cmd
    from medseg.inference.batch import BatchSummary, CaseResult
    from medseg.runtime.distributed import DistInfo

    out = tmp_path / "out"
    results = [
        CaseResult("a", "in/a.nii.gz", "done", 0.1, "a.nii.gz", volumes_ml={"organ": 1.0}),
        CaseResult("b", "in/b.nii.gz", "failed", 0.1, error="in/b.nii.gz: expected 3D"),
    ]
    summary = BatchSummary(results, out, 0.2)
    monkeypatch.setattr(predict_cmd, "_run", lambda *a, **k: summary)
    monkeypatch.setattr(predict_cmd.ddp, "cleanup", lambda info: None)
    img, _ = phantom(seed=0)
    write_nifti(img.array, img.affine, tmp_path / "in" / "a.nii.gz")
    args = ["predict", "--model", str(run_dir), "--input", str(tmp_path / "in")]
    args += ["--output", str(out), "--device", "cpu"]
    for rank, shown in ((1, False), (0, True)):
        info = DistInfo(rank=rank, world_size=2)
        monkeypatch.setattr(predict_cmd.ddp, "init", lambda *a, info=info, **k: info)
        assert main(args) == 1
        printed = capsys.readouterr()
        text = printed.out + printed.err
        assert ("1 case(s) failed: b" in text) is shown, text
        assert ("1 done, 0 skipped, 1 failed" in text) is shown, text
        if not shown:
            assert text == ""


def test_volumes_in_mm3_in_sidecar_and_summaries(run_dir: Path, tmp_path: Path) -> None:
    import csv

    from medseg.io import load_volume

    img, _ = phantom(seed=1, spacing=(0.9, 1.1, 1.7))
    write_nifti(img.array, img.affine, tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    args = ["predict", "--model", str(run_dir), "--input", str(tmp_path / "in")]
    assert main([*args, "--output", str(out), "--device", "cpu"]) == 0
    mask = load_volume(out / "scan.nii.gz", allow_empty=True)
    voxel = abs(float(np.linalg.det(mask.affine[:3, :3])))
    side = json.loads((out / "scan.json").read_text())
    for value, name in ((1, "organ"), (2, "core")):
        count = int(np.count_nonzero(mask.array == value))
        assert count > 0
        assert side["volumes_mm3"][name] == count * voxel  # exactly
        assert side["volumes_ml"][name] == round(count * voxel / 1000, 4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"][0]["volumes_mm3"] == side["volumes_mm3"]
    row = next(csv.DictReader((out / "summary.csv").open()))
    assert float(row["organ_mm3"]) == side["volumes_mm3"]["organ"]
    assert float(row["organ_ml"]) == side["volumes_ml"]["organ"]
    assert main([*args, "--output", str(out), "--device", "cpu"]) == 0  # skipped: read back
    again = json.loads((out / "summary.json").read_text())
    assert again["cases"][0]["status"] == "skipped"
    assert again["cases"][0]["volumes_mm3"] == side["volumes_mm3"]


def test_a_summary_that_cannot_be_written_is_a_clean_error(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from medseg.inference import batch

    def refuse(*a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(batch, "write_summary", refuse)
    img, _ = phantom(seed=0)
    write_nifti(img.array, img.affine, tmp_path / "in" / "a.nii.gz")
    out = tmp_path / "out"
    args = ["predict", "--model", str(run_dir), "--input", str(tmp_path / "in")]
    assert main([*args, "--output", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{out}: cannot write summary.json" in err


def test_sidecar_records_absolute_inputs_for_a_relative_input(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """export-dicom finds the reference series from the sidecar, run from any folder."""
    img, _ = phantom(seed=2)
    write_nifti(img.array, img.affine, tmp_path / "in" / "scan.nii.gz")
    monkeypatch.chdir(tmp_path)
    args = ["predict", "--model", str(run_dir), "--input", "in/scan.nii.gz", "--output", "out"]
    assert main([*args, "--device", "cpu", "--postprocess", "none"]) == 0
    side = json.loads((tmp_path / "out" / "scan.json").read_text())
    want = str((tmp_path / "in" / "scan.nii.gz").resolve())
    assert side["input"] == want and side["inputs"] == [want]

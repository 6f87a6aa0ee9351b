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
    assert sorted(r["name"] for r in summary["cases"]) == ["broken", "case0", "case1", "ct_series"]
    resolved = (out / "predict_config.yaml").read_text()  # written once, by rank 0
    assert "device: cpu" in resolved and "cuda" not in resolved

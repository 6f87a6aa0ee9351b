"""``medseg validate-manifest`` and ``medseg synth-ct``: output, exit codes, no overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.cli import main


def test_validate_manifest_clean_exits_0(cohort: Path, capsys: pytest.CaptureFixture) -> None:
    out_json = cohort.parent / "report.json"
    rc = main(
        ["validate-manifest", str(cohort / "dataset.json"), "--data-root", str(cohort),
         "--json", str(out_json)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "SyntheticCT" in out and "training cases" in out and "none" in out
    report = json.loads(out_json.read_text())
    assert report["ok"] and report["n_training"] == 4 and report["problems"] == []


def test_validate_manifest_problems_exit_1(cohort: Path, capsys: pytest.CaptureFixture) -> None:
    doc = json.loads((cohort / "dataset.json").read_text())
    doc["training"][1]["label"] = "./labelsTr/gone.nii.gz"
    doc["training"].append(doc["training"][0])
    manifest = cohort / "broken.json"
    manifest.write_text(json.dumps(doc))
    out_json = cohort.parent / "report.json"
    rc = main(
        ["validate-manifest", str(manifest), "--data-root", str(cohort), "--json", str(out_json)]
    )
    out = capsys.readouterr().out.replace("\n", "")
    assert rc == 1
    assert "gone.nii.gz" in out and "file not found" in out
    assert "duplicate case id phantom_000" in out
    problems = json.loads(out_json.read_text())["problems"]
    assert {Path(p["path"]).name for p in problems} >= {"gone.nii.gz", "broken.json"}


def test_validate_manifest_user_errors_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "m.json"
    bad.write_text("{")
    assert main(["validate-manifest", str(bad), "--data-root", str(tmp_path)]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["validate-manifest", str(bad)]) == 2  # --data-root is required


def test_synth_ct_writes_and_refuses_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "synth"
    assert main(["synth-ct", str(out), "--cases", "2", "--seed", "3", "--dicom", "1"]) == 0
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "phantom_000.nii.gz",
        "phantom_001.nii.gz",
    ]
    assert len(list((out / "dicom" / "phantom_000").iterdir())) == 48
    before = (out / "imagesTr" / "phantom_000.nii.gz").stat().st_mtime_ns
    assert main(["synth-ct", str(out), "--cases", "1"]) == 1
    assert "--force" in capsys.readouterr().err
    assert (out / "imagesTr" / "phantom_000.nii.gz").stat().st_mtime_ns == before
    assert main(["synth-ct", str(out), "--cases", "1", "--force"]) == 0
    assert main(["validate-manifest", str(out / "dataset.json"), "--data-root", str(out)]) == 0


def test_problem_lines_keep_the_case_id(cohort: Path, capsys: pytest.CaptureFixture) -> None:
    # rich used to read "[phantom_001]" as markup and drop it from the printed problem
    doc = json.loads((cohort / "dataset.json").read_text())
    doc["training"][1]["label"] = "./labelsTr/gone.nii.gz"
    manifest = cohort / "broken.json"
    manifest.write_text(json.dumps(doc))
    assert main(["validate-manifest", str(manifest), "--data-root", str(cohort)]) == 1
    out = capsys.readouterr().out.replace("\n", "")
    assert "[phantom_001] file not found" in out


def test_outside_root_needs_the_flag(cohort: Path, capsys: pytest.CaptureFixture) -> None:
    doc = json.loads((cohort / "dataset.json").read_text())
    outside = cohort.parent / "other"
    outside.mkdir()
    for key in ("image", "label"):
        src = cohort / doc["training"][0][key]
        (outside / f"{key}.nii.gz").write_bytes(src.read_bytes())
        doc["training"][0][key] = f"../other/{key}.nii.gz"
    manifest = cohort / "outside.json"
    manifest.write_text(json.dumps(doc))
    args = ["validate-manifest", str(manifest), "--data-root", str(cohort)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "[image] training[0].image: ../other/image.nii.gz" in err
    assert "[image] training[0].label: ../other/label.nii.gz" in err
    assert main([*args, "--allow-outside-root"]) == 0

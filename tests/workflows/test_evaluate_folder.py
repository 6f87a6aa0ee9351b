"""``evaluate_folder``: the library chain behind ``medseg evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.io import write_nifti
from medseg.workflows.evaluate import EvaluateConfig, evaluate_folder

AFFINE = np.diag([0.8, 1.0, 2.0, 1.0])


def label_map(shift: int = 0) -> np.ndarray:
    a = np.zeros((16, 14, 8), np.uint8)
    a[3 + shift : 10 + shift, 4:10, 2:6] = 1
    a[11:14, 2:6, 3:7] = 2
    return a


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for name in ("a", "b"):
        write_nifti(label_map(), AFFINE, ref / f"{name}.nii.gz")
    write_nifti(label_map(shift=1), AFFINE, pred / "a.nii.gz")  # b is missing
    write_nifti(label_map(), AFFINE, pred / "orphan.nii.gz")
    return ref, pred


def test_evaluate_folder_scores_reports_and_calls_progress(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    ref, pred = folders
    calls: list[tuple[str, int, int]] = []
    out = tmp_path / "report"
    config = EvaluateConfig(labels=(1,), tolerance_mm=2.0, qc_cases=1)
    result = evaluate_folder(
        pred, ref=ref, out=out, config=config, progress=lambda *a: calls.append(a)
    )
    assert calls == [("a", 1, 2), ("b", 2, 2)]
    assert result.evaluation.labels == [1] and result.evaluation.missing == ["b"]
    assert result.evaluation.unmatched == ["orphan"] and result.label_names == {}
    assert result.summary["tolerance_mm"] == 2.0
    assert [p.name for p in result.files] == [
        "metrics.csv",
        "summary.json",
        "report.md",
        "report.html",
    ]
    assert json.loads((out / "summary.json").read_text())["missing_predictions"] == ["b"]
    assert len(list((out / "figures").glob("*.png"))) == 1
    with pytest.raises(MedsegError, match=r"already holds metrics\.csv"):
        evaluate_folder(pred, ref=ref, out=out, config=config)
    assert evaluate_folder(pred, ref=ref, out=out, config=config, force=True).files


def test_without_output_folder_nothing_is_written(folders: tuple[Path, Path]) -> None:
    ref, pred = folders
    before = sorted(p.name for p in pred.parent.rglob("*"))
    result = evaluate_folder(pred, ref=ref)
    assert result.files == [] and result.evaluation.labels == [1, 2]
    assert sorted(p.name for p in pred.parent.rglob("*")) == before


def test_config_and_sources_are_checked(folders: tuple[Path, Path]) -> None:
    _, pred = folders
    with pytest.raises(MedsegError, match=r"evaluate\.connectivity"):
        EvaluateConfig(connectivity=4)
    with pytest.raises(MedsegError, match=r"evaluate\.lesion_match"):
        EvaluateConfig(lesion_match="best")  # type: ignore[arg-type]
    with pytest.raises(MedsegError, match=r"evaluate\.labels"):
        EvaluateConfig(labels=(0,))
    with pytest.raises(MedsegError, match="expected a reference folder"):
        evaluate_folder(pred)
    with pytest.raises(MedsegError, match="needs data_root"):
        evaluate_folder(pred, manifest=pred / "dataset.json")

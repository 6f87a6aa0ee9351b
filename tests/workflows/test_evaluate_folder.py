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


def test_new_config_ranges_are_checked() -> None:
    with pytest.raises(MedsegError, match=r"evaluate\.tolerance_mm: expected a tolerance > 0"):
        EvaluateConfig(tolerance_mm=0.0)
    with pytest.raises(MedsegError, match=r"evaluate\.lesion_iou"):
        EvaluateConfig(lesion_iou=1.5)
    with pytest.raises(MedsegError, match=r"evaluate\.qc_cases"):
        EvaluateConfig(qc_cases=-1)


def test_a_case_that_cannot_be_scored_is_listed_and_the_others_are_scored(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    ref, pred = folders
    write_nifti(label_map(), AFFINE, ref / "c.nii.gz")
    (pred / "c.nii.gz").write_bytes(b"not a label map")
    result = evaluate_folder(
        pred, ref=ref, out=tmp_path / "report", config=EvaluateConfig(qc_cases=0)
    )
    assert [f["case"] for f in result.evaluation.failed] == ["c"]
    assert str(pred / "c.nii.gz") in result.evaluation.failed[0]["error"]
    assert [p.case_id for p in result.evaluation.cases] == ["a", "b"]
    assert {r["case"] for r in result.evaluation.rows} == {"a", "b"}
    assert [line.split(":")[0] for line in result.problems] == ["c", "orphan"]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["failed_cases"] == result.evaluation.failed and summary["n_cases"] == 2
    assert "Not scored (failed): c." in (tmp_path / "report" / "report.md").read_text()


def test_every_case_failing_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    write_nifti(label_map(), AFFINE, ref / "a.nii.gz")
    far = AFFINE.copy()
    far[:3, 3] += 800.0
    write_nifti(label_map(), far, pred / "a.nii.gz")
    with pytest.raises(
        MedsegError, match=r"at least one case that can be scored.*does not overlap"
    ):
        evaluate_folder(pred, ref=ref, out=tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_an_empty_prediction_folder_is_an_error(tmp_path: Path) -> None:
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    write_nifti(label_map(), AFFINE, ref / "a.nii.gz")
    pred.mkdir()
    with pytest.raises(MedsegError, match="expected predicted label maps") as info:
        evaluate_folder(pred, ref=ref)
    assert info.value.path == str(pred)


def _manifest(tmp_path: Path, ref_array: np.ndarray) -> tuple[Path, Path]:
    root = tmp_path / "data"
    write_nifti(ref_array.astype(np.float32), AFFINE, root / "imagesTr" / "h_1.nii.gz")
    write_nifti(ref_array, AFFINE, root / "labelsTr" / "h_1.nii.gz")
    doc = {
        "name": "toy",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "a", "2": "b"},
        "training": [{"image": "imagesTr/h_1.nii.gz", "label": "labelsTr/h_1.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(doc))
    return root / "dataset.json", root


def test_label_values_outside_the_manifest_or_model_labels_fail_the_case(tmp_path: Path) -> None:
    manifest, root = _manifest(tmp_path, label_map())
    pred = tmp_path / "pred"
    bad = label_map()
    bad[0, 0, 0] = 9
    write_nifti(bad, AFFINE, pred / "h_1.nii.gz")
    with pytest.raises(
        MedsegError, match=r"expected label values \[0, 1, 2\].*found label values \[9\]"
    ) as info:
        evaluate_folder(pred, manifest=manifest, data_root=root)
    assert str(pred / "h_1.nii.gz") in str(info.value)
    write_nifti(label_map(), AFFINE, pred / "h_1.nii.gz")
    with pytest.raises(MedsegError, match=r"found label values \[5\] requested by --labels"):
        evaluate_folder(pred, manifest=manifest, data_root=root, config=EvaluateConfig(labels=(5,)))
    assert evaluate_folder(pred, manifest=manifest, data_root=root).evaluation.failed == []


def test_the_model_labels_come_from_the_predict_sidecar(folders: tuple[Path, Path]) -> None:
    ref, pred = folders
    doc = {"case": "a", "mask": "a.nii.gz", "labels": {"0": "background", "1": "organ"}}
    (pred / "a.json").write_text(json.dumps(doc))
    result = evaluate_folder(pred, ref=ref)  # the reference of a holds label 2
    assert [f["case"] for f in result.evaluation.failed] == ["a"]
    assert "the model's labels in a.json" in result.evaluation.failed[0]["error"]
    assert str(ref / "a.nii.gz") in result.evaluation.failed[0]["error"]
    assert not evaluate_folder(pred, ref=ref, config=EvaluateConfig(labels=(1,))).evaluation.failed
    (pred / "a.json").write_text(json.dumps({"labels": "not from medseg predict"}))
    assert not evaluate_folder(pred, ref=ref).evaluation.failed


def test_manifest_paths_outside_the_data_root_need_the_opt_in(tmp_path: Path) -> None:
    manifest, root = _manifest(tmp_path, label_map())
    doc = json.loads(manifest.read_text())
    doc["training"][0]["label"] = "../elsewhere/h_1.nii.gz"  # the reference lives outside
    manifest.write_text(json.dumps(doc))
    (tmp_path / "elsewhere").mkdir()
    (root / "labelsTr" / "h_1.nii.gz").rename(tmp_path / "elsewhere" / "h_1.nii.gz")
    pred = tmp_path / "pred"
    write_nifti(label_map(), AFFINE, pred / "h_1.nii.gz")
    with pytest.raises(MedsegError, match="outside the data root"):
        evaluate_folder(pred, manifest=manifest, data_root=root)
    opted = EvaluateConfig(allow_outside_root=True)
    result = evaluate_folder(pred, manifest=manifest, data_root=root, config=opted)
    assert result.evaluation.failed == []
    assert result.summary["labels"]["1"]["dice"]["mean"] == pytest.approx(1.0)

"""Deciding a run's post-processing on its validation folds, then applying it at prediction."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from inference_helpers import phantom

from medseg.data.splits import write_splits
from medseg.inference.predictor import Predictor
from medseg.io import save_mask, write_nifti
from medseg.postprocessing import DecisionCandidates, PostprocessConfig, load_postprocessing
from medseg.training.config import RunConfig, load_run_config
from medseg.workflows import train as workflow_train
from medseg.workflows.postprocess_decision import decide_run_postprocessing


def _speckled_dataset(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Four phantoms with a bright speck, split 2/2 into the run's two folds; the manifest
    and its data root."""
    root = tmp_path / "data"
    training = []
    for s in range(4):
        img, lab = phantom(seed=20 + s)
        arr = img.array.copy()
        arr[1:3, 1:3, 1:3] = 300.0  # a spurious bright speck: largest-component removes it
        write_nifti(arr, img.affine, root / "imagesTr" / f"c{s}.nii.gz")
        save_mask(lab.array, lab, root / "labelsTr" / f"c{s}.nii.gz")
        training.append({"image": f"./imagesTr/c{s}.nii.gz", "label": f"./labelsTr/c{s}.nii.gz"})
    manifest = root / "dataset.json"
    manifest.write_text(
        json.dumps(
            {
                "name": "phantom",
                "modality": {"0": "MR"},
                "labels": {"0": "background", "1": "organ", "2": "core"},
                "training": training,
            }
        )
    )
    write_splits(
        run_dir / "splits.json",
        [
            {"train": ["c0", "c1"], "val": ["c2", "c3"]},
            {"train": ["c2", "c3"], "val": ["c0", "c1"]},
        ],
    )
    return manifest, root


def test_decision_writes_postprocessing_json_used_by_predict(run_dir: Path, tmp_path: Path) -> None:
    manifest, root = _speckled_dataset(run_dir, tmp_path)
    cand = DecisionCandidates(min_size_mm3=(), closing_mm=())
    path = decide_run_postprocessing(run_dir, 0, manifest, root, candidates=cand)
    assert path == run_dir / "postprocessing.json"
    payload = json.loads(path.read_text())
    report = payload["report"]
    assert report["validation_cases"] == 2 and report["fold"] == 0
    assert report["folds"] == [0] and report["validation_cases_per_fold"] == {"0": 2}
    config = load_postprocessing(path)
    assert config.per_label[2].largest_component  # removes the speck predicted as "core"
    assert report["final"]["2"] > report["baseline"]["2"]
    assert any(c.get("step") == "crf" or "crf" in json.dumps(c) for c in report["candidates"])
    predictor = Predictor.from_run(run_dir, device="cpu")
    assert predictor.postprocessing == config
    img, _ = phantom(seed=22)
    arr = img.array.copy()
    arr[1:3, 1:3, 1:3] = 300.0
    mask = predictor(type(img)(arr, img.affine))
    assert not mask.array[1:3, 1:3, 1:3].any()
    assert np.array_equal(mask.affine, img.affine)


def test_decision_is_skipped_with_a_warning_when_no_time_is_left(
    run_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest, root = _speckled_dataset(run_dir, tmp_path)
    with caplog.at_level(logging.WARNING, logger="medseg"):
        path = decide_run_postprocessing(
            run_dir, 0, manifest, root, deadline=time.perf_counter() - 1.0
        )
    assert "post-processing decision skipped" in caplog.text
    payload = json.loads(path.read_text())
    assert payload["report"]["skipped"].startswith("the time limit")
    assert payload["report"]["folds"] == [0] and payload["report"]["validation_cases"] == 0
    assert load_postprocessing(path) == PostprocessConfig()  # nothing applied at predict


def _run_config(manifest: Path, cache: Path, **overrides: Any) -> RunConfig:
    base: dict[str, Any] = {
        "data.manifest": str(manifest),
        "data.data_root": str(manifest.parent),
        "data.fold": "all",
        "data.folds": 3,
        "data.cache_dir": str(cache),
        "plans.channels": [4, 8, 16],
        "plans.patch_size": [16, 16, 16],
        "plans.batch_size": 2,
        "train.epochs": 1,
        "train.iterations_per_epoch": 2,
        "train.num_workers": 0,
        "train.threads": 1,
        "train.device": "cpu",
    }
    return load_run_config(None, {**base, **overrides})


def test_fold_all_decides_once_on_every_folds_held_out_cases(
    tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nnU-Net's way: one decision after the last fold, on all folds' validation cases pooled,
    each case predicted by the fold that held it out (it used to be decided after each fold
    and overwritten, so the last fold's two cases chose for the ensemble of three)."""
    torch.set_num_threads(1)
    decisions: list[Any] = []
    decide = workflow_train.decide_run_postprocessing

    def spy(run: Path, folds: Any, *args: Any, **kwargs: Any) -> Path:
        decisions.append(folds)
        return decide(run, folds, *args, **kwargs)

    loaded: list[tuple[int, ...]] = []
    from_path = Predictor.from_path

    def spy_load(cls: type, path: Path, **kwargs: Any) -> Predictor:
        loaded.append(tuple(kwargs["config"].folds))
        return from_path(path, **kwargs)

    monkeypatch.setattr(workflow_train, "decide_run_postprocessing", spy)
    monkeypatch.setattr(Predictor, "from_path", classmethod(spy_load))
    run = tmp_path / "run"
    cfg = _run_config(tiny_cohort, tmp_path / "cache")
    workflow_train.train_and_decide(cfg, run)
    assert decisions == [[0, 1, 2]]  # once, after the last fold
    assert loaded == [(0,), (1,), (2,)]  # each fold predicts its own held-out cases
    report = json.loads((run / "postprocessing.json").read_text())["report"]
    splits = json.loads((run / "splits.json").read_text())
    assert report["folds"] == [0, 1, 2] and "fold" not in report
    per_fold = {str(k): len(s["val"]) for k, s in enumerate(splits)}
    assert report["validation_cases_per_fold"] == per_fold
    assert report["validation_cases"] == 6 == len({c for s in splits for c in s["val"]})

"""Deciding a run's post-processing on its validation fold, then applying it at prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from inference_helpers import phantom

from medseg.data.splits import write_splits
from medseg.inference.predictor import Predictor
from medseg.io import save_mask, write_nifti
from medseg.postprocessing import DecisionCandidates, load_postprocessing
from medseg.workflows.postprocess_decision import decide_run_postprocessing


def test_decision_writes_postprocessing_json_used_by_predict(run_dir: Path, tmp_path: Path) -> None:
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
    cand = DecisionCandidates(min_size_mm3=(), closing_mm=())
    path = decide_run_postprocessing(run_dir, 0, manifest, root, candidates=cand)
    assert path == run_dir / "postprocessing.json"
    payload = json.loads(path.read_text())
    report = payload["report"]
    assert report["validation_cases"] == 2 and report["fold"] == 0
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

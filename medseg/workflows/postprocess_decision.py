"""Deciding a run's post-processing on its validation predictions (called after training).

The fold's validation cases (``RUN_DIR/splits.json``) are predicted with that fold's network
only, without post-processing, on their source grids; the raw masks, the references, the
images and the class probabilities go to :func:`medseg.postprocessing.decide_postprocessing`
(nnU-Net's rule: a step is kept only where validation Dice improves and no label gets worse),
and the choice is written to ``RUN_DIR/postprocessing.json``, which ``medseg predict
--postprocess auto`` applies.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.manifest import load_manifest
from medseg.data.splits import read_splits
from medseg.errors import MedsegError
from medseg.inference.config import InferConfig
from medseg.inference.predictor import Predictor
from medseg.io import affines_match, load_volume

logger = logging.getLogger(__name__)


def _validation_cases(
    run_dir: Path, fold: int, manifest: str | os.PathLike[str], data_root: str | os.PathLike[str]
) -> list[Any]:
    splits = read_splits(run_dir / "splits.json")
    if not 0 <= fold < len(splits):
        raise MedsegError(
            f"expected a fold in 0..{len(splits) - 1}, found {fold}", run_dir / "splits.json"
        )
    wanted = set(splits[fold]["val"])
    cases = [c for c in load_manifest(manifest, data_root).training if c.case_id in wanted]
    missing = sorted(wanted - {c.case_id for c in cases})
    if missing:
        raise MedsegError(f"validation cases of fold {fold} not in the manifest: {missing}")
    return cases


def decide_run_postprocessing(
    run_dir: str | os.PathLike[str],
    fold: int,
    manifest: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    *,
    config: InferConfig | None = None,
    candidates: Any | None = None,
) -> Path:
    """Predict fold ``fold``'s validation cases, decide post-processing, write it to the run.

    Parameters
    ----------
    run_dir
        The run directory (``plans.json``, ``splits.json``, ``fold_<fold>/``).
    fold
        Which fold's network and validation cases to use.
    manifest, data_root
        The dataset manifest and the folder its paths are relative to.
    config
        Inference options (post-processing is always off for these predictions).
    candidates
        A :class:`medseg.postprocessing.DecisionCandidates`; ``None`` for its defaults
        (morphology steps and the dense CRF). With ``candidates.crf=None`` no class
        probabilities are kept, which bounds memory on large validation sets.

    Returns
    -------
    pathlib.Path
        ``RUN_DIR/postprocessing.json``; its ``report`` holds Dice before/after each
        candidate step, the seconds spent and the validation case ids.
    """
    from medseg.postprocessing import (
        DecisionCandidates,
        decide_postprocessing,
        save_postprocessing,
    )

    run = Path(run_dir)
    cand = candidates if candidates is not None else DecisionCandidates()
    base = config or InferConfig()
    infer = dataclasses.replace(base, folds=(fold,), postprocess="none", crf=False)
    predictor = Predictor.from_path(run, config=infer, kind="run")
    want_probs = cand.crf is not None
    start = time.perf_counter()
    data = []
    for case in _validation_cases(run, fold, manifest, data_root):
        volume = load_volume(case.image)
        reference = load_volume(case.label, allow_empty=True)  # type: ignore[arg-type]
        if reference.spatial_shape != volume.spatial_shape or not affines_match(
            reference.affine, volume.affine
        ):
            raise MedsegError(
                f"label grid {reference.spatial_shape} does not match its image "
                f"{volume.spatial_shape} ({case.image})",
                case.label,
            )
        pred = predictor.predict(volume, with_probabilities=want_probs)
        probs = pred.probabilities.array if pred.probabilities is not None else None
        image = np.asarray(volume.array, dtype=np.float32) if want_probs else None
        data.append((pred.mask.array, np.asarray(reference.array), volume.spacing, image, probs))
    predict_s = time.perf_counter() - start
    labels = sorted(k for k in predictor.label_names if k != 0)
    start = time.perf_counter()
    chosen, report = decide_postprocessing(data, labels, cand)
    report.update(
        fold=fold,
        validation_cases=len(data),
        predict_seconds=round(predict_s, 3),
        decide_seconds=round(time.perf_counter() - start, 3),
    )
    path = save_postprocessing(run / "postprocessing.json", chosen, report)
    logger.info("post-processing decided on %d validation cases: %s", len(data), path)
    return path

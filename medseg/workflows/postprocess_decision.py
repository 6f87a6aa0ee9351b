"""Deciding a run's post-processing on its validation predictions (called after training).

The validation cases (``RUN_DIR/splits.json``) of the trained folds are pooled, each case
predicted by the fold that held it out (as nnU-Net does), without post-processing, on its
source grid; the raw masks, the references, the images and the class probabilities go to
:func:`medseg.postprocessing.decide_postprocessing` (nnU-Net's rule: a step is kept only where
validation Dice improves and no label gets worse), and the one choice is written to
``RUN_DIR/postprocessing.json``, which ``medseg predict --postprocess auto`` applies to the
ensemble of folds. Its ``report`` names the folds and the cases per fold it used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.loading import load_case_image
from medseg.data.manifest import load_manifest
from medseg.data.splits import read_splits
from medseg.errors import MedsegError
from medseg.inference.config import InferConfig
from medseg.inference.predictor import Predictor
from medseg.io import affines_match, load_volume

logger = logging.getLogger(__name__)


def _validation_cases(
    run_dir: Path,
    fold: int,
    manifest: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    allow_outside_root: bool = False,
) -> list[Any]:
    splits = read_splits(run_dir / "splits.json")
    if not 0 <= fold < len(splits):
        raise MedsegError(
            f"expected a fold in 0..{len(splits) - 1}, found {fold}", run_dir / "splits.json"
        )
    wanted = set(splits[fold]["val"])
    loaded = load_manifest(manifest, data_root, allow_outside_root=allow_outside_root)
    cases = [c for c in loaded.training if c.case_id in wanted]
    missing = sorted(wanted - {c.case_id for c in cases})
    if missing:
        raise MedsegError(f"validation cases of fold {fold} not in the manifest: {missing}")
    return cases


def decide_run_postprocessing(
    run_dir: str | os.PathLike[str],
    folds: int | Sequence[int],
    manifest: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    *,
    config: InferConfig | None = None,
    candidates: Any | None = None,
    deadline: float = math.inf,
    allow_outside_root: bool = False,
) -> Path:
    """Predict the validation cases of ``folds``, decide post-processing on them pooled, write
    it to the run.

    Parameters
    ----------
    run_dir
        The run directory (``plans.json``, ``splits.json``, ``fold_<k>/``).
    folds
        The fold(s) whose validation cases are pooled; each case is predicted by its own
        fold's network only.
    manifest, data_root
        The dataset manifest and the folder its paths are relative to.
    config
        Inference options (post-processing is always off for these predictions).
    candidates
        A :class:`medseg.postprocessing.DecisionCandidates`; ``None`` for its defaults
        (morphology steps and the dense CRF). With ``candidates.crf=()`` no class
        probabilities are kept, which bounds memory on large validation sets.
    deadline
        ``time.perf_counter()`` value by which the decision must end (``inf``: none). With no
        time left, or when the cases cannot all be predicted in time, nothing is decided
        (a WARNING; the file then holds no steps and ``report["skipped"]``); candidates that
        do not fit are not tried (``report["stopped"]``).
    allow_outside_root
        Accept manifest paths outside ``data_root`` (as the training run did).

    Returns
    -------
    pathlib.Path
        ``RUN_DIR/postprocessing.json``; its ``report`` holds Dice before/after each
        candidate step, the seconds spent, ``folds``, ``validation_cases`` (in all) and
        ``validation_cases_per_fold`` (and ``fold`` when one fold was used).
    """
    from medseg.postprocessing import DecisionCandidates, decide_postprocessing

    run = Path(run_dir)
    fold_list = [int(folds)] if isinstance(folds, int) else [int(f) for f in folds]
    if not fold_list:
        raise MedsegError("expected at least one fold to decide post-processing on", run)
    cand = candidates if candidates is not None else DecisionCandidates()
    about: dict[str, Any] = {"folds": fold_list}
    if len(fold_list) == 1:
        about["fold"] = fold_list[0]
    if time.perf_counter() >= deadline:
        return _skipped(run, about, "the time limit left no time for it")
    start = time.perf_counter()
    data: list[Any] = []
    per_fold: dict[str, int] = {}
    labels: list[int] = []
    for k in fold_list:
        cases, labels = _predict_fold(
            run, k, (manifest, data_root, allow_outside_root), config, bool(cand.crf), deadline
        )
        if cases is None:
            return _skipped(run, about, f"the time limit ended while predicting fold {k}")
        data += cases
        per_fold[str(k)] = len(cases)
    predict_s = time.perf_counter() - start
    start = time.perf_counter()
    chosen, report = decide_postprocessing(data, labels, cand, deadline=deadline)
    report.update(
        **about,
        validation_cases=len(data),
        validation_cases_per_fold=per_fold,
        predict_seconds=round(predict_s, 3),
        decide_seconds=round(time.perf_counter() - start, 3),
    )
    return _save(run, chosen, report, len(data), fold_list)


def _predict_fold(
    run: Path,
    fold: int,
    dataset: tuple[str | os.PathLike[str], str | os.PathLike[str], bool],
    config: InferConfig | None,
    want_probs: bool,
    deadline: float,
) -> tuple[list[Any] | None, list[int]]:
    """Fold ``fold``'s validation cases predicted by its network, as decision cases, and the
    foreground labels; ``None`` for the cases when the deadline would pass first (checked
    before each case against the time the last one took)."""
    base = config or InferConfig()
    infer = dataclasses.replace(base, folds=(fold,), postprocess="none", crf=False)
    predictor = Predictor.from_path(run, config=infer, kind="run")
    labels = sorted(k for k in predictor.label_names if k != 0)
    data = []
    last_s = 0.0
    for case in _validation_cases(run, fold, *dataset):
        t0 = time.perf_counter()
        if t0 + last_s > deadline:
            return None, labels
        volume = load_case_image(case, predictor.plans.in_channels)  # (C, I, J, K) if C > 1
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
        first = volume.array if volume.array.ndim == 3 else volume.array[0]  # the CRF's: channel 0
        image = np.asarray(first, dtype=np.float32) if want_probs else None
        data.append((pred.mask.array, np.asarray(reference.array), volume.spacing, image, probs))
        last_s = time.perf_counter() - t0
    return data, labels


def _save(run: Path, chosen: Any, report: dict[str, Any], cases: int, folds: list[int]) -> Path:
    from medseg.postprocessing import save_postprocessing

    path = save_postprocessing(run / "postprocessing.json", chosen, report)
    logger.info(
        "post-processing decided on %d validation cases of fold(s) %s: %s", cases, folds, path
    )
    return path


def _skipped(run: Path, about: dict[str, Any], reason: str) -> Path:
    """Write a ``postprocessing.json`` without steps that says why nothing was decided."""
    from medseg.postprocessing import PostprocessConfig, save_postprocessing

    logger.warning("post-processing decision skipped: %s; no post-processing is applied", reason)
    report = {"skipped": reason, **about, "validation_cases": 0}
    return save_postprocessing(run / "postprocessing.json", PostprocessConfig(), report)

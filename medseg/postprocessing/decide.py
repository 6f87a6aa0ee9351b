"""Choosing post-processing on validation predictions (nnU-Net's rule) and storing the choice.

Greedy, in this order: for each label, keep the largest component; else remove small objects
(each candidate threshold, the best one); fill holes; closing (each candidate radius in mm, the
best one; a radius whose structuring element is one voxel at every case's spacing changes
nothing and is not evaluated); then the dense CRF for all labels (each candidate setting, the
best one) when every case has probabilities and an image. A candidate is
kept only if the mean validation Dice of its label (for the CRF: the mean over labels) improves
by more than ``min_gain`` and no label's mean Dice drops by more than ``tolerance``. Each
candidate is evaluated on top of the steps already kept, with :func:`apply_postprocessing`, so
the evaluated pipeline is exactly what prediction runs. Dice comes from
:func:`medseg.metrics.dice_per_label` (both masks empty -> 1, one empty -> 0).

With a ``deadline`` the decision stops when it passes (checked before each case of each
evaluation): the steps kept so far stay (each was evaluated on every case), the rest are not
tried, and ``report["stopped"]`` says where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.config import from_dict, to_dict
from medseg.errors import MedsegError
from medseg.io.atomic import atomic_write_text
from medseg.io.jsonfile import read_json
from medseg.metrics import dice_per_label
from medseg.postprocessing.crf import CRFConfig
from medseg.postprocessing.morphology import (
    LabelPostprocessing,
    PostprocessConfig,
    apply_postprocessing,
    ellipsoid_structure,
)

logger = logging.getLogger(__name__)

Case = tuple[np.ndarray, np.ndarray, Sequence[float], np.ndarray | None, np.ndarray | None]
"""(predicted labels (I,J,K), reference labels (I,J,K), spacing mm, image or None,
probabilities (C,I,J,K) or None)."""


@dataclass(frozen=True)
class DecisionCandidates:
    """Which steps :func:`decide_postprocessing` tries.

    Attributes
    ----------
    largest_component
        Try keeping the largest connected component.
    min_size_mm3
        Small-object thresholds (mm^3) to try when the largest component was not kept.
    fill_holes
        Try 3D hole filling.
    closing_mm
        Closing radii (mm) to try: gaps and notches narrower than about twice the radius
        close (1 mm: one voxel at 1 mm spacing).
    crf
        CRF settings to try (the best one that passes the rule is kept) when every case has
        probabilities and an image; empty to never try the CRF. The default varies the
        appearance kernel's width, which matters most: on MSD hippocampus with noisy
        probabilities 3 mm was best, on a 40 mm synthetic sphere 10 mm.
    """

    largest_component: bool = True
    min_size_mm3: tuple[float, ...] = (20.0, 200.0)
    fill_holes: bool = True
    closing_mm: tuple[float, ...] = (1.0, 2.0)
    crf: tuple[CRFConfig, ...] = (
        CRFConfig(bilateral_sigma_mm=3.0),
        CRFConfig(bilateral_sigma_mm=5.0),
        CRFConfig(bilateral_sigma_mm=10.0),
    )


class _OutOfTimeError(Exception):
    """The decision's deadline passed during an evaluation."""


def _mean_dice(
    cases: Sequence[Case],
    labels: Sequence[int],
    config: PostprocessConfig,
    deadline: float = math.inf,
) -> dict[int, float]:
    per_case = []
    for pred, ref, spacing, image, probs in cases:
        if time.perf_counter() > deadline:
            raise _OutOfTimeError
        out = apply_postprocessing(pred, spacing, config, image=image, probabilities=probs)
        per_case.append(dice_per_label(out, ref, labels))
    return {label: float(np.mean([d[label] for d in per_case])) for label in labels}


def _label_candidates(
    cand: DecisionCandidates, spacings: Sequence[Sequence[float]]
) -> list[tuple[str, list[dict[str, Any]]]]:
    """(step name, list of alternative field settings) in the order they are tried."""
    steps: list[tuple[str, list[dict[str, Any]]]] = []
    if cand.largest_component:
        steps.append(("largest_component", [{"largest_component": True}]))
    if cand.min_size_mm3:
        steps.append(("min_size_mm3", [{"min_size_mm3": float(t)} for t in cand.min_size_mm3]))
    if cand.fill_holes:
        steps.append(("fill_holes", [{"fill_holes": True}]))
    radii = [
        float(r)
        for r in cand.closing_mm
        if any(ellipsoid_structure(float(r), s).size > 1 for s in spacings)
    ]
    if radii:
        steps.append(("closing_mm", [{"closing_mm": r} for r in radii]))
    return steps


def _accept(
    before: dict[int, float],
    after: dict[int, float],
    target: Sequence[int],
    gain: float,
    tol: float,
) -> bool:
    improved = np.mean([after[t] for t in target]) > np.mean([before[t] for t in target]) + gain
    no_worse = all(after[k] >= before[k] - tol for k in before)
    return bool(improved and no_worse)


def _try(
    name: str,
    label: int | None,
    alternatives: list[tuple[dict[str, Any], PostprocessConfig]],
    ctx: dict[str, Any],
) -> PostprocessConfig:
    """Evaluate alternatives on top of ``ctx['config']``; keep the best one that passes."""
    cases, labels, report = ctx["cases"], ctx["labels"], ctx["report"]
    before = ctx["dice"]
    target = list(labels) if label is None else [label]
    best: tuple[float, PostprocessConfig, dict[int, float], dict[str, Any]] | None = None
    for params, config in alternatives:
        try:
            after = _mean_dice(cases, labels, config, ctx["deadline"])
        except _OutOfTimeError:
            where = "all labels" if label is None else f"label {label}"
            ctx["stopped"] = f"deadline passed while trying {name} {params} for {where}"
            break
        ok = _accept(before, after, target, ctx["min_gain"], ctx["tolerance"])
        report["candidates"].append(
            {
                "step": name,
                "label": label,
                "params": params,
                "dice_before": {str(k): v for k, v in before.items()},
                "dice_after": {str(k): v for k, v in after.items()},
                "accepted": False,
                "passes_rule": ok,
            }
        )
        score = float(np.mean([after[t] for t in target]))
        if ok and (best is None or score > best[0]):
            best = (score, config, after, params)
            ctx["best_entry"] = report["candidates"][-1]
    if best is None:
        return ctx["config"]
    ctx["best_entry"]["accepted"] = True
    ctx["dice"] = best[2]
    where = "all labels" if label is None else f"label {label}"
    logger.info("post-processing: kept %s for %s (%s)", name, where, best[3])
    return best[1]


def _multi_instance(cases: Sequence[Case], label: int) -> bool:
    """True when any reference holds ``label`` as more than one connected component.

    nnU-Net's rule would still try "largest component" there and, with few validation cases
    and a weak model, may keep it; for lesion-like labels (several per scan) it then deletes
    true lesions on every new case. Such labels are never reduced to one component.
    """
    for case in cases:
        ref = np.asarray(case[1]) == label
        if ref.any() and ndimage.label(ref, structure=np.ones((3, 3, 3)))[1] > 1:
            return True
    return False


def _decide_morphology(
    ctx: dict[str, Any], steps: list[tuple[str, list[dict[str, Any]]]], multi: dict[int, bool]
) -> None:
    """Try each label's morphology steps in turn, updating ``ctx["config"]``."""
    for label in ctx["labels"]:
        for name, options in steps:
            if ctx["stopped"]:
                return
            current = ctx["config"].per_label.get(label, LabelPostprocessing())
            if name == "min_size_mm3" and current.largest_component:
                continue  # nothing left to remove
            if name == "largest_component" and multi[label]:
                continue  # several lesions per case: keeping one would be wrong on new cases
            alternatives = []
            for params in options:
                step = dataclasses.replace(current, **params)
                per_label = {**ctx["config"].per_label, label: step}
                alternatives.append(
                    (params, dataclasses.replace(ctx["config"], per_label=per_label))
                )
            ctx["config"] = _try(name, label, alternatives, ctx)


def decide_postprocessing(
    cases: Sequence[Case],
    labels: Sequence[int],
    candidates: DecisionCandidates | None = None,
    *,
    min_gain: float = 0.0,
    tolerance: float = 1e-9,
    deadline: float = math.inf,
) -> tuple[PostprocessConfig, dict[str, Any]]:
    """Pick the post-processing steps that help on validation cases.

    Parameters
    ----------
    cases
        ``(pred_labels, ref_labels, spacing, image | None, probabilities | None)`` per case:
        (I, J, K) integer maps, spacing in mm, (I, J, K) image, (C, I, J, K) probabilities.
    labels
        Foreground labels to decide for (and to score).
    candidates
        Steps to try; defaults to :class:`DecisionCandidates`.
    min_gain
        Required improvement of the target label's mean Dice (strictly greater than this).
    tolerance
        How much any label's mean Dice may drop and still count as "not worse".
    deadline
        ``time.perf_counter()`` value after which no further case is evaluated (``inf``:
        none); the steps kept until then are returned and ``report["stopped"]`` is set.

    Returns
    -------
    tuple[PostprocessConfig, dict]
        The chosen configuration and a JSON-ready report with Dice before/after of each
        candidate (``candidates``), the baseline and the final Dice (both absent when the
        deadline passed before the baseline was scored).

    Raises
    ------
    MedsegError
        If there are no cases or no labels.
    """
    if not cases or not labels:
        raise MedsegError(
            f"decide_postprocessing: expected cases and labels, found "
            f"{len(cases)} cases and labels {list(labels)}"
        )
    cand = candidates or DecisionCandidates()
    labels = [int(x) for x in labels]
    config = PostprocessConfig()
    report: dict[str, Any] = {"dice_source": "medseg.metrics.dice_per_label", "candidates": []}
    try:
        baseline = _mean_dice(cases, labels, config, deadline)
    except _OutOfTimeError:
        report["stopped"] = "deadline passed while scoring the predictions as they are"
        logger.warning("post-processing decision: %s; nothing decided", report["stopped"])
        report["config"] = to_dict(config)
        return config, report
    ctx: dict[str, Any] = dict(
        cases=cases,
        labels=labels,
        report=report,
        dice=baseline,
        config=config,
        min_gain=min_gain,
        tolerance=tolerance,
        deadline=deadline,
        stopped="",
    )
    multi = {label: _multi_instance(cases, label) for label in labels}
    report["multi_instance_labels"] = [label for label in labels if multi[label]]
    _decide_morphology(ctx, _label_candidates(cand, [c[2] for c in cases]), multi)
    has_probs = all(c[3] is not None and c[4] is not None for c in cases)
    if cand.crf and has_probs and not ctx["stopped"]:
        alternatives = [(to_dict(c), dataclasses.replace(ctx["config"], crf=c)) for c in cand.crf]
        ctx["config"] = _try("crf", None, alternatives, ctx)
    if ctx["stopped"]:
        report["stopped"] = ctx["stopped"] + "; later candidates were not tried"
        logger.warning("post-processing decision: %s", report["stopped"])
    report["baseline"] = {str(k): v for k, v in baseline.items()}
    report["final"] = {str(k): v for k, v in ctx["dice"].items()}
    report["config"] = to_dict(ctx["config"])
    return ctx["config"], report


def postprocess_config_from_dict(
    data: dict[str, Any], where: str = "postprocessing"
) -> PostprocessConfig:
    """Build a :class:`PostprocessConfig` from plain data, accepting JSON's string label keys."""
    data = dict(data)
    per_label = data.get("per_label") or {}
    try:
        data["per_label"] = {int(k): v for k, v in per_label.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise MedsegError(
            f"{where}.per_label: expected integer label keys, found {per_label!r}"
        ) from exc
    return from_dict(PostprocessConfig, data, where)


def save_postprocessing(
    path: str | Path, config: PostprocessConfig, report: dict[str, Any] | None = None
) -> Path:
    """Write ``{"config": ..., "report": ...}`` as JSON atomically; returns the path."""
    payload = {"config": to_dict(config), "report": report or {}}
    text = json.dumps(payload, indent=2, sort_keys=False, default=float)
    return atomic_write_text(Path(path), text + "\n")


def load_postprocessing(path: str | Path) -> PostprocessConfig:
    """Read the configuration written by :func:`save_postprocessing`.

    Raises
    ------
    MedsegError
        If the file is missing, not JSON, or its configuration is invalid.
    """
    p = Path(path)
    payload = read_json(p, what="a postprocessing.json", missing="post-processing file not found")
    if not isinstance(payload, dict) or not isinstance(payload.get("config"), dict):
        raise MedsegError('expected a JSON object with a "config" mapping', p)
    try:
        return postprocess_config_from_dict(payload["config"])
    except MedsegError as exc:
        raise MedsegError(exc.message, p) from exc

"""Folder evaluation end to end: pair cases, score each, summarise, write the report.

:func:`evaluate_folder` is what ``medseg evaluate`` runs: predictions in a folder are paired
with references (a folder, by file name, or a manifest's labelled training cases), scored
per case and label (:func:`medseg.metrics.evaluate.evaluate_cases`), summarised
(:func:`medseg.metrics.summary.summarize`) and, with an output folder, written as
``metrics.csv``, ``summary.json``, ``report.md``/``report.html`` and ``figures/``.

Examples
--------
>>> result = evaluate_folder("preds/", ref="labelsTs/", out="report/")  # doctest: +SKIP
>>> result.summary["labels"]["1"]["dice"]["mean"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medseg.errors import MedsegError
from medseg.io.outputs import check_output_dir
from medseg.metrics.evaluate import (
    CasePair,
    Evaluation,
    evaluate_cases,
    pair_folders,
    pair_manifest,
)
from medseg.metrics.panoptic import pooled_panoptic
from medseg.metrics.summary import (
    HD95_CONVENTION,
    summarize,
    write_metrics_csv,
    write_summary_json,
)

logger = logging.getLogger(__name__)

OUTPUT_FILES = ("metrics.csv", "summary.json", "report.md", "report.html")
CONNECTIVITIES = (1, 2, 3, 6, 18, 26)

#: ``progress(case_id, done, total)``, called after each scored case.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EvaluateConfig:
    """Options of folder evaluation (checked when constructed).

    Parameters
    ----------
    labels
        Labels to score; ``None``: the manifest's labels, or every label found.
    tolerance_mm
        Tolerance in mm of the normalised surface distance and boundary F1.
    lesion_labels
        Labels that also get lesion-wise (connected-component) measures.
    connectivity
        Neighbourhood of lesion components: 1/2/3 (or 6/18/26).
    lesion_match
        Lesion detection rule: ``any`` overlap, or ``iou`` above ``lesion_iou``.
    lesion_iou
        IoU threshold of ``lesion_match="iou"``.
    instance_labels
        Labels that also get panoptic quality (PQ, SQ, RQ and the matched counts; instances
        are connected components with ``connectivity``, matched at IoU > 0.5).
    qc_cases
        Overlay figures for at most this many cases, worst Dice first (0: none).
    allow_outside_root
        Accept manifest paths that leave ``data_root`` (refused by default).
    """

    labels: tuple[int, ...] | None = None
    tolerance_mm: float = 1.0
    lesion_labels: tuple[int, ...] = ()
    connectivity: int = 3
    lesion_match: Literal["any", "iou"] = "any"
    lesion_iou: float = 0.1
    instance_labels: tuple[int, ...] = ()
    qc_cases: int = 20
    allow_outside_root: bool = False

    def __post_init__(self) -> None:
        """Raise :class:`MedsegError` naming the first out-of-range field."""
        for name in ("labels", "lesion_labels", "instance_labels"):
            values = getattr(self, name) or ()
            if any(v < 1 for v in values):
                raise MedsegError(
                    f"evaluate.{name}: expected positive label values, found {list(values)}"
                )
        if self.labels is not None and set(self.instance_labels) - set(self.labels):
            raise MedsegError(
                f"evaluate.instance_labels: expected labels among evaluate.labels "
                f"{list(self.labels)}, found {list(self.instance_labels)}"
            )
        if self.connectivity not in CONNECTIVITIES:
            raise MedsegError(
                f"evaluate.connectivity: expected 1, 2, 3 (or 6, 18, 26), found {self.connectivity}"
            )
        if self.lesion_match not in ("any", "iou"):
            raise MedsegError(
                f"evaluate.lesion_match: expected 'any' or 'iou', found {self.lesion_match!r}"
            )
        if not self.tolerance_mm > 0:
            raise MedsegError(
                f"evaluate.tolerance_mm: expected a tolerance > 0 mm, found {self.tolerance_mm}"
            )
        if not 0 < self.lesion_iou <= 1:
            raise MedsegError(
                f"evaluate.lesion_iou: expected 0 < IoU <= 1, found {self.lesion_iou}"
            )
        if self.qc_cases < 0:
            raise MedsegError(f"evaluate.qc_cases: expected >= 0, found {self.qc_cases}")


@dataclass
class EvaluateResult:
    """What :func:`evaluate_folder` computed and wrote.

    Attributes
    ----------
    evaluation
        Per-case rows, scored labels, missing / unmatched / resampled cases, label names.
    summary
        Per-label statistics (the content of ``summary.json``).
    files
        Files written into the output folder (``metrics.csv``, ``summary.json``,
        ``report.md``, ``report.html``); empty without an output folder.
    """

    evaluation: Evaluation
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    @property
    def label_names(self) -> dict[int, str]:
        """``{label: name}`` from the manifest (empty when pairing folders)."""
        return self.evaluation.label_names

    @property
    def problems(self) -> list[str]:
        """One line per case that was not scored (failed, or a prediction without reference).

        Non-empty means ``medseg evaluate`` exits 1 (after writing the report of the others).
        """
        lines = [f"{f['case']}: {f['error']}" for f in self.evaluation.failed]
        lines += [
            f"{cid}: prediction without a reference (expected a reference label map named "
            f"{cid}.*; not scored)"
            for cid in self.evaluation.unmatched
        ]
        return lines


def check_output_folder(out: Path, force: bool) -> None:
    """Raise :class:`MedsegError` if ``out`` holds report files and ``force`` is false."""
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not force:
        raise MedsegError(
            f"report folder already holds {', '.join(existing)} (use --force to overwrite)", out
        )


def _pairs(
    pred: Path,
    ref: Path | None,
    manifest: Path | None,
    data_root: Path | None,
    allow_outside_root: bool = False,
) -> tuple[list[CasePair], list[str], dict[int, str]]:
    if manifest is not None:
        if data_root is None:
            raise MedsegError("a manifest needs data_root (the folder its paths start from)")
        return pair_manifest(manifest, data_root, pred, allow_outside_root=allow_outside_root)
    if ref is None:
        raise MedsegError("expected a reference folder, or a manifest with its data_root")
    pairs, unmatched = pair_folders(pred, ref)
    return [_with_model_labels(p) for p in pairs], unmatched, {}


def _with_model_labels(pair: CasePair) -> CasePair:
    """``pair`` with the model's labels from the ``<case>.json`` sidecar ``medseg predict``
    wrote beside the prediction (unchanged when there is no such sidecar)."""
    if pair.pred is None or pair.known_labels is not None:
        return pair
    sidecar = pair.pred.with_name(f"{pair.case_id}.json")
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        labels = tuple(sorted(int(k) for k in data["labels"]))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return pair  # no sidecar, or not one of medseg predict's
    if not isinstance(data, dict) or "mask" not in data:
        return pair
    source = f"the model's labels in {sidecar.name}"
    return dataclasses.replace(pair, known_labels=labels, known_from=source)


def _counting(progress: ProgressCallback | None, total: int) -> Callable[[str], None] | None:
    """Adapt ``progress(case_id, done, total)`` to ``evaluate_cases``' ``progress(case_id)``."""
    if progress is None:
        return None
    done = 0

    def step(case_id: str) -> None:
        nonlocal done
        done += 1
        progress(case_id, done, total)

    return step


def _check_scored(ev: Evaluation) -> None:
    """Raise when no case could be scored; warn about predictions without a reference."""
    if ev.failed and not ev.cases:
        raise MedsegError(
            f"expected at least one case that can be scored, found {len(ev.failed)} failed; "
            f"first: {ev.failed[0]['error']}"
        )
    if ev.unmatched:
        logger.warning("predictions without a reference (not scored): %s", ", ".join(ev.unmatched))


def evaluate_folder(
    pred: str | os.PathLike[str],
    *,
    ref: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    config: EvaluateConfig | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> EvaluateResult:
    """Score a folder of predicted label maps and write the report.

    Parameters
    ----------
    pred
        Folder of predicted label maps (``<case>.nii.gz``, ...).
    ref
        Folder of reference label maps, paired by file name; or give ``manifest``.
    manifest, data_root
        ``dataset.json``-style manifest whose labelled training cases are the references
        (their images go into the figures, their label names into the summary), and the
        folder its paths start from.
    out
        Report folder; ``None``: compute only, write nothing.
    config
        Scoring options (default :class:`EvaluateConfig`).
    force
        Overwrite report files already in ``out``.
    progress
        Called as ``progress(case_id, done, total)`` after each case.

    Returns
    -------
    EvaluateResult
        The evaluation, its summary and the files written.

    Raises
    ------
    MedsegError
        For missing folders, no cases, a prediction folder without label files, an ``out``
        that is a file, not writable or inside ``pred``/``ref``, report files already in
        ``out`` without ``force``, or when no case can be scored. A single case that cannot
        be scored (unreadable or non-overlapping maps, unknown label values) is not an
        error: it is listed in ``result.evaluation.failed`` and :attr:`EvaluateResult.problems`.
    """
    cfg = config or EvaluateConfig()
    out_dir = None if out is None else Path(out)
    if out_dir is not None:
        check_output_dir(out_dir, flag="out", inputs=[("pred", pred), ("ref", ref)])
        check_output_folder(out_dir, force)
    ref_dir = None if ref is None else Path(ref)
    man = None if manifest is None else Path(manifest)
    root = None if data_root is None else Path(data_root)
    pairs, unmatched, names = _pairs(Path(pred), ref_dir, man, root, cfg.allow_outside_root)
    labels = list(cfg.labels) if cfg.labels is not None else (sorted(names) or None)
    ev = evaluate_cases(
        pairs,
        labels=labels,
        requested=cfg.labels,
        progress=_counting(progress, len(pairs)),
        tolerance_mm=cfg.tolerance_mm,
        lesion_labels=list(cfg.lesion_labels),
        connectivity=cfg.connectivity,
        lesion_overlap=cfg.lesion_match,
        lesion_iou_threshold=cfg.lesion_iou,
        instance_labels=list(cfg.instance_labels),
    )
    ev.unmatched, ev.label_names = unmatched, names
    _check_scored(ev)
    summary = summarize(
        ev.rows,
        ev.labels,
        tolerance_mm=cfg.tolerance_mm,
        hd95_convention=HD95_CONVENTION,
        label_names={str(k): v for k, v in names.items()},
        missing_predictions=ev.missing,
        unmatched_predictions=unmatched,
        resampled_predictions=ev.resampled,
        failed_cases=ev.failed,
    )
    if cfg.instance_labels:  # dataset-level PQ (Kirillov et al.) beside the per-case means
        summary["panoptic_pooled"] = pooled_panoptic(ev.rows, cfg.instance_labels)
    result = EvaluateResult(ev, summary)
    if out_dir is not None:
        result.files = write_evaluation(result, out_dir, qc_cases=cfg.qc_cases)
    return result


def write_evaluation(result: EvaluateResult, out: Path, *, qc_cases: int = 20) -> list[Path]:
    """Write ``metrics.csv``, ``summary.json``, ``report.md``/``.html`` and figures to ``out``."""
    from medseg.metrics.report import write_report

    csv_path = write_metrics_csv(result.evaluation.rows, out / "metrics.csv")
    json_path = write_summary_json(result.summary, out / "summary.json")
    md, html = write_report(result.evaluation, result.summary, out, max_cases=qc_cases)
    return [csv_path, json_path, md, html]

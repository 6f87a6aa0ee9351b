"""``medseg train`` as a library call: prepare the run directory, then train folds.

Run directory contract (read by inference and bundle export)::

    RUN_DIR/config.yaml        resolved RunConfig
    RUN_DIR/fingerprint.json
    RUN_DIR/plans.json
    RUN_DIR/dataset.json       {"name", "labels": {"0": ...}, "modality": {"0": ...}}
    RUN_DIR/splits.json
    RUN_DIR/fold_<k>/checkpoint_best.pt, checkpoint_last.pt, log.csv, metrics.json,
                     tensorboard/

On ``resume`` the plans and splits are read back from the run directory (the fingerprint
is kept as written; nothing is recomputed).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from medseg.config import dump_yaml
from medseg.data.manifest import Manifest, load_manifest
from medseg.data.splits import kfold_splits, read_splits, write_splits
from medseg.data.validation import validate_manifest
from medseg.errors import MedsegError
from medseg.io.atomic import atomic_write_text
from medseg.planning.fingerprint import Fingerprint, compute_fingerprint, save_fingerprint
from medseg.planning.planner import plan
from medseg.planning.plans import Plans, load_plans, save_plans
from medseg.preprocessing.cache import DEFAULT_CACHE, PreprocessedCache
from medseg.runtime import distributed as ddp
from medseg.runtime.device import resolve_device
from medseg.training.config import RunConfig
from medseg.training.data import default_workers, load_cached
from medseg.training.fold_run import run_epochs
from medseg.training.loop import FoldTrainer
from medseg.transforms.augmentation import PadForSamplingd
from medseg.transforms.config import AugmentConfig

logger = logging.getLogger(__name__)

AfterTraining = Callable[[Path, list[int], Manifest, float], None]
"""``(run_dir, folds trained, manifest, deadline)``: work after the last fold (the workflow
layer's post-processing decision); ``deadline`` is the ``time.perf_counter()`` value by which
the command's time limit ends (``inf``: none)."""

_RUN_FILES = (
    "config.yaml",
    "plans.json",
    "fingerprint.json",
    "splits.json",
    "dataset.json",
    "postprocessing.json",
)


def setup_runtime(cfg: RunConfig, device: str, world_size: int) -> None:
    """Threads and determinism switches for this process."""
    tc = cfg.train
    if device == "cpu":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        torch.set_num_threads(tc.threads or max(1, cpus // world_size))
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device == "cuda":
        torch.backends.cudnn.benchmark = True


def refuse_non_empty(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse ``--out`` when it is a file, or a non-empty folder without resume or force."""
    if out.exists() and not out.is_dir():
        raise MedsegError("expected a directory for --out, found a file", out)
    if out.is_dir() and any(out.iterdir()) and not (resume or force):
        raise MedsegError(
            "run directory is not empty; pass --resume to continue it or --force to overwrite",
            out,
        )


def check_out_dir(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse a non-empty run directory unless resuming or forced."""
    refuse_non_empty(out, resume=resume, force=force)
    if resume and not (out / "plans.json").is_file():
        raise MedsegError("--resume: no plans.json here (not a medseg run directory)", out)
    if force and not resume and out.is_dir():  # remove only what a run writes
        for name in _RUN_FILES:
            (out / name).unlink(missing_ok=True)
        for fold in out.glob("fold_*"):
            if fold.is_dir():
                shutil.rmtree(fold)


def with_trained_mirror_axes(plans: Plans, augment: AugmentConfig) -> Plans:
    """``plans`` with ``mirror_axes`` set to the axes training really mirrors.

    ``augment.mirror_axes`` when given (else the planned axes), ``()`` when
    ``augment.mirror_prob`` is 0. Inference mirrors (``--tta``) along ``plans.mirror_axes``,
    so the run's ``plans.json`` must hold what the model was trained to be invariant to.
    """
    axes = plans.mirror_axes if augment.mirror_axes is None else tuple(augment.mirror_axes)
    if augment.mirror_prob == 0:
        axes = ()
    return replace(plans, mirror_axes=tuple(axes))


def prepare_run(
    cfg: RunConfig,
    out: Path,
    *,
    device: str,
    resume: bool,
    is_main: bool,
    fingerprint: Fingerprint | None = None,
) -> Manifest:
    """Load the manifest; on rank 0 of a new run write fingerprint, plans, splits, config.

    ``fingerprint``, when given (``--configuration auto`` computes it once for every
    configuration), is written instead of computing it again. ``plans.json`` records the
    mirror axes that augmentation uses (:func:`with_trained_mirror_axes`), which test-time
    mirroring then follows.
    """
    manifest = load_manifest(
        cfg.data.manifest, cfg.data.data_root, allow_outside_root=cfg.data.allow_outside_root
    )
    if not manifest.training:
        raise MedsegError("expected labelled training cases, found none", manifest.path)
    if is_main and not resume:
        if cfg.data.validate_files:
            validate_manifest(manifest, min_overlap=cfg.data.min_channel_overlap).raise_if_failed()
        out.mkdir(parents=True, exist_ok=True)
        fp = fingerprint or cohort_fingerprint(cfg, manifest)
        save_fingerprint(fp, out / "fingerprint.json")
        planned = plan(fp, device, cfg.plans)
        plans = with_trained_mirror_axes(planned, cfg.augment)
        if plans.mirror_axes != planned.mirror_axes:
            logger.info(
                "mirror axes: planned %s, trained %s", planned.mirror_axes, plans.mirror_axes
            )
        save_plans(plans, out / "plans.json")
        ids = [c.case_id for c in manifest.training]
        write_splits(out / "splits.json", kfold_splits(ids, cfg.data.folds, cfg.data.split_seed))
        dataset = {
            "name": manifest.name,
            "labels": {str(k): v for k, v in manifest.labels.items()},
            "modality": {str(k): v for k, v in manifest.modality.items()},
        }
        atomic_write_text(out / "dataset.json", json.dumps(dataset, indent=1))
        dump_yaml(cfg, out / "config.yaml")
    return manifest


def cohort_fingerprint(cfg: RunConfig, manifest: Manifest) -> Fingerprint:
    """The fingerprint of ``manifest``'s training cases (intensity samples seeded by
    ``train.seed``)."""
    return compute_fingerprint(
        manifest.training,
        manifest.labels,
        [manifest.modality[c] for c in sorted(manifest.modality)],
        seed=cfg.train.seed,
        min_overlap=cfg.data.min_channel_overlap,
    )


def _fold_list(cfg: RunConfig, splits: list[dict[str, list[str]]]) -> list[int]:
    if len(splits) != cfg.data.folds and cfg.data.fold == "all":
        logger.warning("splits.json has %d folds (config says %d)", len(splits), cfg.data.folds)
    if cfg.data.fold == "all":
        return list(range(len(splits)))
    if not 0 <= int(cfg.data.fold) < len(splits):
        raise MedsegError(f"fold {cfg.data.fold} out of range: splits.json has {len(splits)}")
    return [int(cfg.data.fold)]


def train(
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = False,
    after_training: AfterTraining | None = None,
    reserve_factor: float = 0.0,
    fingerprint: Fingerprint | None = None,
) -> dict[str, Any]:
    """Train the configured fold(s) into ``out``; return ``{fold: metrics}`` (``{}`` on DDP
    ranks other than 0, so that only rank 0 reports).

    ``fingerprint``: the cohort's, already computed (see :func:`prepare_run`).

    ``after_training(run_dir, folds, manifest, deadline)`` runs on rank 0 once, after the
    last fold (the workflow layer passes the post-processing decision here: training never
    imports inference).

    ``train.time_limit_minutes`` bounds the whole call, ``after_training`` included: the
    folds share the time left equally, each stops between steps so that its final
    validation fits, and each leaves ``reserve_factor`` times its validation time for
    ``after_training``, which gets what remains (``deadline``). A resumed run gets a new
    budget. Each fold takes at least one step and one validation, however short the limit.

    Raises
    ------
    MedsegError
        For a non-empty ``out`` without ``resume``/``force``, bad manifests or configs.
    """
    t_start = time.perf_counter()
    out = Path(out)
    device = str(resolve_device(cfg.train.device))
    info = ddp.init(device)
    if info.is_main:
        check_out_dir(out, resume=resume, force=force)
    ddp.barrier(info)
    setup_runtime(cfg, device, info.world_size)
    if device == "cuda" and info.enabled:
        device = f"cuda:{info.local_rank}"
    try:
        hooks = (after_training, reserve_factor, fingerprint)
        results = _train_folds(cfg, out, device, info, resume, progress, t_start, hooks)
        return results if info.is_main else {}
    finally:
        ddp.cleanup(info)


def _train_folds(
    cfg: RunConfig,
    out: Path,
    device: str,
    info: ddp.DistInfo,
    resume: bool,
    progress: bool,
    t_start: float,
    hooks: tuple[AfterTraining | None, float, Fingerprint | None],
) -> dict[str, Any]:
    after_training, reserve_factor, fingerprint = hooks
    manifest = prepare_run(
        cfg,
        out,
        device=device.split(":")[0],
        resume=resume,
        is_main=info.is_main,
        fingerprint=fingerprint,
    )
    ddp.barrier(info)
    plans, splits = load_plans(out / "plans.json"), read_splits(out / "splits.json")
    trained = with_trained_mirror_axes(plans, cfg.augment).mirror_axes
    if resume and info.is_main and trained != plans.mirror_axes:
        logger.warning(
            "augment mirrors axes %s, but %s records %s (test-time mirroring follows it)",
            trained,
            out / "plans.json",
            plans.mirror_axes,
        )
    cache = PreprocessedCache(
        cfg.data.cache_dir or DEFAULT_CACHE,
        plans,
        max_gb=cfg.data.cache_max_gb,
        min_overlap=cfg.data.min_channel_overlap,
    )
    by_id = {c.case_id: c for c in manifest.training}
    if info.is_main:
        cache.ensure(manifest.training)
    ddp.barrier(info)
    if cfg.train.num_workers < 0:
        cfg = _with_workers(cfg, default_workers(device.split(":")[0]))
    results: dict[str, Any] = {}
    limit = cfg.train.time_limit_minutes * 60.0
    end = t_start + limit if limit > 0 else math.inf
    reserved = 0.0  # seconds the trained folds left for after_training
    folds = _fold_list(cfg, splits)
    for i, k in enumerate(folds):
        train_cases, val_cases = _fold_cases(cfg, plans, splits[k], k, cache, by_id)
        stop_at = _fold_stop_at(end, reserved, len(folds) - i)
        fdir = out / f"fold_{k}"
        trainer = FoldTrainer(
            fdir,
            plans,
            cfg,
            train_cases,
            val_cases,
            device=device,
            dist=info,
            stop_at=stop_at,
            reserve_factor=reserve_factor,
            progress=progress,
        )
        results[f"fold_{k}"] = run_epochs(trainer, resume)
        reserved += trainer.reserve_s()
    if info.is_main and after_training is not None:
        after_training(out, folds, manifest, end)
    return results


def _fold_cases(
    cfg: RunConfig,
    plans: Plans,
    split: dict[str, list[str]],
    k: int,
    cache: PreprocessedCache,
    by_id: dict[str, Any],
) -> tuple[list[dict], list[dict]]:
    """Fold ``k``'s cached training cases (padded for sampling) and validation cases."""
    missing = [c for c in split["train"] + split["val"] if c not in by_id]
    if missing:
        raise MedsegError(f"splits.json fold {k} names cases not in the manifest: {missing[:5]}")
    train_cases = load_cached(
        cache.ensure([by_id[c] for c in split["train"]]),
        plans.num_classes,
        pad=PadForSamplingd.from_plans(plans, cfg.augment),
    )
    val_cases = load_cached(
        cache.ensure([by_id[c] for c in split["val"]]), plans.num_classes, indices=False
    )
    return train_cases, val_cases


def _fold_stop_at(end: float, reserved: float, folds_left: int) -> float:
    """When the next fold must be done: an equal share of the time left before ``end`` once
    what earlier folds reserved for after training is kept (``inf`` without a time limit)."""
    if not math.isfinite(end):
        return math.inf
    now = time.perf_counter()
    return now + max(end - now - reserved, 0.0) / folds_left


def _with_workers(cfg: RunConfig, n: int) -> RunConfig:
    return replace(cfg, train=replace(cfg.train, num_workers=n))

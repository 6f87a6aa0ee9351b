"""``medseg train`` end to end: train the configured fold(s), then decide each fold's
post-processing on its validation predictions (the one place that chains training and
inference)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medseg.data.manifest import Manifest
from medseg.training.config import RunConfig
from medseg.training.run import train
from medseg.workflows.postprocess_decision import decide_run_postprocessing

logger = logging.getLogger(__name__)


def decide_after_fold(run_dir: Path, fold: int, manifest: Manifest) -> None:
    """Write ``RUN_DIR/postprocessing.json`` from fold ``fold``'s validation predictions."""
    path = decide_run_postprocessing(run_dir, fold, manifest.path, manifest.data_root)
    logger.info("post-processing decision written to %s", path)


def train_and_decide(
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train as :func:`medseg.training.run.train`; after each fold decide its post-processing.

    The decision runs on rank 0 when ``cfg.train.postprocess_decision`` is true (the default)
    and writes ``RUN_DIR/postprocessing.json``, which ``medseg predict --postprocess auto``
    applies. Returns ``{"fold_<k>": metrics}`` as training does.
    """
    hook = decide_after_fold if cfg.train.postprocess_decision else None
    return train(cfg, out, resume=resume, force=force, progress=progress, after_fold=hook)

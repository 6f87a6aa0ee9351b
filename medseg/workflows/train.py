"""``medseg train`` end to end: train the configured fold(s), then decide the post-processing
once, on the pooled validation predictions of the folds trained (the one place that chains
training and inference)."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from medseg.data.manifest import Manifest
from medseg.networks.loading import available_folds
from medseg.training.config import RunConfig
from medseg.training.run import train
from medseg.workflows.postprocess_decision import decide_run_postprocessing

logger = logging.getLogger(__name__)

# Seconds each fold leaves for the decision, per second of its validation, under a time limit.
# The decision predicts the same cases on their source grids (overlap 0.5 instead of 0.25,
# resampling, reading the scans) and then evaluates every candidate on them: with the tiny
# network of benchmarks/refactor_parity.sh on MSD Hippocampus (42 cases) it took 17 s for a
# 2.2 s validation, about 2-3 validations with wider networks. Beyond the reserve the decision
# is cut short where its deadline passes, so the time limit holds either way.
DECISION_RESERVE_FACTOR = 4.0


def decide_after_training(
    run_dir: Path,
    folds: list[int],
    manifest: Manifest,
    deadline: float,
    *,
    allow_outside_root: bool = False,
) -> None:
    """Write ``RUN_DIR/postprocessing.json`` from the pooled validation predictions of ``folds``.

    ``deadline`` is the ``time.perf_counter()`` value at which the command's time limit ends
    (``inf``: none). Folds of ``run_dir`` trained by an earlier command are not pooled; a
    WARNING names them, since ``medseg predict`` ensembles every trained fold.
    """
    earlier = [k for k in available_folds(run_dir) if k not in folds]
    if earlier:
        logger.warning(
            "post-processing is decided on fold(s) %s trained now, not on fold(s) %s trained "
            "before, which medseg predict also ensembles",
            folds,
            earlier,
        )
    path = decide_run_postprocessing(
        run_dir,
        folds,
        manifest.path,
        manifest.data_root,
        deadline=deadline,
        allow_outside_root=allow_outside_root,
    )
    logger.info("post-processing file written to %s", path)  # says when it was skipped


def train_and_decide(
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train as :func:`medseg.training.run.train`, then decide the post-processing once.

    The decision runs on rank 0 after the last fold when ``cfg.train.postprocess_decision``
    is true (the default), on the validation cases of every fold trained, each predicted by
    the fold that held it out, and writes ``RUN_DIR/postprocessing.json``, which ``medseg
    predict --postprocess auto`` applies. ``train.time_limit_minutes`` covers it: the folds
    leave it ``DECISION_RESERVE_FACTOR`` times their validation time and it gets what
    remains (skipped with a WARNING, stated in the file, when nothing does). Returns
    ``{"fold_<k>": metrics}`` as training does.

    ``plans.configuration: auto`` trains several configurations and chooses between them
    (:func:`medseg.workflows.configurations.train_auto`; a resumed single-configuration run
    stays one).
    """
    if cfg.plans.configuration == "auto" and not (resume and (Path(out) / "plans.json").is_file()):
        from medseg.workflows.configurations import train_auto  # it builds on this module

        return train_auto(cfg, out, resume=resume, force=force, progress=progress)
    if not cfg.train.postprocess_decision:
        return train(cfg, out, resume=resume, force=force, progress=progress)
    return train(
        cfg,
        out,
        resume=resume,
        force=force,
        progress=progress,
        after_training=partial(
            decide_after_training, allow_outside_root=cfg.data.allow_outside_root
        ),
        reserve_factor=DECISION_RESERVE_FACTOR,
    )

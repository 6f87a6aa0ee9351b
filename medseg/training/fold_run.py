"""The epoch driver of one fold: train, validate, checkpoint, stop on budget."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np

from medseg.io.atomic import atomic_write_text
from medseg.runtime import distributed as ddp
from medseg.training.checkpoint import save_checkpoint
from medseg.training.loop import FoldTrainer


def _validate_into(tr: FoldTrainer, row: dict[str, Any]) -> tuple[bool, float]:
    t0 = time.perf_counter()
    dice = tr.validate()
    val_s = time.perf_counter() - t0
    tr.val_s = val_s
    new_best = tr.record_validation(dice)
    for k, v in dice.items():
        row[f"val_dice_{tr.plans.labels[k]}"] = v
    row["val_mean_dice"] = float(np.mean(list(dice.values()))) if dice else 0.0
    row["val_ema_dice"] = tr.state.ema_metric
    row["val_s"] = val_s
    return new_best, val_s


def run_epochs(tr: FoldTrainer, resume: bool) -> dict[str, Any]:
    """Train ``tr`` until its epoch or time budget ends; write ``metrics.json``.

    With a time limit (``tr.stop_at``) training stops between steps (:meth:`FoldTrainer.
    out_of_time`), even in the first epoch; the last epoch trained is always validated, so
    ``checkpoint_best.pt`` exists. The learning-rate schedule runs over the fold's training
    time so far plus the time left until ``stop_at``.
    """
    if resume:
        tr.resume()
    s, tc = tr.state, tr.tc
    timed = math.isfinite(tr.stop_at)
    if timed:
        tr.deadline_s = s.elapsed_s + max(tr.stop_at - time.perf_counter(), 1.0)
    tr.log.start(
        tr.deadline_s if timed else tc.epochs,
        s.elapsed_s if timed else s.epoch,
        "seconds" if timed else "epochs",
    )
    try:
        while s.epoch < tc.epochs:
            row: dict[str, Any] = {"epoch": s.epoch}
            row.update(tr.train_epoch(s.epoch))
            s.epoch += 1
            row["step"] = s.step
            # a cut epoch, the last epoch, or no time for another step: stop (every rank
            # agrees: the cut and out_of_time are rank 0's decisions)
            stop = "iterations" in row or s.epoch >= tc.epochs or tr.out_of_time()
            stop = ddp.broadcast_flag(stop, tr.dist)
            validated = s.epoch % tc.val_every == 0 or stop
            if validated:  # every rank validates its share
                new_best, val_s = _validate_into(tr, row)
                s.elapsed_s += val_s
                if new_best and tr.dist.is_main:
                    save_checkpoint(tr.checkpoint_state(), tr.fold_dir / "checkpoint_best.pt")
            row["elapsed_s"] = s.elapsed_s
            s.history.append(row)
            if tr.dist.is_main:
                save_checkpoint(tr.checkpoint_state(), tr.fold_dir / "checkpoint_last.pt")
                tr.log.epoch(row, s.history, s.elapsed_s if timed else s.epoch)
            ddp.barrier(tr.dist)
            # the validation just measured may show that no further step fits
            if stop or (validated and tr.out_of_time()):
                break
    finally:
        tr.log.close()
    return _summary(tr)


def _summary(tr: FoldTrainer) -> dict[str, Any]:
    s = tr.state
    names = {k: v for k, v in tr.plans.labels.items() if k != 0}
    curve = [
        {
            "minutes": round(r["elapsed_s"] / 60.0, 3),
            "epoch": r["epoch"] + 1,
            "mean_dice": r["val_mean_dice"],
            "dice": {n: r.get(f"val_dice_{n}") for n in names.values()},
        }
        for r in s.history
        if "val_mean_dice" in r
    ]
    best_row = next((c for c in curve if c["epoch"] == s.best_epoch), curve[-1] if curve else None)
    waits = [r["data_wait_share"] for r in s.history]
    summary = {
        "fold": tr.fold_dir.name,
        "epochs": s.epoch,
        "steps": s.step,
        "elapsed_s": round(s.elapsed_s, 2),
        "best_metric": s.best_metric,
        "best_epoch": s.best_epoch,
        "best_dice": best_row["dice"] if best_row else {},
        "final_dice": curve[-1]["dice"] if curve else {},
        "data_wait_share": float(np.mean(waits)) if waits else 0.0,
        "it_per_s": float(np.mean([r["it_per_s"] for r in s.history])) if s.history else 0.0,
        "curve": curve,
    }
    if tr.dist.is_main:
        atomic_write_text(tr.fold_dir / "metrics.json", json.dumps(summary, indent=1))
    return summary

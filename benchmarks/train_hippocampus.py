"""Accuracy benchmark: ``medseg train`` defaults on MSD Hippocampus, fold 0 of 5, timed.

Trains with the library (exactly what ``medseg train --manifest M --data-root D --out RUN
--fold 0 --folds 5 --time-limit MINUTES`` does), then writes the validation Dice of each
label against training minutes to ``benchmarks/results/train_hippocampus.json``.

    .venv/bin/python benchmarks/train_hippocampus.py --minutes 30

The target (issue 3) is mean validation Dice >= 0.88 for both labels in 30 minutes on
2 CPU cores. Run it on an otherwise idle machine: shared cores make it slower and noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch

from medseg.io.atomic import atomic_write_text
from medseg.training.config import load_run_config
from medseg.workflows.train import train_and_decide

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "msd_hippocampus"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code (0 when the run completed)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="--time-limit of the run")
    ap.add_argument("--data-root", type=Path, default=DATA)
    ap.add_argument("--manifest", type=Path, default=None, help="default: the repo manifest")
    ap.add_argument("--out", type=Path, default=Path("/tmp/medseg_bench_hippocampus"))
    ap.add_argument("--config", type=Path, default=None, help="optional YAML run config")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument(
        "--result", type=Path, default=ROOT / "benchmarks/results/train_hippocampus.json"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = args.manifest or ROOT / "data_manifests" / "msd_hippocampus.json"
    if not manifest.is_file():
        manifest = args.data_root / "dataset.json"
    overrides = {
        "data.manifest": str(manifest),
        "data.data_root": str(args.data_root),
        "data.fold": 0,
        "data.folds": 5,
        "train.time_limit_minutes": args.minutes,
        "train.threads": args.threads or None,
    }
    cfg = load_run_config(args.config, overrides)
    t0 = time.perf_counter()
    summary = train_and_decide(cfg, args.out, force=True)["fold_0"]
    wall = time.perf_counter() - t0
    result = {
        "benchmark": "train_hippocampus",
        "command": f"medseg train --manifest {manifest} --data-root {args.data_root} "
        f"--out {args.out} --fold 0 --folds 5 --time-limit {args.minutes}"
        + (f" --config {args.config}" if args.config else ""),
        # The resolved run config (defaults + the YAML + the flags above), as the run wrote it.
        "config": (args.out / "config.yaml").read_text(),
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "wall_minutes": round(wall / 60, 2),
        "training_minutes": round(summary["elapsed_s"] / 60, 2),
        "epochs": summary["epochs"],
        "steps": summary["steps"],
        "data_wait_share": round(summary["data_wait_share"], 4),
        "best_dice": summary["best_dice"],
        "final_dice": summary["final_dice"],
        "curve": summary["curve"],
        "plans": json.loads((args.out / "plans.json").read_text()),
        "postprocessing": _postprocessing(args.out, summary["best_dice"]),
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.result, json.dumps(result, indent=1))
    print(f"{'minutes':>8} {'epoch':>6} " + " ".join(f"{k:>10}" for k in summary["best_dice"]))
    for point in summary["curve"]:
        dice = " ".join(f"{v:10.3f}" for v in point["dice"].values())
        print(f"{point['minutes']:8.1f} {point['epoch']:6d} {dice}")
    print(f"best: {summary['best_dice']}  (wrote {args.result})")
    post = result["postprocessing"]
    if post:
        print(f"after the post-processing decided on validation: {post['final_dice']}")
    return 0


def _postprocessing(run: Path, best: dict[str, float]) -> dict[str, object] | None:
    """Validation Dice before/after the post-processing ``medseg train`` decides (by name)."""
    path = run / "postprocessing.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())["report"]
    names = list(best)  # label names in label order (1, 2, ...)
    by_name = {  # the report is keyed by label value
        key: {names[int(k) - 1]: v for k, v in report[key].items()} for key in ("baseline", "final")
    }
    return {
        "config": json.loads(path.read_text())["config"],
        "baseline_dice": by_name["baseline"],
        "final_dice": by_name["final"],
        "decide_seconds": report.get("decide_seconds"),
    }


if __name__ == "__main__":
    raise SystemExit(main())

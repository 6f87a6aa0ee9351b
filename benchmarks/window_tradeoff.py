"""Sliding-window tile size and overlap: Dice against time, to choose ``medseg predict``'s defaults.

For every (tile scale, overlap) pair, a trained run or bundle predicts held-out cases with
Gaussian blending, no TTA and no post-processing (CPU); the table gives the mean Dice per
label and the seconds of network inference (``Prediction.timings["inference"]``) summed over
the cases. The tile is the training patch times the scale, rounded down to a multiple of the
network's total stride (larger tiles see more context, fewer windows overlap).

Cases: ``--manifest M --data-root D`` (its ``"test"`` list, else the validation split of
``--fold`` from ``RUN/splits.json``; images and labels), or ``--ct-phantoms N``: the held-out
synthetic CT phantoms of the ``phantom_ct`` bundle (``medseg synth-ct --seed 1``).

    .venv/bin/python benchmarks/window_tradeoff.py --model bundles/phantom_ct --ct-phantoms 6
    .venv/bin/python benchmarks/window_tradeoff.py --model RUN --manifest \
        data_manifests/msd_hippocampus.json --data-root ../shared/data/msd_hippocampus

Writes ``benchmarks/results/window_tradeoff_<name>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.inference import Predictor
from medseg.inference.config import InferConfig
from medseg.io import load_volume
from medseg.io.atomic import atomic_write_text
from medseg.metrics import dice_per_label
from medseg.networks.loading import load_models

RESULTS = Path(__file__).resolve().parent / "results"


def _cases(args: argparse.Namespace, tmp: Path) -> list[tuple[Path, Path]]:
    """(image, label) paths of the held-out cases."""
    if args.ct_phantoms:
        from medseg.data.cohorts import write_ct_cohort

        manifest = write_ct_cohort(tmp / "ct", args.ct_phantoms, seed=1)
        root = manifest.parent
        entries = json.loads(manifest.read_text())["training"]
    else:
        root = args.data_root
        data = json.loads(args.manifest.read_text())
        entries = data.get("test") or data["training"]
        if not data.get("test"):
            splits = json.loads((args.model / "splits.json").read_text())
            val = set(splits[args.fold]["val"])
            entries = [e for e in entries if Path(e["image"]).name.split(".")[0] in val]
    out = [(root / e["image"], root / e["label"]) for e in entries if isinstance(e, dict)]
    return out[: args.max_cases] if args.max_cases else out


def _tile(patch: tuple[int, ...], strides: Any, scale: float) -> tuple[int, int, int]:
    total = [math.prod(s[a] for s in strides) if strides else 1 for a in range(3)]
    return tuple(max(t, int(p * scale) // t * t) for p, t in zip(patch, total, strict=True))  # type: ignore[return-value]


def run_grid(args: argparse.Namespace, cases: list[tuple[Path, Path]]) -> list[dict[str, Any]]:
    loaded = load_models(args.model, folds=(args.fold,) if args.fold is not None else ())
    plans = loaded.plans
    labels = sorted(k for k in plans.labels if k != 0)
    volumes = [
        (load_volume(i), np.asarray(load_volume(lab, allow_empty=True).array)) for i, lab in cases
    ]
    rows = []
    for scale in args.tile_scales:
        tile = _tile(plans.patch_size, plans.network.strides, scale)
        for overlap in args.overlaps:
            config = InferConfig(device="cpu", overlap=overlap, postprocess="none", tta=False)
            predictor = Predictor(
                loaded.models, dataclasses.replace(plans, patch_size=tile), config=config
            )
            dice: dict[int, list[float]] = {k: [] for k in labels}
            seconds = 0.0
            for volume, ref in volumes:
                pred = predictor.predict(volume)
                seconds += pred.timings["inference"]
                for k, v in dice_per_label(pred.mask.array, ref, labels).items():
                    dice[k].append(float(v))
            row = {
                "tile": list(tile),
                "tile_scale": scale,
                "overlap": overlap,
                "inference_s": round(seconds, 2),
                "dice": {str(k): round(float(np.nanmean(v)), 4) for k, v in dice.items()},
            }
            row["mean_dice"] = round(float(np.mean(list(row["dice"].values()))), 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="run directory or bundle")
    ap.add_argument("--manifest", type=Path, default=None)
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--ct-phantoms", type=int, default=0, help="use N held-out CT phantoms")
    ap.add_argument("--fold", type=int, default=None)
    ap.add_argument("--max-cases", type=int, default=0)
    ap.add_argument("--tile-scales", type=float, nargs="+", default=(1.0, 1.5))
    ap.add_argument("--overlaps", type=float, nargs="+", default=(0.25, 0.5, 0.625))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--name", default=None, help="result name (default: the model folder's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases(args, Path(tmp))
        start = time.perf_counter()
        rows = run_grid(args, cases)
    report = {
        "model": str(args.model),
        "cases": len(cases),
        "threads": torch.get_num_threads(),
        "total_s": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    name = args.name or args.model.name
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / f"window_tradeoff_{name}.json", json.dumps(report, indent=2) + "\n")
    print(f"{'tile':>16} {'overlap':>7} {'seconds':>8} {'mean Dice':>9}")
    for r in rows:
        print(f"{r['tile']!s:>16} {r['overlap']:>7} {r['inference_s']:>8} {r['mean_dice']:>9}")


if __name__ == "__main__":
    main()

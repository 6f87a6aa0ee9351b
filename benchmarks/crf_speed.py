"""Speed, peak memory and Dice effect of medseg's torch dense CRF (2 classes, 5 iterations).

Each size runs in a fresh child process so its peak RSS (``resource.getrusage``) is its own;
the parent prints a table and writes ``benchmarks/results/crf_speed.json``. pydensecrf is
compared when importable (it is not a medseg dependency; reported as skipped otherwise).
Reference, measured once on the same kind of machine (2 vCPU AMD EPYC Zen 3, 2 classes,
5 mean-field iterations): pydensecrf2 1.1 (single-threaded C++) took 2.8 s / 0.5 GB at 2.1 Mvox
and 10.5 s / 2.0 GB at 8.4 Mvox; this script re-measures it when pydensecrf is importable.
On a shared machine wall time depends on the load: the JSON records the 1-minute load average
and the process CPU time next to the wall time.

Usage::

    .venv/bin/python benchmarks/crf_speed.py [--threads 2 1] [--sizes 128,128,128 256,256,128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

RESULTS = Path(__file__).resolve().parent / "results" / "crf_speed.json"
SPACING = (1.0, 1.0, 1.5)


def phantom(shape: tuple[int, int, int], seed: int = 0):
    """Image, reference labels and noisy 2-class probabilities on ``shape`` (spacing SPACING)."""
    rng = np.random.default_rng(seed)
    axes = [np.arange(n, dtype=np.float32) * s for n, s in zip(shape, SPACING, strict=True)]
    ii, jj, kk = np.meshgrid(*axes, indexing="ij")
    centre = [a[-1] / 2 for a in axes]
    radii = [0.3 * a[-1] for a in axes]
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip((ii, jj, kk), centre, radii, strict=True))
    ref = (dist < 1).astype(np.uint8)
    del ii, jj, kk, dist
    shading = ndimage.zoom(rng.normal(0, 0.2, (4, 4, 4)), [n / 4 for n in shape], order=1)
    image = (ref + shading + rng.normal(0, 0.3, shape)).astype(np.float32)
    noise = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 2.0)
    logit = (2.0 * ref - 1.0) + 1.5 * noise / noise.std() + rng.normal(0, 1, shape)
    p1 = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return image, ref, np.stack([1 - p1, p1])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    total = a.sum() + b.sum()
    return float(2 * inter / total) if total else 1.0


def run_child(shape: tuple[int, int, int], threads: int) -> dict:
    """Time one size in this process; returns the row for the table."""
    from medseg.postprocessing import CRFConfig, dense_crf

    torch.set_num_threads(threads)
    image, ref, probs = phantom(shape)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    config = CRFConfig(iterations=5, device="cpu")
    load_before = os.getloadavg()[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    out = dense_crf(probs, image, SPACING, config)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {
        "shape": list(shape),
        "mvox": round(float(np.prod(shape)) / 1e6, 2),
        "classes": 2,
        "iterations": 5,
        "threads": threads,
        "seconds": round(seconds, 2),
        "cpu_seconds_all_threads": round(cpu_seconds, 2),
        "load_average_1min_before": round(load_before, 2),
        "peak_rss_mb": round(rss_peak),
        "rss_increase_mb": round(rss_peak - rss_before),
        "dice_noisy_argmax": round(dice(probs.argmax(0) == 1, ref == 1), 4),
        "dice_crf": round(dice(out.argmax(0) == 1, ref == 1), 4),
    }
    row["pydensecrf"] = time_pydensecrf(probs, image)
    return row


def time_pydensecrf(probs: np.ndarray, image: np.ndarray) -> dict:
    """Same problem with pydensecrf when it is importable, else ``{"skipped": reason}``."""
    try:
        import pydensecrf.densecrf as dcrf  # type: ignore[import-not-found]
        from pydensecrf.utils import create_pairwise_bilateral, create_pairwise_gaussian  # type: ignore[import-not-found]
    except ImportError as exc:
        return {"skipped": f"pydensecrf not importable ({exc.name})"}
    shape = image.shape
    start = time.perf_counter()
    crf = dcrf.DenseCRF(int(np.prod(shape)), probs.shape[0])
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(probs, 1e-6, 1)).reshape(2, -1)))
    sdims = [3.0 / s for s in SPACING]
    crf.addPairwiseEnergy(create_pairwise_gaussian(sdims, shape), compat=1)
    bdims = [10.0 / s for s in SPACING]
    z = (image - image.mean()) / image.std() / 0.25
    crf.addPairwiseEnergy(create_pairwise_bilateral(bdims, (1.0,), z[..., None], 3), compat=3)
    q = np.array(crf.inference(5)).reshape(probs.shape)
    return {"seconds": round(time.perf_counter() - start, 2), "labels": q.argmax(0).sum().item()}


def real_data_effect(folder: Path, n_cases: int) -> dict:
    """Dice of noisy probabilities vs CRF on real MRI (MSD hippocampus layout, labels 1 and 2).

    The probabilities are the one-hot reference plus smooth and white logit noise: this shows
    how the CRF behaves on real intensities, not what it does to a trained network's errors.
    """
    from medseg.io import load_volume
    from medseg.metrics import dice_per_label
    from medseg.postprocessing import CRFConfig, dense_crf

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    configs = {
        f"bilateral_{w:g}mm": CRFConfig(device="cpu", bilateral_sigma_mm=w) for w in (3, 5, 10)
    }
    configs["spatial_only"] = CRFConfig(device="cpu", bilateral_weight=0.0)
    scores: dict[str, list[list[float]]] = {"noisy_argmax": [], **{k: [] for k in configs}}
    for path in sorted((folder / "imagesTr").glob("*.nii.gz"))[:n_cases]:
        image = load_volume(path)
        ref = np.asarray(load_volume(folder / "labelsTr" / path.name).array).astype(np.uint8)
        onehot = np.stack([ref == c for c in range(3)]).astype(np.float32)
        noise = ndimage.gaussian_filter(rng.normal(0, 1, onehot.shape), (0, 1.5, 1.5, 1.5))
        logits = 3.0 * onehot + noise / noise.std() + 0.5 * rng.normal(0, 1, onehot.shape)
        probs = np.exp(logits)
        probs = (probs / probs.sum(0, keepdims=True)).astype(np.float32)
        scores["noisy_argmax"].append(list(dice_per_label(probs.argmax(0), ref, [1, 2]).values()))
        for name, config in configs.items():
            out = dense_crf(probs, image.array.astype(np.float32), image.spacing, config)
            scores[name].append(list(dice_per_label(out.argmax(0), ref, [1, 2]).values()))
    return {
        "cases": n_cases,
        "mean_dice_labels_1_2": {k: np.round(np.mean(v, 0), 4).tolist() for k, v in scores.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--sizes", nargs="+", default=["128,128,128", "256,256,128"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--real-data", type=Path, help="MSD hippocampus folder (imagesTr/, labelsTr/), optional"
    )
    parser.add_argument("--real-cases", type=int, default=8)
    args = parser.parse_args(argv)
    if args.child:
        shape = tuple(int(v) for v in args.child.split(","))
        print(json.dumps(run_child(shape, args.threads[0])))  # read by the parent
        return 0
    rows = []
    for size in args.sizes:
        for threads in args.threads:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", size, "--threads", str(threads)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"{'shape':>16} {'Mvox':>5} {'thr':>3} {'s (5 it)':>9} {'CPU s':>6} {'load':>5} "
        f"{'peak RSS MB':>12} {'+RSS MB':>8} {'Dice noisy':>11} {'Dice CRF':>9}  pydensecrf"
    )
    for r in rows:
        pyd = r["pydensecrf"].get("seconds", "skipped")
        print(
            f"{'x'.join(map(str, r['shape'])):>16} {r['mvox']:>5} {r['threads']:>3} "
            f"{r['seconds']:>9} {r['cpu_seconds_all_threads']:>6} "
            f"{r['load_average_1min_before']:>5} "
            f"{r['peak_rss_mb']:>12} {r['rss_increase_mb']:>8} {r['dice_noisy_argmax']:>11} "
            f"{r['dice_crf']:>9}  {pyd}"
        )
    payload = {
        "benchmark": "medseg.postprocessing.dense_crf, 2 classes, 5 mean-field iterations, CPU",
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "spacing_mm": list(SPACING),
        "reference_pydensecrf2_facts_md": {"2.1_mvox_s": 2.8, "8.4_mvox_s": 10.5},
        "rows": rows,
    }
    if args.real_data is not None:
        payload["real_data"] = real_data_effect(args.real_data, args.real_cases)
        for name, value in payload["real_data"]["mean_dice_labels_1_2"].items():
            print(f"real data ({args.real_cases} cases) {name:>16}: Dice 1/2 = {value}")
    from medseg.io.atomic import atomic_write_text  # lazy, as every medseg import here

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

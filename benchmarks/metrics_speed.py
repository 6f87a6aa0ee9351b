"""Speed and agreement of medseg's HD95 / NSD against MONAI on large masks.

Builds two perturbed ellipsoids on a 512x512x300 grid with anisotropic spacing, then times, in
one process on the same masks:

- medseg ``compute_case_metrics`` (Dice, IoU, volumes, HD, HD95, ASSD, NSD, BF1 together) with
  the KD-tree search (default) and with the distance-transform search;
- MONAI ``HausdorffDistanceMetric(percentile=95)`` and ``compute_surface_dice``.

Prints a table (seconds, ratio to medseg, values, absolute differences) and writes
``benchmarks/results/metrics_speed.json``. Usage::

    .venv/bin/python benchmarks/metrics_speed.py [--shape 512 512 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.atomic import atomic_write_text
from medseg.metrics import compute_case_metrics

SPACING = (0.7, 0.7, 1.5)
TOLERANCE_MM = 1.0


def ellipsoid(
    shape: tuple[int, int, int], centre: np.ndarray, radii: np.ndarray, phase: np.ndarray
) -> np.ndarray:
    """Boolean ellipsoid (voxel units) whose radius wobbles by about 4% with the direction."""
    out = np.zeros(shape, bool)
    i, j = np.ogrid[: shape[0], : shape[1]]
    x, y = (i - centre[0]) / radii[0], (j - centre[1]) / radii[1]
    azimuth = np.arctan2(y, x)
    for k in range(shape[2]):  # slice by slice to keep memory small
        z = (k - centre[2]) / radii[2]
        r2 = x**2 + y**2 + z**2
        wobble = 0.03 * np.sin(3 * azimuth + phase[0]) * np.cos(2.5 * z + phase[1])
        wobble = wobble + 0.015 * np.sin(7 * azimuth + phase[2])
        out[:, :, k] = r2 <= (1.0 + wobble) ** 2
    return out


def make_masks(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction: two perturbed, slightly shifted and scaled ellipsoids."""
    rng = np.random.default_rng(seed)
    centre = np.array(shape) / 2
    radii = np.array(shape) * np.array([0.3, 0.25, 0.3])
    ref = ellipsoid(shape, centre, radii, rng.uniform(0, 2 * np.pi, 3))
    shift = np.array([3.0, -2.0, 1.0])
    pred = ellipsoid(shape, centre + shift, radii * 0.98, rng.uniform(0, 2 * np.pi, 3))
    return pred, ref


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_monai(pred: np.ndarray, ref: np.ndarray, repeats: int) -> dict[str, Any]:
    import torch
    from monai.metrics import HausdorffDistanceMetric, compute_surface_dice

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
    yp = torch.from_numpy(pred[None, None].astype(np.float32))
    yt = torch.from_numpy(ref[None, None].astype(np.float32))
    hd_metric = HausdorffDistanceMetric(include_background=True, percentile=95)
    t_hd, hd95 = timed(lambda: float(hd_metric(yp, yt, spacing=SPACING)), repeats)
    t_nsd, nsd = timed(
        lambda: float(
            compute_surface_dice(yp, yt, [TOLERANCE_MM], include_background=True, spacing=SPACING)
        ),
        repeats,
    )
    return {"hd95_s": t_hd, "hd95": hd95, "nsd_s": t_nsd, "nsd": nsd}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    ap.add_argument("--repeats", type=int, default=3, help="best of N (EDT: once)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    shape = tuple(args.shape)
    t0 = time.perf_counter()
    pred, ref = make_masks(shape)  # type: ignore[arg-type]
    t_make = time.perf_counter() - t0
    res: dict[str, Any] = {"shape": shape, "spacing": SPACING, "tolerance_mm": TOLERANCE_MM}
    res["voxels_ref"], res["voxels_pred"] = int(ref.sum()), int(pred.sum())
    for method in ("kdtree", "edt"):
        t, (row,) = timed(
            lambda m=method: compute_case_metrics(
                pred, ref, SPACING, [1], tolerance_mm=TOLERANCE_MM, method=m
            ),
            args.repeats if method == "kdtree" else 1,
        )
        res[f"medseg_{method}"] = {"all_metrics_s": t, **row}
    res["monai"] = run_monai(pred, ref, args.repeats)
    res["platform"] = {"python": platform.python_version(), "machine": platform.machine()}
    med, mon = res["medseg_kdtree"], res["monai"]
    rows = [
        ("medseg all metrics (kdtree)", med["all_metrics_s"], med["hd95"], med["nsd"]),
        ("medseg all metrics (edt)", res["medseg_edt"]["all_metrics_s"], None, None),
        ("MONAI HausdorffDistanceMetric p95", mon["hd95_s"], mon["hd95"], None),
        ("MONAI compute_surface_dice", mon["nsd_s"], None, mon["nsd"]),
        ("MONAI HD95 + NSD", mon["hd95_s"] + mon["nsd_s"], mon["hd95"], mon["nsd"]),
    ]
    print(f"masks {shape} spacing {SPACING} mm (built in {t_make:.1f} s)")
    print(f"{'what':36s} {'seconds':>8s} {'x medseg':>9s} {'HD95 mm':>9s} {'NSD@1mm':>9s}")
    for name, secs, hd95, nsd in rows:
        ratio = secs / med["all_metrics_s"]
        h = f"{hd95:9.4f}" if hd95 is not None else " " * 9
        n = f"{nsd:9.5f}" if nsd is not None else " " * 9
        print(f"{name:36s} {secs:8.2f} {ratio:9.2f} {h} {n}")
    res["abs_diff"] = {
        "hd95_mm": abs(med["hd95"] - mon["hd95"]),
        "nsd": abs(med["nsd"] - mon["nsd"]),
        "edt_vs_kdtree_hd95_mm": abs(med["hd95"] - res["medseg_edt"]["hd95"]),
    }
    print(
        f"|medseg - MONAI|: HD95 {res['abs_diff']['hd95_mm']:.2e} mm, "
        f"NSD {res['abs_diff']['nsd']:.2e}; "
        f"speed-up vs MONAI HD95+NSD: {(mon['hd95_s'] + mon['nsd_s']) / med['all_metrics_s']:.1f}x"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "metrics_speed.json"
    atomic_write_text(path, json.dumps(res, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()

"""Speed and agreement of medseg's HD95 / ASSD / NSD against MONAI on large masks.

Builds two perturbed ellipsoids on a 512x512x300 grid with anisotropic spacing (0.7, 0.7, 1.5)
mm, then times, in one process on the same masks (best of ``--repeats``; wall and CPU time):

- medseg ``surface_distances`` + ``surface_metrics`` on the whole volumes (HD, HD95, ASSD, NSD
  and BF1 from one pass), with the default search (``kdtree``: lattice look-ups, then a
  KD-tree) and with ``edt`` (distance transform of the surfaces' box; once: it is slow);
- medseg ``compute_case_metrics`` (Dice, IoU, volumes and every distance together);
- MONAI ``HausdorffDistanceMetric(percentile=95)``, ``compute_average_surface_distance``
  (``symmetric=True``: the ASSD) and ``compute_surface_dice``, one call each, as a user would
  call them for the three numbers.

Prints a table (seconds, MONAI's three calls over medseg, values) and the largest absolute
difference of each value against MONAI, and writes ``benchmarks/results/metrics_speed.json``.
MONAI returns float32, so agreement is to about 1e-6 mm (a float32 ulp at 5 mm is 5e-7).
Usage::

    .venv/bin/python benchmarks/metrics_speed.py [--shape 512 512 300] [--repeats 3] [--skip-edt]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medseg.io.atomic import atomic_write_text
from medseg.metrics import compute_case_metrics, surface_distances, surface_metrics

SPACING = (0.7, 0.7, 1.5)
TOLERANCE_MM = 1.0
VALUES = ("hd95", "assd", "nsd")


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


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Best wall time (s), best CPU time of this process (s) and the last result of ``fn``."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, out


def run_medseg(
    pred: np.ndarray, ref: np.ndarray, repeats: int, skip_edt: bool
) -> dict[str, dict[str, Any]]:
    """medseg's surface entry point (both searches) and the whole per-case row."""
    out: dict[str, dict[str, Any]] = {}
    for method in ("kdtree",) if skip_edt else ("kdtree", "edt"):
        wall, cpu, row = timed(
            lambda m=method: surface_metrics(  # type: ignore[misc]
                surface_distances(pred, ref, SPACING, method=m), TOLERANCE_MM
            ),
            repeats if method == "kdtree" else 1,
        )
        out[f"surface_{method}"] = {"wall_s": wall, "cpu_s": cpu, **row}
    wall, cpu, (row,) = timed(
        lambda: compute_case_metrics(pred, ref, SPACING, [1], tolerance_mm=TOLERANCE_MM), repeats
    )
    out["case_metrics"] = {"wall_s": wall, "cpu_s": cpu, **row}
    return out


def run_monai(pred: np.ndarray, ref: np.ndarray, repeats: int) -> dict[str, dict[str, Any]]:
    """MONAI's three calls, each timed on tensors built once beforehand."""
    import torch
    from monai.metrics import (
        HausdorffDistanceMetric,
        compute_average_surface_distance,
        compute_surface_dice,
    )

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
    yp = torch.from_numpy(pred[None, None].astype(np.float32))
    yt = torch.from_numpy(ref[None, None].astype(np.float32))
    hd_metric = HausdorffDistanceMetric(include_background=True, percentile=95)
    calls: dict[str, Callable[[], Any]] = {
        "hd95": lambda: hd_metric(yp, yt, spacing=SPACING),
        "assd": lambda: compute_average_surface_distance(
            yp, yt, include_background=True, symmetric=True, spacing=SPACING
        ),
        "nsd": lambda: compute_surface_dice(
            yp, yt, [TOLERANCE_MM], include_background=True, spacing=SPACING
        ),
    }
    out: dict[str, dict[str, Any]] = {}
    for key, call in calls.items():
        wall, cpu, value = timed(call, repeats)
        out[key] = {"wall_s": wall, "cpu_s": cpu, key: float(value)}
    out["total"] = {
        "wall_s": sum(out[k]["wall_s"] for k in VALUES),
        "cpu_s": sum(out[k]["cpu_s"] for k in VALUES),
        **{k: out[k][k] for k in VALUES},
    }
    return out


def print_table(res: dict[str, Any]) -> None:
    """The timing table, MONAI's three calls over each row, and the differences."""
    monai, med = res["monai"], res["medseg"]
    rows = [(f"medseg {k}", v) for k, v in med.items()]
    rows += [(f"MONAI {k}", v) for k, v in monai.items()]
    print(f"{'what':26s} {'wall s':>7s} {'cpu s':>7s} {'MONAI/x':>8s} ", end="")
    print(f"{'HD95 mm':>10s} {'ASSD mm':>10s} {'NSD@1mm':>9s}")
    total = monai["total"]["wall_s"]
    for name, row in rows:
        vals = [f"{row[k]:10.6f}" if k in row else " " * 10 for k in VALUES]
        print(
            f"{name:26s} {row['wall_s']:7.2f} {row['cpu_s']:7.2f} {total / row['wall_s']:8.2f} ",
            end="",
        )
        print(" ".join(vals))
    for name, diff in res["abs_diff"].items():
        print(f"|{name} - MONAI|: " + ", ".join(f"{k} {v:.1e}" for k, v in diff.items()))
    s = res["speedup"]
    print(
        f"speed-up over MONAI HD95 + ASSD + NSD (wall / CPU): surface_distances "
        f"{s['surface_wall']:.1f}x / {s['surface_cpu']:.1f}x, compute_case_metrics "
        f"{s['case_wall']:.1f}x / {s['case_cpu']:.1f}x; load average {res['load_average']}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    ap.add_argument("--repeats", type=int, default=3, help="best of N (EDT: once)")
    ap.add_argument("--skip-edt", action="store_true", help="leave out the slow EDT search")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    shape = tuple(args.shape)
    t0 = time.perf_counter()
    pred, ref = make_masks(shape)  # type: ignore[arg-type]
    t_make = time.perf_counter() - t0
    res: dict[str, Any] = {"shape": shape, "spacing": SPACING, "tolerance_mm": TOLERANCE_MM}
    res["voxels_ref"], res["voxels_pred"] = int(ref.sum()), int(pred.sum())
    res["load_average"] = [round(x, 2) for x in os.getloadavg()]
    res["medseg"] = run_medseg(pred, ref, args.repeats, args.skip_edt)
    res["monai"] = run_monai(pred, ref, args.repeats)
    res["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    res["platform"] = {"python": platform.python_version(), "machine": platform.machine()}
    total = res["monai"]["total"]
    res["abs_diff"] = {
        name: {k: abs(row[k] - total[k]) for k in VALUES} for name, row in res["medseg"].items()
    }
    surf, case = res["medseg"]["surface_kdtree"], res["medseg"]["case_metrics"]
    res["speedup"] = {
        "surface_wall": total["wall_s"] / surf["wall_s"],
        "surface_cpu": total["cpu_s"] / surf["cpu_s"],
        "case_wall": total["wall_s"] / case["wall_s"],
        "case_cpu": total["cpu_s"] / case["cpu_s"],
    }
    print(f"masks {shape} spacing {SPACING} mm (built in {t_make:.1f} s)")
    print_table(res)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "metrics_speed.json"
    atomic_write_text(path, json.dumps(res, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()

"""Inference backends, one process, interleaved: torch vs ONNX Runtime vs OpenVINO vs plain MONAI.

The network is ``predict_throughput.py``'s light UNet (16..256, 2 residual units, seeded random
weights) in a run directory; the cases are seeded CT phantoms written as NIfTI (LPS). Sides:

* ``monai``: ``predict_throughput.plain_monai`` (MONAI transforms, ``sliding_window_inference``,
  ``Invertd``), the reference of the ratio column;
* ``torch``, ``onnxruntime``, ``openvino``: ``medseg predict --backend B`` (CLI, in-process).

Every side runs once on a small case first (imports, kernel set-up, the ONNX export, which is
timed separately). Then ``--reps`` rounds of A-B-C-D (each round one pass over every case per
side), so a drifting load on a shared machine hits every side alike; the 1-minute load average
is recorded before each pass. Parity: the blended probabilities on the preprocessed grid
(float32) of each ONNX backend against torch on one case (``Predictor.network_probabilities``),
max absolute difference, and the Dice between the masks written by each backend and torch's.

A second table times one forward pass of ``--sw-batch-size`` patch windows (torch, and each
runtime on an ONNX export with a fixed spatial shape, the patch, and with dynamic spatial axes),
in blocks of 3 forwards per model, the blocks interleaved, ``--reps`` rounds.

Usage::

    .venv/bin/python benchmarks/onnx_backends.py [--cases 2] [--shape 128 128 64] [--reps 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_throughput import LABELS, make_run, plain_monai

from medseg.data.synthetic import make_ct_phantom
from medseg.io import load_volume, write_nifti
from medseg.io.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("torch", "onnxruntime", "openvino")


def run_cli(run: Path, folder: Path, out: Path, backend: str, args: argparse.Namespace) -> float:
    from medseg.cli import main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the per-run summary tables
        rc = main(
            [
                "predict", "--model", str(run), "--input", str(folder), "--output", str(out),
                "--device", "cpu", "--overlap", str(args.overlap),
                "--sw-batch-size", str(args.sw_batch_size), "--no-tta", "--postprocess", "none",
                "--backend", backend,
            ]
        )  # fmt: skip
    if rc != 0:
        raise SystemExit(f"medseg predict --backend {backend} failed with exit code {rc}")
    return time.perf_counter() - start


def dice_between(a_dir: Path, b_dir: Path, names: list[str]) -> float:
    """Smallest per-label Dice between two folders of masks (labels present in either)."""
    worst = 1.0
    for name in names:
        a = load_volume(a_dir / name, allow_empty=True).array
        b = load_volume(b_dir / name, allow_empty=True).array
        for lab in LABELS:
            if lab and ((a == lab).any() or (b == lab).any()):
                inter = np.sum((a == lab) & (b == lab))
                worst = min(worst, 2 * inter / ((a == lab).sum() + (b == lab).sum()))
    return float(worst)


def probability_parity(run: Path, case: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Max |p_backend - p_torch| of the blended float32 probabilities on one case, and the
    preprocessed (cropped, resampled) shape the windows slide over."""
    from medseg.inference.config import InferConfig
    from medseg.inference.predictor import Predictor

    probs = {}
    volume = load_volume(case)
    for backend in BACKENDS:
        cfg = InferConfig(
            device="cpu", backend=backend, overlap=args.overlap, accumulation="float32",
            sw_batch_size=args.sw_batch_size, postprocess="none",
        )  # fmt: skip
        predictor = Predictor.from_path(run, config=cfg)
        pre = predictor.preprocess(volume)
        probs[backend] = predictor.network_probabilities(pre)
    diffs: dict[str, Any] = {b: float((probs[b] - probs["torch"]).abs().max()) for b in BACKENDS}
    return {**diffs, "preprocessed_shape": list(pre.image.shape[1:])}


def shape_table(run: Path, tmp: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Seconds per forward of ``sw_batch_size`` patch windows: fixed vs dynamic spatial axes."""
    from medseg.networks.loading import load_model
    from medseg.networks.onnx_backend import OnnxRuntimeModel, OpenVinoModel
    from medseg.networks.onnx_export import export_onnx

    model, plans = load_model(run, 0)
    files = {
        kind: export_onnx(model, plans, tmp / f"{kind}.onnx", dynamic_spatial=kind == "dynamic")
        for kind in ("fixed", "dynamic")
    }
    x = torch.randn(args.sw_batch_size, 1, *plans.patch_size)
    wrappers = {"onnxruntime": OnnxRuntimeModel, "openvino": OpenVinoModel}
    models: dict[tuple[str, str], Any] = {("torch", "any"): model}
    models.update({(b, k): wrappers[b](p) for b in wrappers for k, p in files.items()})
    reps = 3 * args.reps
    times: dict[tuple[str, str], float] = dict.fromkeys(models, 0.0)
    with torch.inference_mode():
        for m in models.values():
            m(x)  # warm-up
        # blocks of 3 forwards per model, A-B-C-D-E then again: a runtime whose idle threads
        # still spin after its block slows only the first forward of the next block
        for _ in range(args.reps):
            for key, m in models.items():
                for _ in range(3):
                    t = time.perf_counter()
                    m(x)
                    times[key] += time.perf_counter() - t
    return [
        {"backend": b, "spatial": k, "seconds_per_forward": round(t / reps, 3)}
        for (b, k), t in times.items()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=2)
    ap.add_argument("--shape", type=int, nargs=3, default=(128, 128, 64))
    ap.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 3.0))
    ap.add_argument("--patch", type=int, nargs=3, default=(64, 64, 48))
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--sw-batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run = tmp / "run"
        make_run(run, tuple(args.patch), tuple(args.spacing))
        names = []
        for s in range(args.cases):
            img, _ = make_ct_phantom(args.shape, args.spacing, seed=s, axcodes="LPS")
            names.append(write_nifti(img.array, img.affine, tmp / "in" / f"case{s}.nii.gz").name)
        warm, _ = make_ct_phantom((48, 48, 32), args.spacing, seed=99)
        write_nifti(warm.array, warm.affine, tmp / "warm" / "w.nii.gz")
        plain_monai(run, [tmp / "warm" / "w.nii.gz"], tmp / "warm_monai", args.overlap, 4)
        first: dict[str, float] = {}
        for b in BACKENDS:  # the first onnx call exports fold_0/model.onnx (cached after)
            first[b] = round(run_cli(run, tmp / "warm", tmp / f"warm_{b}", b, args), 2)
        seconds: dict[str, float] = dict.fromkeys(("monai", *BACKENDS), 0.0)
        passes = []
        inputs = [tmp / "in" / n for n in names]
        for rep in range(args.reps):
            for side in seconds:
                load = os.getloadavg()[0]
                out = tmp / f"{side}{rep}"
                if side == "monai":
                    t = plain_monai(run, inputs, out, args.overlap, args.sw_batch_size)
                else:
                    t = run_cli(run, tmp / "in", out, side, args)
                seconds[side] += t
                passes.append({"side": side, "seconds": round(t, 2), "load_avg_1min": load})
        parity = probability_parity(run, inputs[0], args)
        dice = {b: dice_between(tmp / "torch0", tmp / f"{b}0", names) for b in BACKENDS}
        shapes = shape_table(run, tmp, args)
    n = args.cases * args.reps
    table = [
        {
            "side": side,
            "seconds_per_case": round(t / n, 3),
            "ratio_to_plain_monai": round(t / seconds["monai"], 3),
            "max_abs_prob_diff_vs_torch": parity.get(side, 0.0) if side != "monai" else None,
            "min_dice_vs_torch": dice.get(side),
        }
        for side, t in seconds.items()
    ]
    result = {
        "cases": args.cases,
        "shape": list(args.shape),
        "spacing_mm": list(args.spacing),
        "patch": list(args.patch),
        "overlap": args.overlap,
        "sw_batch_size": args.sw_batch_size,
        "threads": args.threads,
        "reps": args.reps,
        "preprocessed_shape": parity["preprocessed_shape"],
        "table": table,
        "first_call_seconds_with_export": first,
        "forward_fixed_vs_dynamic_spatial": shapes,
        "passes_interleaved": passes,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "versions": _versions(),
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "onnx_backends.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _versions() -> dict[str, str]:
    import onnxruntime
    import openvino

    return {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


if __name__ == "__main__":
    main()

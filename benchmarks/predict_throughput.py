"""Throughput of ``medseg predict`` against a plain MONAI sliding-window script, in one run.

Both sides use the same network and weights (a light MONAI UNet, random seeded weights, or a
run directory given with ``--run``), the same overlap, window size and sw_batch_size, the same
cases (seeded CT phantoms written as NIfTI) and the same preprocessing (the run's plans):

* medseg: ``medseg predict`` (CLI entry point, in-process): background loading of the next
  case, ``torch.inference_mode``, Gaussian blending, world-coordinate slab-wise inverse.
* plain MONAI: ``LoadVolumed`` + the same preprocessing ``Compose``, ``sliding_window_inference``
  (Gaussian) over softmax windows, ``Invertd`` back to the source grid, argmax, NIfTI write,
  under ``torch.no_grad``, one case after the other. (Windows are blended as probabilities
  on both sides: blending logits instead changes ~1% of voxels of a random-weight network.)

Before timing, both pipelines run once on a small case (imports, oneDNN kernel set-up).

Each side runs twice in A-B-B-A order (seconds summed per side). Prints the wall-clock ratio
(medseg / MONAI; < 1 is faster) and the voxel agreement of the two
outputs, and writes ``benchmarks/results/predict_throughput.json``. Timings on shared machines
vary: compare the ratio from one run, not absolute seconds across runs.

Usage::

    .venv/bin/python benchmarks/predict_throughput.py [--cases 3] [--shape 192 192 96]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medseg.config import to_dict
from medseg.data.synthetic import make_ct_phantom
from medseg.io import load_volume, write_nifti
from medseg.io.atomic import atomic_write_text
from medseg.networks.registry import build_network
from medseg.planning.plans import NetworkSpec, Plans, save_plans

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = {0: "background", 1: "liver", 2: "kidney", 3: "spleen", 4: "bone"}


def make_run(run: Path, patch: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
    """A run directory with a seeded random light UNet (16..256, 2 residual units).

    The light reference network for CPU: 4.8 M parameters, about 10 GFLOP per 96^3 forward,
    0.34 s per 96^3 forward on 2 cores (AMD EPYC Zen 3, torch 2.13.0+cpu, measured once).
    """
    plans = Plans(
        modality="CT",
        labels=LABELS,
        target_spacing=spacing,
        normalization="ct",
        intensity_clip=(-200.0, 400.0),
        intensity_mean=60.0,
        intensity_std=80.0,
        patch_size=patch,
        batch_size=2,
        network=NetworkSpec(name="unet", channels=(16, 32, 64, 128, 256), num_res_units=2),
        crop_foreground=True,
    )
    save_plans(plans, run / "plans.json")
    torch.manual_seed(0)
    net = build_network(plans.network, 1, plans.num_classes)
    pdict = to_dict(plans)
    pdict["labels"] = {str(k): v for k, v in LABELS.items()}
    (run / "fold_0").mkdir(parents=True, exist_ok=True)
    state = {"model": net.state_dict(), "epoch": 0, "best_metric": 0.0, "plans": pdict}
    torch.save(state, run / "fold_0" / "checkpoint_best.pt")


def plain_monai(run: Path, inputs: list[Path], out: Path, overlap: float, sw: int) -> float:
    """The reference script: MONAI transforms, sliding_window_inference, Invertd, argmax."""
    from monai.inferers import sliding_window_inference
    from monai.transforms import Invertd

    from medseg.networks.loading import load_model
    from medseg.preprocessing.pipeline import preprocessing_transforms

    start = time.perf_counter()
    model, plans = load_model(run, 0)
    pre = preprocessing_transforms(plans, keys=("image",), load=True)
    inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)

    def softmax(x: torch.Tensor) -> torch.Tensor:  # blend probabilities, as medseg does
        return torch.softmax(model(x), 1)

    out.mkdir(parents=True, exist_ok=True)
    for path in inputs:
        d = pre({"image": str(path)})
        with torch.no_grad():
            probs = sliding_window_inference(
                d["image"][None], plans.patch_size, sw, softmax, overlap=overlap, mode="gaussian"
            )
        d["pred"] = probs[0]
        d = inv(d)
        labels = torch.argmax(d["pred"], 0).numpy().astype(np.uint8)
        write_nifti(labels, np.asarray(d["pred"].affine), out / path.name)
    return time.perf_counter() - start


def run_medseg(run: Path, folder: Path, out: Path, overlap: float, sw: int) -> float:
    from medseg.cli import main

    start = time.perf_counter()
    rc = main(
        [
            "predict", "--model", str(run), "--input", str(folder), "--output", str(out),
            "--device", "cpu", "--overlap", str(overlap), "--sw-batch-size", str(sw),
            "--no-tta", "--postprocess", "none",
        ]
    )  # fmt: skip
    if rc != 0:
        raise SystemExit(f"medseg predict failed with exit code {rc}")
    return time.perf_counter() - start


def agreement(a_dir: Path, b_dir: Path, names: list[str]) -> dict[str, float]:
    same, total, dices = 0, 0, []
    for name in names:
        a = load_volume(a_dir / name, allow_empty=True).array
        b = load_volume(b_dir / name, allow_empty=True).array
        same += int((a == b).sum())
        total += a.size
        for lab in LABELS:
            if lab and ((a == lab).any() or (b == lab).any()):
                inter = np.sum((a == lab) & (b == lab))
                dices.append(2 * inter / ((a == lab).sum() + (b == lab).sum()))
    return {"voxel_agreement": same / total, "mean_dice_between": float(np.mean(dices))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--shape", type=int, nargs=3, default=(192, 192, 96))
    ap.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 3.0))
    ap.add_argument("--patch", type=int, nargs=3, default=(96, 96, 64))
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--sw-batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        run = tmp / "run"
        make_run(run, tuple(args.patch), tuple(args.spacing))
        inputs = []
        for s in range(args.cases):
            img, _ = make_ct_phantom(args.shape, args.spacing, seed=s, axcodes="LPS")
            inputs.append(write_nifti(img.array, img.affine, tmp / "in" / f"case{s}.nii.gz"))
        warm, _ = make_ct_phantom((48, 48, 32), args.spacing, seed=99)
        warm_in = write_nifti(warm.array, warm.affine, tmp / "warm" / "w.nii.gz")
        plain_monai(run, [warm_in], tmp / "warm_monai", args.overlap, args.sw_batch_size)
        run_medseg(run, tmp / "warm", tmp / "warm_medseg", args.overlap, args.sw_batch_size)
        # A-B-B-A order cancels a linear drift of the machine's load (shared CPUs).
        t_monai, t_medseg, reps = 0.0, 0.0, []
        for n, side in enumerate(("monai", "medseg", "medseg", "monai")):
            load = os.getloadavg()[0]
            if side == "monai":
                t = plain_monai(run, inputs, tmp / f"monai{n}", args.overlap, args.sw_batch_size)
                t_monai += t
            else:
                folder = tmp / f"medseg{n}"
                t = run_medseg(run, tmp / "in", folder, args.overlap, args.sw_batch_size)
                t_medseg += t
            reps.append({"side": side, "seconds": round(t, 2), "load_avg_1min": load})
        agree = agreement(tmp / "monai0", tmp / "medseg1", [p.name for p in inputs])
    result = {
        "cases": args.cases,
        "shape": list(args.shape),
        "spacing_mm": list(args.spacing),
        "patch": list(args.patch),
        "overlap": args.overlap,
        "sw_batch_size": args.sw_batch_size,
        "threads": args.threads,
        "seconds_plain_monai": round(t_monai, 2),
        "seconds_medseg": round(t_medseg, 2),
        "ratio_medseg_over_monai": round(t_medseg / t_monai, 3),
        "runs_abba": reps,
        **{k: round(v, 5) for k, v in agree.items()},
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "predict_throughput.json", json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

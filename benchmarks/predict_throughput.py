"""Issue 20's throughput table: ``medseg predict`` vs plain MONAI, each backend, the body crop.

Every side uses the same network and weights, the same cases, window (the plans' patch),
overlap, ``sw_batch_size``, Gaussian blending of softmax windows, 2 threads, one process:

* ``monai``: the plain MONAI script a MONAI user writes (:func:`plain_monai`): ``LoadVolumed``
  + the run's preprocessing ``Compose``, ``sliding_window_inference`` over softmax windows under
  ``torch.no_grad``, ``Invertd`` of the whole probability map (trilinear) back to the scan,
  argmax, NIfTI write, one case after the other;
* ``medseg_nocrop``: ``medseg predict --backend torch`` with ``body_crop: false`` (``--config``);
* ``torch``, ``onnxruntime``, ``openvino``: ``medseg predict --backend B`` (CT: body crop on).

Model: a seeded random light UNet (16..256, 2 residual units; CT plans at 1.5 mm, patch
96x96x64) or, with ``--model PATH``, the trained weights of a run or bundle, copied into a run
folder in the temporary directory (so the ONNX export is cached there). Cases: seeded CT
phantoms (:func:`medseg.data.synthetic.make_ct_phantom`, LPS NIfTI), ``--air-mm`` of air added
on each in-plane side so the body fills a realistic part of the field of view.

Order: a warm-up pass of every side on a small case (imports, oneDNN kernels, the ONNX export,
timed apart), then ``--rounds`` rounds, one pass over every case per side, odd rounds in
reverse (A B C D E, E D C B A): a load that drifts hits every side alike. The 1-minute load
average is recorded before each pass. Agreement: Dice per label of each side's masks against
the plain script's, each ONNX backend's against medseg torch's, and every side's against the
phantoms' labels (meaningful only for trained weights, ``--model``); parity: max |p_B - p_torch|
of the blended float32 probabilities on the preprocessed grid of case 0.

OpenMP: torch's libgomp workers busy-wait after every parallel region unless
``OMP_WAIT_POLICY=PASSIVE``. On a 2-core machine shared with other jobs, a pipeline that
preprocesses and runs the network in one thread (the plain script) ran its forwards 2-4x
slower (perf: ~48 % of its samples in libgomp's spin loop, 0.6 % otherwise), while
``medseg predict`` was spared by accident: preprocessing in its prefetch thread (a second
OpenMP team; libgomp presumably throttles spinning when it counts more threads than cores)
made the same forwards fast, and ``OMP_WAIT_POLICY=PASSIVE`` made both fast. The script
therefore sets the policy (``--omp-wait-policy``, default PASSIVE) before torch starts, for
every side alike, and records it.

Usage::

    .venv/bin/python benchmarks/predict_throughput.py            # ~10-15 min on 2 shared cores
    .venv/bin/python benchmarks/predict_throughput.py --quick    # ~1-2 min check
    .venv/bin/python benchmarks/predict_throughput.py --model bundles/phantom_ct

Writes ``benchmarks/results/predict_throughput.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.config import to_dict
from medseg.data.synthetic import make_ct_phantom, reorient
from medseg.io import load_volume, write_nifti
from medseg.io.atomic import atomic_write_text
from medseg.io.volume import Volume
from medseg.metrics.overlap import dice_per_label
from medseg.networks.registry import build_network
from medseg.planning.plans import NetworkSpec, Plans, save_plans

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("torch", "onnxruntime", "openvino")
SIDES = ("monai", "medseg_nocrop", *BACKENDS)
POLICY_ENV = "OMP_WAIT_POLICY"
LABELS = {0: "background", 1: "liver", 2: "kidney", 3: "spleen", 4: "bone"}


def light_unet_plans(patch: Sequence[int], spacing: Sequence[float]) -> Plans:
    """CT plans of the light reference UNet (16..256, 2 residual units, 4.8 M parameters)."""
    return Plans(
        modality="CT",
        labels=dict(LABELS),
        target_spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        normalization="ct",
        intensity_clip=(-200.0, 400.0),
        intensity_mean=60.0,
        intensity_std=80.0,
        patch_size=tuple(int(p) for p in patch),  # type: ignore[arg-type]
        batch_size=2,
        network=NetworkSpec(name="unet", channels=(16, 32, 64, 128, 256), num_res_units=2),
        crop_foreground=True,
    )


def save_run(run: Path, plans: Plans, state_dict: dict[str, torch.Tensor]) -> Path:
    """A one-fold run directory (``plans.json``, ``fold_0/checkpoint_best.pt``) of weights."""
    save_plans(plans, run / "plans.json")
    pdict = to_dict(plans)
    pdict["labels"] = {str(k): v for k, v in plans.labels.items()}
    (run / "fold_0").mkdir(parents=True, exist_ok=True)
    state = {"model": state_dict, "epoch": 0, "best_metric": 0.0, "plans": pdict}
    torch.save(state, run / "fold_0" / "checkpoint_best.pt")
    return run


def make_run(run: Path, plans: Plans, seed: int = 0) -> Path:
    """A run directory holding ``plans``' network with seeded random weights."""
    torch.manual_seed(seed)
    net = build_network(plans.network, plans.in_channels, plans.num_classes)
    return save_run(run, plans, net.state_dict())


def copy_run(model: Path, run: Path) -> Plans:
    """Copy the first network of a run or bundle ``model`` into the run directory ``run``."""
    from medseg.networks.loading import load_models

    loaded = load_models(model)
    save_run(run, loaded.plans, loaded.models[0].state_dict())
    return loaded.plans


def phantom_with_air(
    shape: Sequence[int], spacing: Sequence[float], air_mm: float, seed: int
) -> tuple[Volume, Volume]:
    """A CT phantom and its labels, ``shape`` voxels of ``spacing`` mm, LPS voxel order.

    The body is made for ``shape`` less ``2 * air_mm`` in R and A, then padded with air
    (-1000 HU, 10 HU noise; label 0), so more of the field of view is air around the body.
    """
    pad = [round(air_mm / s) for s in spacing[:2]]
    core = (shape[0] - 2 * pad[0], shape[1] - 2 * pad[1], shape[2])
    img, lab = make_ct_phantom(core, spacing, seed=seed, axcodes="RAS")
    rng = np.random.default_rng(1000 + seed)
    full = np.rint(rng.normal(-1000.0, 10.0, size=tuple(shape))).astype(np.int16)
    labels = np.zeros(tuple(shape), dtype=np.uint8)
    inner = (slice(pad[0], pad[0] + core[0]), slice(pad[1], pad[1] + core[1]))
    full[inner], labels[inner] = img.array, lab.array
    affine = img.affine.copy()
    affine[:3, 3] -= affine[:3, :2] @ np.asarray(pad, dtype=float)
    # LPS on disk: the plain side's Orientationd and medseg's RAS step both have work to do
    return reorient(full, affine, "LPS"), reorient(labels, affine, "LPS")


def write_phantoms(
    folder: Path, n: int, shape: Sequence[int], spacing: Sequence[float], air_mm: float
) -> list[Path]:
    """``n`` seeded phantoms as ``folder/case<k>.nii.gz``, labels in ``folder.parent/labels``."""
    paths = []
    for seed in range(n):
        img, lab = phantom_with_air(shape, spacing, air_mm, seed)
        paths.append(write_nifti(img.array, img.affine, folder / f"case{seed}.nii.gz"))
        write_nifti(lab.array, lab.affine, folder.parent / "labels" / f"case{seed}.nii.gz")
    return paths


def plain_monai(
    run: Path,
    inputs: Sequence[Path],
    out: Path,
    overlap: float,
    sw: int,
    stages: dict[str, float] | None = None,
) -> float:
    """The plain MONAI script over ``inputs``; seconds (model loading included).

    ``stages`` (if given) accumulates seconds per stage: ``load_model``, ``preprocess``
    (read + transforms), ``sliding_window``, ``invertd``, ``argmax_write``.
    """
    from monai.inferers import sliding_window_inference
    from monai.transforms import Invertd

    from medseg.networks.loading import load_model
    from medseg.preprocessing.pipeline import preprocessing_transforms

    st = stages if stages is not None else {}
    start = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        st[name] = st.get(name, 0.0) + now - t
        t = now

    model, plans = load_model(run, 0)
    pre = preprocessing_transforms(plans, keys=("image",), load=True)
    inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)

    def softmax(x: torch.Tensor) -> torch.Tensor:  # blend probabilities, as medseg does
        return torch.softmax(model(x), 1)

    out.mkdir(parents=True, exist_ok=True)
    lap("load_model")
    for path in inputs:
        d = pre({"image": str(path)})
        lap("preprocess")
        with torch.no_grad():
            probs = sliding_window_inference(
                d["image"][None], plans.patch_size, sw, softmax, overlap=overlap, mode="gaussian"
            )
        lap("sliding_window")
        d["pred"] = probs[0]
        d = inv(d)
        lap("invertd")
        labels = torch.argmax(d["pred"], 0).numpy().astype(np.uint8)
        write_nifti(labels, np.asarray(d["pred"].affine), out / path.name)
        lap("argmax_write")
    return time.perf_counter() - start


def run_medseg(
    run: Path,
    folder: Path,
    out: Path,
    *,
    overlap: float,
    sw: int,
    backend: str = "torch",
    config: Path | None = None,
) -> float:
    """``medseg predict`` (CLI entry point, in-process, summary table muted); seconds."""
    from medseg.cli import main

    argv = ["predict", "--model", str(run), "--input", str(folder), "--output", str(out)]
    argv += ["--device", "cpu", "--overlap", str(overlap), "--sw-batch-size", str(sw)]
    argv += ["--no-tta", "--postprocess", "none", "--backend", backend]
    argv += ["--config", str(config)] if config else []
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    if rc != 0:
        raise SystemExit(f"medseg predict --backend {backend} failed with exit code {rc}")
    return time.perf_counter() - start


def min_dice(
    a_dir: Path, b_dir: Path, names: Sequence[str], labels: Sequence[int]
) -> dict[str, float]:
    """Smallest Dice over cases, per label (``{"1": ..., ...}``), of two folders of masks."""
    worst = dict.fromkeys((str(lab) for lab in labels), 1.0)
    for name in names:
        a = load_volume(a_dir / name, allow_empty=True).array
        b = load_volume(b_dir / name, allow_empty=True).array
        for lab, d in dice_per_label(a, b, list(labels)).items():
            worst[str(lab)] = min(worst[str(lab)], float(d))
    return worst


def probability_parity(
    run: Path, volume: Volume, *, overlap: float, sw: int, backends: Sequence[str] = BACKENDS
) -> dict[str, Any]:
    """Max |p_B - p_torch| of the blended float32 probabilities (preprocessed grid) per backend.

    ``backends`` must start with ``"torch"``. Also returns the preprocessed shape
    ``(X, Y, Z)`` the windows slide over.
    """
    from medseg.inference.config import InferConfig
    from medseg.inference.predictor import Predictor

    probs: dict[str, torch.Tensor] = {}
    shape: list[int] = []
    for backend in backends:
        cfg = InferConfig(
            device="cpu", backend=backend, overlap=overlap, accumulation="float32",
            sw_batch_size=sw, postprocess="none",
        )  # fmt: skip
        predictor = Predictor.from_path(run, config=cfg)
        pre = predictor.preprocess(volume)
        shape = list(pre.image.shape[1:])
        probs[backend] = predictor.network_probabilities(pre)
    ref = probs[backends[0]]
    diffs: dict[str, Any] = {b: float((p - ref).abs().max()) for b, p in probs.items()}
    return {**diffs, "preprocessed_shape": shape}


def pass_order(sides: Sequence[str], rounds: int) -> list[str]:
    """Sides in the order they run: odd rounds reversed (A B C, C B A, A B C, ...)."""
    order: list[str] = []
    for r in range(rounds):
        order += list(sides) if r % 2 == 0 else list(reversed(sides))
    return order


def crop_share(t_plain: float, t_nocrop: float, t_crop: float) -> dict[str, float]:
    """The body crop's part of medseg's gain over plain MONAI (seconds per case in).

    ``gain_total = t_plain / t_crop = gain_without_crop * gain_of_crop``; the crop's share
    is its part of the total on a log scale (1: all of the gain, 0: none, < 0: it cost).
    """
    total, without = t_plain / t_crop, t_plain / t_nocrop
    crop = t_nocrop / t_crop
    share = math.log(crop) / math.log(total) if abs(math.log(total)) > 1e-9 else float("nan")
    return {
        "speedup_total": round(total, 3),
        "speedup_without_crop": round(without, 3),
        "speedup_of_crop": round(crop, 3),
        "crop_share_of_gain_log": round(share, 3),
    }


def table_rows(
    seconds: dict[str, float],
    n_cases: int,
    dice_vs_plain: dict[str, dict[str, float]],
    dice_vs_torch: dict[str, dict[str, float]],
    dice_vs_truth: dict[str, dict[str, float]],
    parity: dict[str, Any],
) -> list[dict[str, Any]]:
    """One row per side: s/case, speed-up over plain, worst Dice per label, max |dp|."""
    rows = []
    for side, t in seconds.items():
        rows.append(
            {
                "side": side,
                "seconds_per_case": round(t / n_cases, 3),
                "speedup_vs_plain": round(seconds["monai"] / t, 3),
                "min_dice_per_label_vs_plain": dice_vs_plain.get(side),
                "min_dice_per_label_vs_torch": dice_vs_torch.get(side),
                "min_dice_per_label_vs_truth": dice_vs_truth.get(side),
                "max_abs_prob_diff_vs_torch": parity.get(side),
            }
        )
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (worst label's Dice shown)."""

    def worst(d: dict[str, float] | None) -> str:
        return "-" if not d else f"{min(d.values()):.5f}"

    lines = [
        "| side | s/case | speed-up vs plain | min Dice vs plain | min Dice vs torch "
        "| max abs dp | min Dice vs truth |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dp = r["max_abs_prob_diff_vs_torch"]
        lines.append(
            f"| {r['side']} | {r['seconds_per_case']:.2f} | {r['speedup_vs_plain']:.2f}x | "
            f"{worst(r['min_dice_per_label_vs_plain'])} | "
            f"{worst(r['min_dice_per_label_vs_torch'])} | "
            f"{'-' if dp is None else f'{dp:.1e}'} | {worst(r['min_dice_per_label_vs_truth'])} |"
        )
    return "\n".join(lines)


def run_side(side: str, ctx: dict[str, Any], out: Path, stages: dict[str, float]) -> float:
    """One pass of ``side`` over the cases of ``ctx``; seconds."""
    a = ctx["args"]
    if side == "monai":
        return plain_monai(ctx["run"], ctx["inputs"], out, a.overlap, a.sw_batch_size, stages)
    backend = "torch" if side == "medseg_nocrop" else side
    config = ctx["nocrop"] if side == "medseg_nocrop" else None
    return run_medseg(
        ctx["run"], ctx["folder"], out, overlap=a.overlap, sw=a.sw_batch_size,
        backend=backend, config=config,
    )  # fmt: skip


def measure(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Warm-up, interleaved passes, agreement and parity; the result dict."""
    run = tmp / "run"
    if args.model:
        plans = copy_run(Path(args.model), run)
    else:
        plans = light_unet_plans(args.patch, args.target_spacing)
        make_run(run, plans)
    nocrop = tmp / "nocrop.yaml"
    atomic_write_text(nocrop, "body_crop: false\n")
    inputs = write_phantoms(tmp / "in", args.cases, args.shape, args.spacing, args.air_mm)
    write_phantoms(tmp / "warm" / "in", 1, (96, 96, 48), (1.5, 1.5, 3.0), 8.0)
    ctx = {"run": run, "inputs": inputs, "folder": tmp / "in", "nocrop": nocrop, "args": args}
    first = {}
    for side in SIDES:  # the first ONNX call exports fold_0/model.onnx (cached after)
        warm_in = tmp / "warm" / "in"
        warm = {**ctx, "inputs": sorted(warm_in.iterdir()), "folder": warm_in}
        first[side] = round(run_side(side, warm, tmp / f"warm_{side}", {}), 2)
    seconds = dict.fromkeys(SIDES, 0.0)
    stages: dict[str, float] = {}
    passes = []
    for n, side in enumerate(pass_order(SIDES, args.rounds)):
        load = os.getloadavg()[0]
        t = run_side(side, ctx, tmp / f"{side}{n}", stages)
        seconds[side] += t
        passes.append({"side": side, "seconds": round(t, 2), "load_avg_1min": round(load, 2)})
        print(f"pass {n + 1}: {side} {t:.1f} s (load {load:.1f})", file=sys.stderr, flush=True)
    names = [p.name for p in inputs]
    out = {s: tmp / f"{s}{pass_order(SIDES, args.rounds).index(s)}" for s in SIDES}
    fg = [lab for lab in plans.labels if lab]
    vs_plain = {s: min_dice(out["monai"], out[s], names, fg) for s in SIDES if s != "monai"}
    vs_torch = {s: min_dice(out["torch"], out[s], names, fg) for s in BACKENDS[1:]}
    vs_truth = {s: min_dice(tmp / "labels", out[s], names, fg) for s in SIDES}
    parity = probability_parity(
        run, load_volume(inputs[0]), overlap=args.overlap, sw=args.sw_batch_size
    )
    n_cases = args.cases * args.rounds
    rows = table_rows(seconds, n_cases, vs_plain, vs_torch, vs_truth, parity)
    per_case = {s: t / n_cases for s, t in seconds.items()}
    return {
        "table": rows,
        "crop": crop_share(per_case["monai"], per_case["medseg_nocrop"], per_case["torch"]),
        "plain_monai_stage_seconds_per_case": {k: round(v / n_cases, 3) for k, v in stages.items()},
        "preprocessed_shape_with_crop": parity["preprocessed_shape"],
        "first_call_seconds_with_export": first,
        "passes_interleaved": passes,
        "model": args.model or "random light UNet 16..256 (seed 0)",
        "plans": {"target_spacing": list(plans.target_spacing), "patch": list(plans.patch_size)},
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 small case, 1 round (a check)")
    ap.add_argument("--model", default=None, help="run or bundle with trained weights")
    ap.add_argument("--cases", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shape", type=int, nargs=3, default=(256, 256, 160))
    ap.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0))
    ap.add_argument("--air-mm", type=float, default=16.0, help="air added on each R/A side")
    ap.add_argument("--target-spacing", type=float, nargs=3, default=(1.5, 1.5, 1.5))
    ap.add_argument("--patch", type=int, nargs=3, default=(96, 96, 64))
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--sw-batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--omp-wait-policy", choices=("PASSIVE", "ACTIVE", "unset"), default="PASSIVE",
        help="OMP_WAIT_POLICY for every side (set before torch starts; see the docstring)",
    )  # fmt: skip
    ap.add_argument("--output", type=Path, default=RESULTS / "predict_throughput.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.cases, args.rounds = 1, 1
        args.shape, args.spacing, args.air_mm = (128, 128, 64), (2.0, 2.0, 2.5), 16.0
        args.target_spacing, args.patch = (2.5, 2.5, 2.5), (64, 64, 32)
    return args


def ensure_wait_policy(policy: str) -> None:
    """Re-run this script with ``OMP_WAIT_POLICY`` as asked (libgomp reads it at start-up)."""
    want = None if policy == "unset" else policy
    if os.environ.get(POLICY_ENV) == want:
        return
    env = dict(os.environ)
    env.pop(POLICY_ENV, None)
    env |= {POLICY_ENV: want} if want else {}
    env["_PREDICT_THROUGHPUT_REEXEC"] = "1"
    if os.environ.get("_PREDICT_THROUGHPUT_REEXEC"):
        raise SystemExit(f"could not set {POLICY_ENV}={want} for the benchmark")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    ensure_wait_policy(args.omp_wait_policy)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        result = measure(Path(tmp_name), args)
    import onnxruntime
    import openvino

    result = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
        | {"output": str(args.output)},
        **result,
        "omp_wait_policy": os.environ.get(POLICY_ENV, "unset"),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps(result, indent=2) + "\n")
    print(markdown(result["table"]))
    summary = {k: result[k] for k in ("crop", "plain_monai_stage_seconds_per_case")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

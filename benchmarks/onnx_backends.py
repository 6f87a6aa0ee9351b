"""ONNX parity and runtime settings: max |p_runtime - p_torch| on phantom and hippocampus cases.

The end-to-end table of every backend against plain MONAI is ``predict_throughput.py``'s; this
script looks at the runtimes themselves:

1. Parity per runtime setting. For each (network, case) pair: the blended float32
   probabilities on the preprocessed grid (``medseg.inference.sliding.sliding_probabilities``,
   overlap 0.5, Gaussian) of torch, ONNX Runtime at each graph optimisation level
   (``all``, ``extended``, ``basic``, ``disable``) and OpenVINO in each ``EXECUTION_MODE_HINT``
   (``PERFORMANCE``, ``ACCURACY``; ``INFERENCE_PRECISION_HINT`` f32 always, read back from the
   compiled model); max |p - p_torch|, the share of voxels above the issue's 1e-4 bound, and
   the max |logit - logit_float64| of 4 real windows against the same network run by torch in
   float64 (which runtime is the more exact one). Pairs:

   * ``ct_light``: the light UNet (16..256, random seeded weights) on a CT phantom;
   * ``ct_trained``: the trained bundle ``bundles/phantom_ct`` on a phantom of its training
     size (64x64x48 at 1.5x1.5x3 mm), when the bundle is there;
   * ``hippocampus``: the light UNet on MR plans (1 mm, patch 48x64x48, random weights: no
     trained hippocampus run ships) on MSD Task04 ``hippocampus_001`` from
     ``/work/shared/data/msd_hippocampus``, skipped when absent.

2. Seconds per forward of ``--sw-batch-size`` windows: torch, and each runtime on an export
   with a fixed spatial shape (the patch) and with dynamic spatial axes, blocks of 3 forwards
   per model, interleaved, ``--reps`` rounds.

Usage::

    .venv/bin/python benchmarks/onnx_backends.py [--reps 2] [--no-shapes]

Writes ``benchmarks/results/onnx_backends.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_throughput import light_unet_plans, phantom_with_air

from medseg.io import load_volume
from medseg.io.volume import Volume
from medseg.networks.registry import build_network
from medseg.planning.plans import NetworkSpec, Plans

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = ROOT.parent / "shared" / "data" / "msd_hippocampus"
BOUND = 1e-4  # the parity bound on probabilities


def runtime_variants(path: Path) -> dict[str, torch.nn.Module]:
    """Every runtime setting compared, by name, on the ONNX file ``path``."""
    from medseg.networks.onnx_backend import (
        ORT_OPTIMIZATION,
        OV_EXECUTION_MODES,
        OnnxRuntimeModel,
        OpenVinoModel,
    )

    out: dict[str, torch.nn.Module] = {}
    for level in ORT_OPTIMIZATION:
        out[f"onnxruntime_{level}"] = OnnxRuntimeModel(path, optimization=level)
    for mode in OV_EXECUTION_MODES:
        out[f"openvino_{mode}"] = OpenVinoModel(path, execution_mode=mode)
    return out


def parity(
    model: torch.nn.Module, plans: Plans, volume: Volume, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Parity of every runtime setting against torch for one network and one case."""
    from medseg.inference.config import InferConfig
    from medseg.inference.predictor import Predictor
    from medseg.inference.sliding import sliding_probabilities
    from medseg.networks.onnx_export import export_onnx

    path = export_onnx(model, plans, tmp / f"{id(model)}.onnx")
    cfg = InferConfig(device="cpu", postprocess="none", accumulation="float32")
    pre = Predictor([model], plans, config=cfg).preprocess(volume)
    variants = {"torch": model, **runtime_variants(path)}
    probs = {
        name: sliding_probabilities(
            pre.image, [m], plans.patch_size, overlap=args.overlap, sw_batch_size=4
        )
        for name, m in variants.items()
    }
    windows = _real_windows(pre.image, plans.patch_size, 4)
    with torch.inference_mode():
        ref64 = copy.deepcopy(model).double()(windows.double())
        logits = {name: m(windows).double() for name, m in variants.items()}
    rows = {}
    for name in variants:
        diff = (probs[name] - probs["torch"]).abs()
        rows[name] = {
            "max_abs_prob_diff_vs_torch": float(diff.max()),
            "share_of_voxels_above_bound": float((diff > BOUND).float().mean()),
            "max_abs_logit_diff_vs_float64": float((logits[name] - ref64).abs().max()),
        }
    ov = variants["openvino_PERFORMANCE"]
    return {
        "preprocessed_shape": list(pre.image.shape[1:]),
        "max_abs_logit": float(ref64.abs().max()),
        "openvino_inference_precision": ov.inference_precision,  # type: ignore[attr-defined]
        "settings": rows,
    }


def _real_windows(image: torch.Tensor, patch: tuple[int, ...], n: int) -> torch.Tensor:
    """``n`` windows ``(n, C, *patch)`` of ``image`` ``(C, X, Y, Z)`` along its diagonal
    (zero-padded at the far end where the image is smaller than the patch, as MONAI pads)."""
    x = image.float()[None]
    grow = [max(0, p - s) for s, p in zip(x.shape[2:], patch, strict=True)]
    x = torch.nn.functional.pad(x, [v for g in reversed(grow) for v in (0, g)])
    spans = [s - p for s, p in zip(x.shape[2:], patch, strict=True)]
    out = []
    for k in range(n):
        lo = [round(span * (k + 1) / (n + 1)) for span in spans]
        box = tuple(slice(a, a + p) for a, p in zip(lo, patch, strict=True))
        out.append(x[(slice(None), slice(None), *box)])
    return torch.cat(out).contiguous()


def cases(tmp: Path) -> list[tuple[str, torch.nn.Module, Plans, Volume]]:
    """The (name, network, plans, case) pairs of the parity table (see the docstring)."""
    from medseg.data.synthetic import make_ct_phantom
    from medseg.networks.loading import load_models

    pairs = []
    plans = light_unet_plans((96, 96, 64), (1.5, 1.5, 1.5))
    torch.manual_seed(0)
    net = build_network(plans.network, 1, plans.num_classes).eval()
    pairs.append(("ct_light", net, plans, phantom_with_air((192, 192, 128), (1, 1, 1), 16, 0)[0]))
    bundle = ROOT / "bundles" / "phantom_ct"
    if (bundle / "models" / "model.pt").is_file():
        loaded = load_models(bundle)
        img, _ = make_ct_phantom((64, 64, 48), (1.5, 1.5, 3.0), seed=5, axcodes="LPS")
        pairs.append(("ct_trained", loaded.models[0], loaded.plans, img))
    case = HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz"
    if case.is_file():
        mr = Plans(
            modality="MRI",
            labels={0: "background", 1: "anterior", 2: "posterior"},
            target_spacing=(1.0, 1.0, 1.0),
            normalization="zscore_nonzero",
            patch_size=(48, 64, 48),
            batch_size=2,
            network=NetworkSpec(name="unet", channels=(16, 32, 64, 128, 256), num_res_units=2),
        )
        torch.manual_seed(0)
        mr_net = build_network(mr.network, 1, mr.num_classes).eval()
        pairs.append(("hippocampus", mr_net, mr, load_volume(case)))
    else:
        print(f"skipped the hippocampus case: {case} is absent", file=sys.stderr)
    return pairs


def shape_table(tmp: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Seconds per forward of ``sw_batch_size`` patch windows: fixed vs dynamic spatial axes."""
    from medseg.networks.onnx_backend import OnnxRuntimeModel, OpenVinoModel
    from medseg.networks.onnx_export import export_onnx

    plans = light_unet_plans((64, 64, 48), (1.5, 1.5, 3.0))
    torch.manual_seed(0)
    model = build_network(plans.network, 1, plans.num_classes).eval()
    files = {
        kind: export_onnx(model, plans, tmp / f"{kind}.onnx", dynamic_spatial=kind == "dynamic")
        for kind in ("fixed", "dynamic")
    }
    x = torch.randn(args.sw_batch_size, 1, *plans.patch_size)
    wrappers = {"onnxruntime": OnnxRuntimeModel, "openvino": OpenVinoModel}
    models: dict[tuple[str, str], Any] = {("torch", "any"): model}
    models.update({(b, k): wrappers[b](p) for b in wrappers for k, p in files.items()})
    times: dict[tuple[str, str], float] = dict.fromkeys(models, 0.0)
    with torch.inference_mode():
        for m in models.values():
            m(x)  # warm-up
        for _ in range(args.reps):  # blocks of 3 forwards per model, interleaved
            for key, m in models.items():
                for _ in range(3):
                    t = time.perf_counter()
                    m(x)
                    times[key] += time.perf_counter() - t
    return [
        {"backend": b, "spatial": k, "seconds_per_forward": round(t / (3 * args.reps), 3)}
        for (b, k), t in times.items()
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--sw-batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-shapes", action="store_true", help="skip the forward-time table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        table = {name: parity(m, p, v, tmp, args) for name, m, p, v in cases(tmp)}
        shapes = [] if args.no_shapes else shape_table(tmp, args)
    import onnxruntime
    import openvino

    result = {
        "parity_bound": BOUND,
        "parity": table,
        "forward_fixed_vs_dynamic_spatial": shapes,
        "load_avg_before": [round(x, 2) for x in load],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.__version__,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    from medseg.io.atomic import atomic_write_text

    atomic_write_text(RESULTS / "onnx_backends.json", json.dumps(result, indent=2) + "\n")
    for name, t in table.items():
        for setting, row in t["settings"].items():
            print(
                f"{name:12s} {setting:22s} max|dp| {row['max_abs_prob_diff_vs_torch']:.1e}  "
                f"above 1e-4 {row['share_of_voxels_above_bound']:.2%}  "
                f"max|dlogit| vs f64 {row['max_abs_logit_diff_vs_float64']:.1e}"
            )
    print(json.dumps(shapes, indent=2))


if __name__ == "__main__":
    main()

"""Peak memory and time of ``medseg predict`` on a 512x512x600 scan (CPU; target <= 3 GB).

Two runs with random weights (what is measured is memory, not accuracy), each predicted in a
fresh child process whose own peak RSS (``os.wait4`` rusage ``ru_maxrss``) and wall time are
reported with the per-stage times of its sidecar:

* ``ct5``: a 5-class CT model (light UNet 16..256 channels, patch 96^3) whose plans' target
  spacing equals the scan's, so the class-probability map lives at full resolution; its
  decided post-processing keeps the largest component of labels 1 and 3.
* ``crf2``: a 2-class MR model shaped like default hippocampus training (UNet 4..16 channels,
  patch 24x32x24, 1 mm target spacing) whose decided post-processing keeps the dense CRF, the
  largest component and hole filling. Its output bias is shifted so that about half of the
  voxels are foreground, scattered over the whole scan: the CRF's box is the whole volume,
  the worst case for memory.

The scan is a CT-like int16 volume (0.8 x 0.8 x 1.0 mm, LPS order as from a DICOM converter:
a body ellipse in air), written slab by slab as uncompressed NIfTI. Results are printed and
written to ``benchmarks/results/predict_memory.json``. ``--invertd`` instead measures the
MONAI ``Invertd`` route (preprocess, a probability map of the same size, ``Invertd`` with
bilinear interpolation, argmax), without the network, to show why medseg maps probabilities
back by slabs. ``--infer-config`` passes an ``infer.yaml`` to both runs (e.g.
``body_crop: false`` to measure without the crop to the body).

Usage (about 15 minutes on 2 cores at the full size; run when the machine is quiet)::

    .venv/bin/python benchmarks/predict_memory.py [--shape 512 512 600] [--cases ct5 crf2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.io.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_GB = 3.0
CHILD_INVERTD = """
import sys, torch, numpy as np
from monai.transforms import Invertd
from medseg.planning.plans import load_plans
from medseg.preprocessing.pipeline import preprocessing_transforms
plans = load_plans(sys.argv[1] + "/plans.json")
pre = preprocessing_transforms(plans, keys=("image",), load=True)
d = pre({"image": sys.argv[2]})
shape = d["image"].shape[1:]
g = torch.Generator().manual_seed(0)
p = torch.empty((plans.num_classes, *shape), dtype=torch.float32)
for c in range(plans.num_classes):
    p[c].uniform_(generator=g)
from monai.data import MetaTensor
d["pred"] = MetaTensor(p, affine=d["image"].affine, meta=dict(d["image"].meta))
del p
d = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(d)
labels = torch.argmax(d["pred"], 0).numpy().astype(np.uint8)
print("inverted", tuple(labels.shape))
"""


def write_ct(path: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
    """A body ellipse with organs and noise in HU (int16), written slab by slab (low memory)."""
    rng = np.random.default_rng(0)
    x = (np.arange(shape[0]) - shape[0] / 2)[:, None] * spacing[0]
    y = (np.arange(shape[1]) - shape[1] / 2)[None, :] * spacing[1]
    body = (x / (0.45 * shape[0] * spacing[0])) ** 2 + (y / (0.35 * shape[1] * spacing[1])) ** 2
    data = np.empty(shape, dtype=np.int16)
    for k0 in range(0, shape[2], 50):
        k1 = min(shape[2], k0 + 50)
        z = (np.arange(k0, k1) - shape[2] / 2)[None, None, :] * spacing[2]
        slab = np.where(body[..., None] < 1.0, 40.0, -1000.0) + np.zeros((1, 1, k1 - k0))
        organ = (x[..., None] - 60) ** 2 + (y[..., None] + 20) ** 2 + z**2 < 80.0**2
        slab[organ] = 120.0
        slab += rng.normal(0, 10, slab.shape)
        data[:, :, k0:k1] = np.clip(slab, -1024, 3071).astype(np.int16)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS voxel order
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _plans(case: str, spacing: tuple[float, float, float]) -> Any:
    from medseg.planning.plans import NetworkSpec, Plans

    if case == "ct5":
        return Plans(
            modality="CT",
            labels={0: "background", 1: "liver", 2: "kidney", 3: "spleen", 4: "bone"},
            target_spacing=spacing,
            normalization="ct",
            intensity_clip=(-200.0, 400.0),
            intensity_mean=60.0,
            intensity_std=80.0,
            patch_size=(96, 96, 96),
            batch_size=2,
            network=NetworkSpec(name="unet", channels=(16, 32, 64, 128, 256), num_res_units=2),
        )
    # what default training planned for MSD Hippocampus, with one foreground label
    return Plans(
        modality="MR",
        labels={0: "background", 1: "hippocampus"},
        target_spacing=(1.0, 1.0, 1.0),
        normalization="zscore_nonzero",
        patch_size=(24, 32, 24),
        batch_size=16,
        network=NetworkSpec(
            name="unet",
            channels=(4, 8, 16, 16),
            strides=((2, 2, 2), (2, 2, 2), (1, 2, 1)),
            num_res_units=2,
        ),
    )


def _balance_output(net: Any, in_channels: int) -> None:
    """Shift the last layer's class-1 bias so that about half of the voxels are foreground."""
    import torch

    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)]
    layer = last[-1]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        logits = net(torch.randn((1, in_channels, 48, 64, 48), generator=g))
        margin = float(torch.median(logits[0, 1] - logits[0, 0]))
        layer.bias[1] -= margin  # type: ignore[index]


def _postprocessing(case: str) -> dict[str, Any]:
    if case == "ct5":
        return {"per_label": {"1": {"largest_component": True}, "3": {"largest_component": True}}}
    return {"per_label": {"1": {"largest_component": True, "fill_holes": True}}, "crf": {}}


def make_run(run: Path, case: str, spacing: tuple[float, float, float]) -> None:
    """A run directory with random weights and a decided ``postprocessing.json``."""
    import torch

    from medseg.config import to_dict
    from medseg.networks.registry import build_network
    from medseg.planning.plans import save_plans
    from medseg.postprocessing import postprocess_config_from_dict, save_postprocessing

    plans = _plans(case, spacing)
    run.mkdir(parents=True)
    save_plans(plans, run / "plans.json")
    torch.manual_seed(0)
    net = build_network(plans.network, 1, plans.num_classes).eval()
    if case == "crf2":
        _balance_output(net, 1)
    pdict = to_dict(plans)
    pdict["labels"] = {str(k): v for k, v in plans.labels.items()}
    (run / "fold_0").mkdir()
    torch.save(
        {"model": net.state_dict(), "epoch": 0, "best_metric": 0.0, "plans": pdict},
        run / "fold_0" / "checkpoint_best.pt",
    )
    save_postprocessing(
        run / "postprocessing.json", postprocess_config_from_dict(_postprocessing(case))
    )


def run_child(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """Run ``cmd``; return its exit code, its own peak RSS (GB) and its wall time (s)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read()  # the child's log, written once it has finished
    _, status, usage = os.wait4(proc.pid, 0)
    atomic_write_text(log, output.decode("utf-8", errors="replace"))
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024**2, seconds


def measure(case: str, tmp: Path, scan: Path, args: argparse.Namespace) -> dict[str, Any]:
    spacing = tuple(args.spacing)
    target = tuple(args.target_spacing) if args.target_spacing else spacing
    run = tmp / f"run_{case}"
    make_run(run, case, target)  # type: ignore[arg-type]
    out = tmp / f"out_{case}"
    if args.invertd:
        cmd = [sys.executable, "-c", CHILD_INVERTD, str(run), str(scan)]
    else:
        cmd = [sys.executable, "-m", "medseg", "predict", "--model", str(run), "--input",
               str(scan.parent), "--output", str(out), "--device", "cpu", "--no-tta"]  # fmt: skip
        if args.infer_config:
            cmd += ["--config", str(args.infer_config)]
    code, peak_gb, seconds = run_child(cmd, tmp / f"{case}.log")
    if code != 0:
        print((tmp / f"{case}.log").read_text()[-4000:])
    sidecar = out / "ct.json"
    info = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    result = {
        "case": case,
        "classes": _plans(case, target).num_classes,  # type: ignore[arg-type]
        "postprocessing": _postprocessing(case),
        "exit_code": code,
        "peak_rss_gb": round(peak_gb, 3),
        "target_gb": TARGET_GB,
        "seconds": round(seconds, 1),
        "timings_s": info.get("timings_s", {}),
    }
    if (out / "ct.nii.gz").is_file():
        mask = np.asarray(nib.load(str(out / "ct.nii.gz")).dataobj)  # type: ignore[attr-defined]
        result["foreground_fraction"] = round(float((mask > 0).mean()), 4)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 600))
    ap.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 1.0))
    ap.add_argument("--target-spacing", type=float, nargs=3, default=None, help="ct5 only")
    ap.add_argument("--cases", nargs="+", choices=("ct5", "crf2"), default=("ct5", "crf2"))
    ap.add_argument("--infer-config", type=Path, default=None, help="infer.yaml for both runs")
    ap.add_argument("--invertd", action="store_true", help="measure MONAI Invertd instead")
    ap.add_argument("--result", type=Path, default=None, help="JSON path (default: results/)")
    args = ap.parse_args()
    shape = tuple(args.shape)
    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        scan = tmp / "in" / "ct.nii"
        scan.parent.mkdir()
        write_ct(scan, shape, tuple(args.spacing))  # type: ignore[arg-type]
        for case in args.cases:
            results.append(measure(case, tmp, scan, args))
            print(json.dumps(results[-1], indent=2), flush=True)
    report = {
        "route": "monai_invertd" if args.invertd else "medseg_predict",
        "shape": list(shape),
        "spacing_mm": list(args.spacing),
        "cpu_threads": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "results": results,
    }
    name = "predict_memory_invertd.json" if args.invertd else "predict_memory.json"
    path = args.result or RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    for r in results:
        print(f"{r['case']}: peak RSS {r['peak_rss_gb']:.2f} GB (target {TARGET_GB}), "
              f"{r['seconds']:.0f} s, exit {r['exit_code']}")  # fmt: skip


if __name__ == "__main__":
    main()

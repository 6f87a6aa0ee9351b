"""Peak memory of ``medseg predict`` on a 512x512x600 CT with 5 classes (CPU; target < 4 GB).

A CT-like int16 volume (0.8 x 0.8 x 1.0 mm, LPS order as from a DICOM converter) is written
slab by slab as uncompressed NIfTI, then ``medseg predict`` runs in a fresh child process with a
random-weight light UNet (16..256 channels, patch 96^3, overlap 0.5, 5 classes). Its peak RSS
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``) and the per-stage times of its sidecar are printed
and written to ``benchmarks/results/predict_memory.json``.

By default the plans' target spacing equals the scan's, so the class-probability map lives at
full resolution: the worst case for memory. ``--invertd`` instead measures the MONAI ``Invertd``
route (preprocess, a probability map of the same size, ``Invertd`` with bilinear interpolation,
argmax), without the network, to show why medseg maps probabilities back by slabs.

Usage (several minutes on 2 cores; run when the machine is quiet)::

    .venv/bin/python benchmarks/predict_memory.py [--shape 512 512 600] [--invertd]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.io.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
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


def make_run(run: Path, spacing: tuple[float, float, float]) -> None:
    import torch

    from medseg.config import to_dict
    from medseg.networks.registry import build_network
    from medseg.planning.plans import NetworkSpec, Plans, save_plans

    labels = {0: "background", 1: "liver", 2: "kidney", 3: "spleen", 4: "bone"}
    plans = Plans(
        modality="CT",
        labels=labels,
        target_spacing=spacing,
        normalization="ct",
        intensity_clip=(-200.0, 400.0),
        intensity_mean=60.0,
        intensity_std=80.0,
        patch_size=(96, 96, 96),
        batch_size=2,
        network=NetworkSpec(name="unet", channels=(16, 32, 64, 128, 256), num_res_units=2),
    )
    save_plans(plans, run / "plans.json")
    torch.manual_seed(0)
    net = build_network(plans.network, 1, plans.num_classes)
    pdict = to_dict(plans)
    pdict["labels"] = {str(k): v for k, v in labels.items()}
    (run / "fold_0").mkdir(parents=True)
    torch.save(
        {"model": net.state_dict(), "epoch": 0, "best_metric": 0.0, "plans": pdict},
        run / "fold_0" / "checkpoint_best.pt",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 600))
    ap.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 1.0))
    ap.add_argument("--target-spacing", type=float, nargs=3, default=None)
    ap.add_argument("--invertd", action="store_true", help="measure MONAI Invertd instead")
    args = ap.parse_args()
    shape, spacing = tuple(args.shape), tuple(args.spacing)
    target = tuple(args.target_spacing) if args.target_spacing else spacing
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        scan = tmp / "in" / "ct.nii"
        scan.parent.mkdir()
        write_ct(scan, shape, spacing)  # type: ignore[arg-type]
        make_run(tmp / "run", target)  # type: ignore[arg-type]
        if args.invertd:
            cmd = [sys.executable, "-c", CHILD_INVERTD, str(tmp / "run"), str(scan)]
        else:
            cmd = [sys.executable, "-m", "medseg", "predict", "--model", str(tmp / "run"),
                   "--input", str(scan.parent), "--output", str(tmp / "out"), "--device", "cpu",
                   "--no-tta", "--postprocess", "none"]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-4000:])
        sidecar = tmp / "out" / "ct.json"
        timings = json.loads(sidecar.read_text())["timings_s"] if sidecar.is_file() else {}
    result = {
        "route": "monai_invertd" if args.invertd else "medseg_predict",
        "shape": list(shape),
        "spacing_mm": list(spacing),
        "target_spacing_mm": list(target),
        "classes": 5,
        "exit_code": proc.returncode,
        "peak_rss_gb": round(peak_gb, 3),
        "target_gb": 4.0,
        "seconds": round(seconds, 1),
        "timings_s": timings,
    }
    RESULTS.mkdir(exist_ok=True)
    name = "predict_memory_invertd.json" if args.invertd else "predict_memory.json"
    atomic_write_text(RESULTS / name, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

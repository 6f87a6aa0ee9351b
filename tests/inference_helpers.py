"""Helpers: seeded phantoms, tiny plans, a briefly fitted UNet, run directories.

The phantom is a box of "tissue" (zero outside, so the foreground crop has work to do) holding
a bright ellipsoid (label 1) with a brighter core (label 2). A 3-level UNet (4, 8, 16 channels)
is fitted for a few dozen Adam steps (~2 s) and saved as ``fold_0/checkpoint_best.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medseg.config import to_dict
from medseg.io import Volume
from medseg.networks.registry import build_network
from medseg.planning.plans import NetworkSpec, Plans, save_plans

LABELS = {0: "background", 1: "organ", 2: "core"}


def phantom(
    shape: tuple[int, int, int] = (24, 24, 20),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    seed: int = 0,
    centre_mm: tuple[float, float, float] = (1.0, -2.0, 0.5),
) -> tuple[Volume, Volume]:
    """Image and labels on a RAS grid centred on world (0, 0, 0); float32 image, uint8 labels."""
    rng = np.random.default_rng(seed)
    sp = np.asarray(spacing, float)
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, sp, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    cx, cy, cz = centre_mm
    half = np.asarray(shape) * sp / 2
    r = np.sqrt(
        ((x - cx) / (0.3 * half[0])) ** 2
        + ((y - cy) / (0.35 * half[1])) ** 2
        + ((z - cz) / (0.35 * half[2])) ** 2
    )
    labels = np.zeros(shape, np.uint8)
    labels[r < 1.0] = 1
    labels[r < 0.5] = 2
    body = (np.abs(x) < 0.8 * half[0]) & (np.abs(y) < 0.8 * half[1])
    image = np.where(body, 100.0, 0.0) + np.select([labels == 2, labels == 1], [200.0, 100.0], 0.0)
    image = image + body * rng.normal(0, 8, shape)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * sp
    return (
        Volume(image.astype(np.float32), affine, meta={"is_image": True}),
        Volume(labels, affine.copy(), meta={"is_image": False}),
    )


def tiny_plans(**overrides: object) -> Plans:
    base = {
        "modality": "MR",
        "labels": LABELS,
        "target_spacing": (1.0, 1.0, 1.0),
        "normalization": "zscore_nonzero",
        "patch_size": (16, 16, 16),
        "batch_size": 2,
        "network": NetworkSpec(
            name="unet", channels=(4, 8, 16), strides=((2, 2, 2), (2, 2, 2)), num_res_units=1
        ),
        "crop_foreground": True,
    }
    base.update(overrides)
    return Plans(**base)  # type: ignore[arg-type]


def fit_tiny(plans: Plans, steps: int = 60, seed: int = 0) -> torch.nn.Module:
    """Fit the plans' network on preprocessed phantoms (whole volumes, batch 2)."""
    from medseg.preprocessing.pipeline import preprocessing_transforms

    torch.manual_seed(seed)
    xf = preprocessing_transforms(plans, keys=("image", "label"), load=False)
    batch = []
    for s in range(2):
        img, lab = phantom(seed=s, centre_mm=(2.0 * s - 1, -1.0, 1.0 - s))
        d = xf({"image": img.to_metatensor(), "label": lab.to_metatensor()})
        crop = tuple(slice(0, 16) for _ in range(3))
        batch.append(
            (
                d["image"].as_tensor()[(slice(None), *crop)],
                d["label"].as_tensor()[(slice(None), *crop)],
            )
        )
    x = torch.stack([b[0] for b in batch]).float()
    y = torch.stack([b[1] for b in batch]).long()[:, 0]
    net = build_network(plans.network, 1, plans.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    return net.eval()


def write_run(run_dir: Path, plans: Plans, nets: list[torch.nn.Module]) -> Path:
    """A run directory as training writes it (plans, dataset.json, fold_<k>/checkpoint_best.pt)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_plans(plans, run_dir / "plans.json")
    dataset = {
        "name": "phantom",
        "modality": {"0": plans.modality},
        "labels": {str(k): v for k, v in plans.labels.items()},
    }
    (run_dir / "dataset.json").write_text(json.dumps(dataset))
    pdict = to_dict(plans)
    pdict["labels"] = {str(k): v for k, v in plans.labels.items()}
    for k, net in enumerate(nets):
        (run_dir / f"fold_{k}").mkdir(exist_ok=True)
        state = {"model": net.state_dict(), "epoch": 1, "best_metric": 0.5, "plans": pdict}
        torch.save(state, run_dir / f"fold_{k}" / "checkpoint_best.pt")
    return run_dir

"""A tiny trained run directory for tests that need a model (bundle, README API).

``make_tiny_run(root)`` fits a 3-level UNet (4, 8, 16 channels) for 25 Adam steps on two
synthetic CT phantoms (~2 s) and writes the run layout training produces: ``plans.json``,
``dataset.json``, ``fold_0/checkpoint_best.pt`` and ``fold_0/metrics.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medseg.config import to_dict
from medseg.data.synthetic import CT_LABELS, make_ct_phantom
from medseg.networks import build_network
from medseg.planning.plans import NetworkSpec, Plans, save_plans
from medseg.preprocessing import preprocessing_transforms
from medseg.training.checkpoint import save_checkpoint

SHAPE, SPACING = (40, 36, 20), (1.5, 1.5, 3.0)


def tiny_plans() -> Plans:
    """CT plans for 40x36x20 phantoms at 1.5x1.5x3 mm, patch 32x32x16."""
    return Plans(
        modality="CT",
        labels=dict(CT_LABELS),
        target_spacing=SPACING,
        normalization="ct",
        intensity_clip=(-200.0, 800.0),
        intensity_mean=60.0,
        intensity_std=150.0,
        patch_size=(32, 32, 16),
        batch_size=2,
        network=NetworkSpec(
            channels=(4, 8, 16),
            strides=((2, 2, 2), (2, 2, 2)),
            num_res_units=1,
            full_res_level=True,
        ),
    )


def fit_tiny(plans: Plans, steps: int = 25) -> torch.nn.Module:
    """The plans' network fitted briefly on two phantoms, so masks are not all background."""
    torch.manual_seed(0)
    xf = preprocessing_transforms(plans, load=False)
    xs, ys = [], []
    for seed in (1, 2):
        img, lab = make_ct_phantom(SHAPE, SPACING, seed=seed)
        d = xf({"image": img.to_metatensor(), "label": lab.to_metatensor()})
        xs.append(d["image"].as_tensor()[:, :32, :32, :16])
        ys.append(d["label"].as_tensor()[0, :32, :32, :16].long())
    return fit_batch(plans, xs, ys, steps)


def fit_batch(
    plans: Plans,
    xs: list[torch.Tensor],
    ys: list[torch.Tensor],
    steps: int,
    in_channels: int = 1,
) -> torch.nn.Module:
    """The plans' network (``in_channels`` inputs) fitted ``steps`` Adam steps (lr 2e-2,
    cross-entropy) on one batch: images ``xs`` of shape ``(C, X, Y, Z)`` and label maps
    ``ys`` of shape ``(X, Y, Z)``, all of one shape; returned in eval mode.

    Seed torch first: the network is built here, after the data are prepared.
    """
    x, y = torch.stack(xs).float(), torch.stack(ys)
    net = build_network(plans.network, in_channels, plans.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def make_tiny_run(root: Path, steps: int = 25) -> Path:
    """Write a one-fold run directory into ``root`` (network fitted ``steps`` steps); return it."""
    plans = tiny_plans()
    net = fit_tiny(plans, steps)
    root.mkdir(parents=True, exist_ok=True)
    save_plans(plans, root / "plans.json")
    labels = {str(k): v for k, v in plans.labels.items()}
    (root / "dataset.json").write_text(json.dumps({"name": "phantom", "labels": labels}))
    pdict = to_dict(plans)
    pdict["labels"] = labels
    state = {"model": net.state_dict(), "epoch": 3, "best_metric": 0.5, "plans": pdict}
    save_checkpoint(state, root / "fold_0" / "checkpoint_best.pt")
    metrics = {"fold": "fold_0", "best_epoch": 3, "best_dice": {"liver": 0.5}}
    (root / "fold_0" / "metrics.json").write_text(json.dumps(metrics))
    return root

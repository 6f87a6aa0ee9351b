"""What ``plans.json`` records about training: the mirror axes augmentation really used (which
test-time mirroring follows) and the network widths really built."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from monai.transforms import RandFlipd

from medseg.inference.config import InferConfig
from medseg.inference.predictor import Predictor
from medseg.inference.sliding import mirror_axes
from medseg.networks.registry import build_network
from medseg.planning import planner
from medseg.planning.plans import load_plans
from medseg.training.run import prepare_run, train
from medseg.transforms.augmentation import training_transforms


@pytest.mark.parametrize(
    ("planned", "augment", "trained"),
    [
        # the issue: planning dropped every axis, the config mirrors all three
        ((), {"augment.mirror_axes": [0, 1, 2]}, (0, 1, 2)),
        ((0, 1, 2), {"augment.mirror_axes": [1]}, (1,)),
        ((0, 1, 2), {"augment.mirror_prob": 0.0}, ()),  # never mirrored
        ((0, 2), {}, (0, 2)),  # no override: the planned axes
    ],
)
def test_plans_record_the_mirror_axes_training_used_and_tta_follows_them(
    make_config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    planned: tuple[int, ...],
    augment: dict,
    trained: tuple[int, ...],
) -> None:
    monkeypatch.setattr(planner, "mirror_axes", lambda fp: planned)
    cfg = make_config(**{"train.epochs": 1, "train.iterations_per_epoch": 1, **augment})
    train(cfg, tmp_path / "run")
    plans = load_plans(tmp_path / "run" / "plans.json")
    assert plans.mirror_axes == trained
    # augmentation (which reads plans.mirror_axes unless augment.mirror_axes is set) agrees
    flips = [
        t.flipper.spatial_axis
        for t in training_transforms(plans, cfg.augment, 0.67).transforms
        if isinstance(t, RandFlipd) and t.prob > 0
    ]
    assert tuple(flips) == trained
    with caplog.at_level(logging.WARNING, logger="medseg"):
        predictor = Predictor.from_run(tmp_path / "run", config=InferConfig(tta=True, device="cpu"))
    assert predictor.plans.mirror_axes == trained
    assert len(mirror_axes(True, predictor.plans.mirror_axes)) == 2 ** len(trained)
    assert ("--tta has no effect" in caplog.text) == (not trained)


def _vnet_widths(net: Any) -> list[int]:
    downs = [net.down_tr32, net.down_tr64, net.down_tr128, net.down_tr256]
    return [net.in_tr.conv_block.conv.out_channels] + [d.down_conv.out_channels for d in downs]


def test_vnet_plans_record_the_widths_monai_builds(
    make_config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(**{"plans.model": "vnet", "plans.channels": [4, 8, 16]})
    with caplog.at_level(logging.WARNING, logger="medseg"):
        prepare_run(cfg, tmp_path / "run", device="cpu", resume=False, is_main=True)
    assert "plans.channels [4, 8, 16] ignored for vnet" in caplog.text
    plans = load_plans(tmp_path / "run" / "plans.json")
    net = build_network(plans.network, 1, plans.num_classes)
    assert list(plans.network.channels) == _vnet_widths(net) == [16, 32, 64, 128, 256]

"""Tiny seeded cohorts and a tiny-network run config for the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from medseg.training.config import RunConfig, load_run_config


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def tiny_config(manifest: Path, cache: Path, **overrides: Any) -> RunConfig:
    """Channels (4, 8, 16), patch 16^3, batch 2, a few steps; ``overrides`` are dotted keys."""
    base: dict[str, Any] = {
        "data.manifest": str(manifest),
        "data.data_root": str(manifest.parent),
        "data.folds": 3,
        "data.cache_dir": str(cache),
        "plans.channels": [4, 8, 16],
        "plans.patch_size": [16, 16, 16],
        "plans.batch_size": 2,
        "train.epochs": 3,
        "train.iterations_per_epoch": 3,
        "train.val_every": 1,
        "train.num_workers": 0,
        "train.threads": 1,
        "train.device": "cpu",
        "train.postprocess_decision": False,
    }
    base.update(overrides)
    return load_run_config(None, base)


@pytest.fixture
def make_config(tiny_cohort: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``make_config(**dotted_overrides) -> RunConfig`` over the tiny cohort."""

    def make(**overrides: Any) -> RunConfig:
        return tiny_config(tiny_cohort, tmp_path / "cache", **overrides)

    return make

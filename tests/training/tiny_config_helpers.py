"""Tiny run configs for the training tests: one-channel (``tiny_config``) and CT + PET."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.training.config import RunConfig, load_run_config


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


def two_channel_config(manifest: Path, cache: Path, **overrides: Any) -> RunConfig:
    """:func:`tiny_config` for the CT + PET phantoms: patch 32x32x8, one epoch of two steps."""
    small = {
        "data.folds": 2,
        "plans.patch_size": [32, 32, 8],
        "train.epochs": 1,
        "train.iterations_per_epoch": 2,
    }
    return tiny_config(manifest, cache, **{**small, **overrides})

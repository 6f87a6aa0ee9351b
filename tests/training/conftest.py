"""Tiny seeded cohorts and a tiny-network run config for the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_config_helpers import tiny_config

from medseg.training.config import RunConfig


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def make_config(tiny_cohort: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``make_config(**dotted_overrides) -> RunConfig`` over the tiny cohort."""

    def make(**overrides: Any) -> RunConfig:
        return tiny_config(tiny_cohort, tmp_path / "cache", **overrides)

    return make

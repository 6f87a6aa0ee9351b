"""Shared fixtures: the real-data folder (skipped when absent) and seeded RNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from inference_helpers import fit_tiny, tiny_plans, write_run

from medseg.data.cohorts import write_mr_cohort
from medseg.planning.plans import Plans

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator so every test is reproducible."""
    return np.random.default_rng(20261121)


@pytest.fixture(scope="session")
def tiny_net() -> tuple[Plans, torch.nn.Module]:
    torch.set_num_threads(1)
    plans = tiny_plans()
    return plans, fit_tiny(plans)


@pytest.fixture
def run_dir(tmp_path: Path, tiny_net: tuple[Plans, torch.nn.Module]) -> Path:
    plans, net = tiny_net
    return write_run(tmp_path / "run", plans, [net])


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 24^3 MR phantoms (labels 1, 2) at 1 mm; returns the manifest path."""
    root = tmp_path_factory.mktemp("cohort")
    return write_mr_cohort(root, 6, seed=7, shape=(24, 24, 24), spacing=(1.0, 1.0, 1.0))

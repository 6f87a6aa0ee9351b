"""Fixtures: a tiny trained run directory (see ``inference_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from inference_helpers import fit_tiny, tiny_plans, write_run

from medseg.training.plans import Plans


@pytest.fixture(scope="session")
def tiny_net() -> tuple[Plans, torch.nn.Module]:
    torch.set_num_threads(1)
    plans = tiny_plans()
    return plans, fit_tiny(plans)


@pytest.fixture
def run_dir(tmp_path: Path, tiny_net: tuple[Plans, torch.nn.Module]) -> Path:
    plans, net = tiny_net
    return write_run(tmp_path / "run", plans, [net])

"""DistributedDataParallel on CPU: ``torchrun --nproc_per_node 2 -m medseg train`` (gloo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_cli import train_cli_args

from medseg.training.checkpoint import load_checkpoint


def _command(tiny_cohort: Path, tmp_path: Path, epochs: int) -> list[str]:
    args = train_cli_args(tiny_cohort, tmp_path, tmp_path / "run", epochs=epochs)
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*runner, "--nproc_per_node", "2", "-m", "medseg", *args]


def test_torchrun_two_processes_gloo(tiny_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = _command(tiny_cohort, tmp_path, epochs=1)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((out / "fold_0" / "metrics.json").read_text())
    assert metrics["epochs"] == 1
    assert metrics["steps"] == 2  # each rank takes iterations_per_epoch steps per epoch
    ck = load_checkpoint(out / "fold_0" / "checkpoint_last.pt")
    assert all(not k.startswith("module.") for k in ck["model"])  # saved unwrapped


@pytest.mark.slow
def test_torchrun_resume_on_every_rank(tiny_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = _command(tiny_cohort, tmp_path, epochs=2)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((out / "fold_0" / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert metrics["steps"] == 4  # each rank takes iterations_per_epoch steps per epoch
    ck = load_checkpoint(out / "fold_0" / "checkpoint_last.pt")
    assert all(not k.startswith("module.") for k in ck["model"])  # saved unwrapped
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    # every rank resumes from the same checkpoint and finishes the longer budget
    proc = subprocess.run(
        [*cmd[:-6], "--epochs", "3", *cmd[-4:], "--resume"],  # --epochs N comes 6th from last
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((out / "fold_0" / "metrics.json").read_text())["epochs"] == 3

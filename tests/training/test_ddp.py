"""DistributedDataParallel on CPU: ``torchrun --nproc_per_node 2 -m medseg train`` (gloo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_cli import train_cli_args

from medseg.data.manifest import load_manifest
from medseg.networks.loading import load_checkpoint, load_model
from medseg.networks.registry import build_network
from medseg.planning.plans import NetworkSpec
from medseg.preprocessing.cache import PreprocessedCache
from medseg.training.data import load_cached
from medseg.training.schedule import pointwise_standard_strides
from medseg.training.validation import validate_cases


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
    # each rank validated half the cases; the summed result is the mean over all of them
    assert metrics["final_dice"] == pytest.approx(_single_process_dice(tiny_cohort, tmp_path))


def _single_process_dice(tiny_cohort: Path, tmp_path: Path) -> dict[str, float]:
    """Dice of the last checkpoint over every fold-0 validation case, in this process."""
    out = tmp_path / "run"
    model, plans = load_model(out, 0, which="last")
    val_ids = set(json.loads((out / "splits.json").read_text())[0]["val"])
    cases = [
        c for c in load_manifest(tiny_cohort, tiny_cohort.parent).training if c.case_id in val_ids
    ]
    assert len(cases) == 2
    cache = PreprocessedCache(tmp_path / "cache", plans)
    val = load_cached(cache.ensure(cases), plans.num_classes, indices=False)
    dice = validate_cases(model.eval(), val, [1, 2], plans.patch_size)
    return {plans.labels[k]: v for k, v in dice.items()}


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


def test_pointwise_weights_get_standard_strides_and_the_rest_stays_channels_last() -> None:
    """The DDP "Grad strides do not match bucket view strides" warning came from 1x1x1
    convolution weights, whose channels-last strides are ambiguous (same memory order)."""
    spec = NetworkSpec("unet", (4, 8, 16), ((2, 2, 2), (2, 2, 2)), num_res_units=1)
    net = build_network(spec, 1, 3).to(memory_format=torch.channels_last_3d)
    pointwise = [p for p in net.parameters() if p.dim() == 5 and p.shape[2:] == (1, 1, 1)]
    wide = [p for p in net.parameters() if p.dim() == 5 and min(p.shape[1:]) > 1]
    assert pointwise and wide
    before = [p.detach().clone() for p in pointwise]
    assert any(p.stride() != _standard_strides(p.shape) for p in pointwise)
    pointwise_standard_strides(net)
    assert all(p.stride() == _standard_strides(p.shape) for p in pointwise)
    assert all(torch.equal(a, b) for a, b in zip(before, pointwise, strict=True))
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in wide)


def _standard_strides(shape: torch.Size) -> tuple[int, ...]:
    return torch.empty(shape).stride()


@pytest.mark.slow
def test_torchrun_warns_about_nothing_and_reports_once(tiny_cohort: Path, tmp_path: Path) -> None:
    """Channels-last on CPU (the default for unet) under DDP: no rank warns about gradient
    strides, and only rank 0 prints the fold summary."""
    cmd = _command(tiny_cohort, tmp_path, epochs=1)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Grad strides do not match" not in proc.stderr, proc.stderr
    assert proc.stdout.count("fold_0: 1 epochs") == 1, proc.stdout

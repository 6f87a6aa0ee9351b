"""Shared checks of exported MONAI bundles: TorchScript parity and ``monai.bundle run`` parity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from medseg.cli import main
from medseg.networks import build_network
from medseg.planning.plans import Plans


def assert_torchscript_matches_state_dict(
    bundle: Path, plans: Plans, in_channels: int, spatial: tuple[int, int, int]
) -> None:
    """``models/model.ts`` computes what ``models/model.pt`` loaded into the plans' network
    does, on one seeded random input of shape ``(1, in_channels, *spatial)``."""
    net = build_network(plans.network, in_channels, plans.num_classes)
    net.load_state_dict(torch.load(bundle / "models/model.pt", weights_only=True))
    scripted = torch.jit.load(str(bundle / "models/model.ts"))
    x = torch.randn(1, in_channels, *spatial, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net.eval()(x))


def bundle_run_and_predict(
    bundle: Path, scans: Path, tmp_path: Path, *, timeout: int = 300
) -> tuple[Path, Path]:
    """Run ``python -m monai.bundle run`` (a fresh process that parses inference.json) and
    ``medseg predict --model BUNDLE`` on the folder ``scans``, both on the CPU; assert both
    succeed and return their output folders ``(tmp_path/bundle_out, tmp_path/medseg_out)``."""
    out_bundle, out_medseg = tmp_path / "bundle_out", tmp_path / "medseg_out"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(bundle / "configs/inference.json"),
        "--dataset_dir", str(scans), "--output_dir", str(out_bundle), "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    args = ["predict", "--model", str(bundle), "--input", str(scans), "--output", str(out_medseg)]
    assert main([*args, "--device", "cpu"]) == 0
    return out_bundle, out_medseg

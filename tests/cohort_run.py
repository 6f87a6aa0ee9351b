"""Train a one-epoch run through the CLI on four seeded CT phantoms (non-RAS, anisotropic)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from typer.testing import CliRunner

from medseg.cli import app
from medseg.data.cohorts import write_ct_cohort

# voxel axes point to P, S, R: permuted and flipped against RAS; S (4 mm) is voxel axis 1
AXCODES, SHAPE, SPACING = "PSR", (32, 32, 10), (1.5, 1.5, 4.0)


def train_ct_cohort(
    root: Path, configuration: str, *, batch_size: int, extra: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """``medseg train --configuration C`` (fold 0 of 2, 2 steps); returns (run, manifest)."""
    manifest = write_ct_cohort(
        root / "data", 4, seed=5, shape=SHAPE, spacing=SPACING, axcodes=AXCODES, n_lesions=1
    )
    cfg = root / "run.yaml"
    cfg.write_text(
        f"plans: {{channels: [4, 8, 16], batch_size: {batch_size}}}\n"
        f"data: {{cache_dir: {root / 'cache'}, folds: 2, fold: 0}}\n"
        "train: {iterations_per_epoch: 2, num_workers: 0, threads: 1, val_every: 1}\n"
    )
    run = root / "run"
    args = ["train", "--manifest", str(manifest), "--data-root", str(manifest.parent)]
    args += ["--out", str(run), "--config", str(cfg), "--configuration", configuration]
    args += ["--epochs", "1", "--device", "cpu", "--no-progress", *extra]
    torch.set_num_threads(1)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return run, manifest


def predict_first_case(run: Path, manifest: Path, out: Path) -> tuple[Path, Path]:
    """``medseg predict`` of the cohort's first image; asserts the mask has its exact grid
    (shape, affine, axis codes); returns (image, mask file)."""
    image = (manifest.parent / json.loads(manifest.read_text())["training"][0]["image"]).resolve()
    result = CliRunner().invoke(
        app, ["predict", "--model", str(run), "--input", str(image), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    src = nib.load(image)
    mask_file = next(out.glob("*.nii.gz"))
    mask = nib.load(mask_file)
    assert mask.shape == src.shape
    np.testing.assert_allclose(mask.affine, src.affine, atol=1e-5)
    assert nib.aff2axcodes(mask.affine) == tuple(AXCODES)
    return image, mask_file

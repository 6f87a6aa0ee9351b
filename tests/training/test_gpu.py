"""CUDA path (opt-in: ``pytest -m gpu``): AMP training and prediction on a GPU.

Skipped without CUDA. It trains the tiny run on the GPU (AMP on), then checks that the
predictor gives the same masks on CUDA and on the CPU from the same checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.inference import Predictor
from medseg.io import load_volume
from medseg.training.run import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_amp_training_and_prediction_on_cuda(
    make_config, tiny_cohort: Path, tmp_path: Path
) -> None:
    cfg = make_config(**{"train.device": "cuda", "train.amp": True, "train.epochs": 4})
    result = train(cfg, tmp_path / "run", force=True)
    assert np.isfinite(result["fold_0"]["best_metric"])
    scan = load_volume(sorted((tiny_cohort.parent / "imagesTr").glob("*.nii.gz"))[0])
    on_gpu = Predictor.from_run(tmp_path / "run", device="cuda")(scan)
    on_cpu = Predictor.from_run(tmp_path / "run", device="cpu")(scan)
    np.testing.assert_allclose(on_gpu.affine, scan.affine)
    agreement = float(np.mean(on_gpu.array == on_cpu.array))
    assert agreement > 0.995

"""The example bundle shipped in ``bundles/phantom_ct`` is valid and segments a phantom."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medseg.bundle import verify_metadata
from medseg.data.synthetic import make_ct_phantom
from medseg.inference import Predictor
from medseg.metrics import dice_per_label

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "phantom_ct"


def test_shipped_bundle_metadata_and_docs() -> None:
    verify_metadata(BUNDLE / "configs" / "metadata.json")
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["name"] == "phantom_ct"
    assert "Held-out test scores" in (BUNDLE / "docs" / "README.md").read_text()
    assert (BUNDLE / "LICENSE").is_file() and (BUNDLE / "models" / "model.ts").is_file()


def test_shipped_bundle_segments_an_unseen_phantom() -> None:
    torch.set_num_threads(1)
    image, label = make_ct_phantom((64, 64, 48), (1.5, 1.5, 3.0), seed=1234, axcodes="LPS")
    predictor = Predictor.from_path(BUNDLE, device="cpu")
    mask = predictor(image)
    np.testing.assert_array_equal(mask.affine, image.affine)
    dice = dice_per_label(mask.array, label.array, [1, 2, 3, 4])
    assert dice[1] > 0.85 and dice[2] > 0.8 and dice[4] > 0.9, dice

"""Fold validation: Dice per label over whole volumes, shared across DDP ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.runtime.distributed import DistInfo
from medseg.training.validation import validate_cases


class _Threshold(torch.nn.Module):
    """Logits that label voxels by intensity: < -0.5 -> 0, -0.5..0.5 -> 1, > 0.5 -> 2."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centres = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1, 1)
        return -self.scale * (x - centres) ** 2


def _cases(n: int) -> list[dict]:
    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        image = rng.uniform(-1.5, 1.5, (1, 12, 10, 8)).astype(np.float32)
        truth = np.digitize(image, [-0.5, 0.5]).astype(np.uint8)
        noisy = np.where(rng.random(truth.shape) < 0.15, rng.integers(0, 3, truth.shape), truth)
        out.append({"image": torch.from_numpy(image), "label": torch.from_numpy(noisy)})
    return out


def test_scores_every_case_against_its_label() -> None:
    cases = _cases(3)
    dice = validate_cases(_Threshold(), cases, [1, 2], (8, 8, 8))
    assert set(dice) == {1, 2}
    assert all(0.75 < v < 0.95 for v in dice.values())  # 15 % of labels were scrambled
    perfect = [
        {**c, "label": torch.from_numpy(np.digitize(c["image"].numpy(), [-0.5, 0.5]))}
        for c in cases
    ]
    assert validate_cases(_Threshold(), perfect, [1, 2], (8, 8, 8)) == pytest.approx(
        {1: 1.0, 2: 1.0}
    )
    assert validate_cases(_Threshold(), [], [1, 2], (8, 8, 8)) == {1: 0.0, 2: 0.0}


def test_each_rank_scores_its_share_of_cases() -> None:
    """Without a process group the cross-rank sum is the identity, exposing each share."""
    cases, net = _cases(5), _Threshold()
    full = validate_cases(net, cases, [1, 2], (8, 8, 8))
    shares = []
    for rank in (0, 1):
        mine = validate_cases(net, cases, [1, 2], (8, 8, 8), dist=DistInfo(rank, 2, rank))
        assert mine == validate_cases(net, cases[rank::2], [1, 2], (8, 8, 8))
        shares.append(mine)
    # summing (Dice sum, count) over the two ranks gives the mean over all five cases
    for k in (1, 2):
        assert (3 * shares[0][k] + 2 * shares[1][k]) / 5 == pytest.approx(full[k])

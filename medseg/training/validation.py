"""Validation of one fold: whole validation volumes, sliding windows, Dice per label.

Under DDP every rank segments its share of the validation cases (``cases[rank::world]``) and
the Dice sums and case counts are added across ranks, so each rank gets the mean over all
cases and the validation takes ``1 / world_size`` of the time it takes on one process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medseg.metrics.overlap import dice_per_label
from medseg.runtime import distributed as ddp


def window_count(shape: Sequence[int], patch_size: Sequence[int], overlap: float) -> int:
    """Sliding windows that :func:`validate_cases` runs on a ``shape`` (X, Y, Z) volume, as
    MONAI's ``sliding_window_inference`` places them (a volume smaller than the window, which
    is padded, takes one)."""
    count = 1
    for size, patch in zip(shape, patch_size, strict=True):
        interval = max(int(patch * (1.0 - overlap)), 1)
        count *= 1 if size <= patch else math.ceil((size - patch) / interval) + 1
    return count


@torch.no_grad()
def validate_cases(
    net: nn.Module,
    cases: Sequence[dict],
    labels: Sequence[int],
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    amp_dtype: torch.dtype | None = None,
    dist: ddp.DistInfo | None = None,
) -> dict[int, float]:
    """Mean Dice per label over ``cases`` (this rank's share, summed across ranks).

    Parameters
    ----------
    net
        Network in eval mode; takes ``(1, 1, X, Y, Z)`` and returns logits
        ``(1, C, X, Y, Z)``.
    cases
        Preprocessed cases: ``image`` float32 ``(1, X, Y, Z)``, ``label`` ``(1, X, Y, Z)``,
        RAS at the plans' spacing (:func:`medseg.training.data.load_cached`).
    labels
        Foreground label values to score.
    patch_size
        Sliding-window size in voxels ``(X, Y, Z)``.
    overlap
        Window overlap (0..1), Gaussian-weighted blending.
    amp_dtype
        Autocast dtype on CUDA (None: float32).
    dist
        DDP rank information (None: one process, every case).

    Returns
    -------
    dict[int, float]
        ``{label: mean Dice}``; 0.0 for a label when there are no cases.
    """
    dist = dist or ddp.DistInfo()
    device = next(net.parameters()).device
    totals = np.zeros((2, len(labels)))  # row 0: Dice sums, row 1: case counts
    for case in list(cases)[dist.rank :: dist.world_size]:
        image = case["image"][None].to(device)
        with torch.autocast(
            "cuda", dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None
        ):
            logits = sliding_window_inference(
                image, tuple(patch_size), 4, net, overlap=overlap, mode="gaussian"
            )
        pred = torch.argmax(torch.as_tensor(logits), dim=1)[0].cpu().numpy()
        dice = dice_per_label(pred, np.asarray(case["label"][0]), list(labels))
        totals[0] += [dice[k] for k in labels]
        totals[1] += 1
    totals = ddp.sum_across(totals, dist)
    return {
        k: float(totals[0, i] / totals[1, i]) if totals[1, i] else 0.0 for i, k in enumerate(labels)
    }

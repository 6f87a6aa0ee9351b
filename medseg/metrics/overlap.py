"""Overlap measures: Dice, IoU, precision, recall and volumes in millilitres.

Empty-set rules (the same everywhere in :mod:`medseg.metrics`)
---------------------------------------------------------------
- Both masks empty: Dice = IoU = precision = recall = 1, volume difference 0.
- Reference empty, prediction not: Dice = IoU = recall = 0 (``0/0`` recall is a failure),
  precision = 0, volume difference in percent ``+inf``.
- Prediction empty, reference not: Dice = IoU = precision = recall = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OVERLAP_KEYS = (
    "dice",
    "iou",
    "precision",
    "recall",
    "vol_ref_ml",
    "vol_pred_ml",
    "vol_diff_ml",
    "vol_diff_pct",
)


def _ratio(num: float, den: float, both_empty: bool) -> float:
    """``num / den`` with ``0/0`` -> 1 when both masks are empty and 0 otherwise."""
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


def overlap_from_counts(
    tp: int, n_pred: int, n_ref: int, voxel_volume_mm3: float
) -> dict[str, float]:
    """Overlap measures from voxel counts.

    Parameters
    ----------
    tp
        Voxels in both the prediction and the reference.
    n_pred, n_ref
        Voxels in the prediction and in the reference.
    voxel_volume_mm3
        Volume of one voxel in mm^3 (product of the reference spacing).

    Returns
    -------
    dict
        ``dice, iou, precision, recall`` (0..1), ``vol_ref_ml, vol_pred_ml, vol_diff_ml``
        (prediction minus reference, ml) and ``vol_diff_pct`` (relative to the reference, %).
    """
    both_empty = n_pred == 0 and n_ref == 0
    union = n_pred + n_ref - tp
    vol_ref = n_ref * voxel_volume_mm3 / 1000.0
    vol_pred = n_pred * voxel_volume_mm3 / 1000.0
    if n_ref > 0:
        pct = 100.0 * (vol_pred - vol_ref) / vol_ref
    else:
        pct = 0.0 if n_pred == 0 else float("inf")
    return {
        "dice": _ratio(2 * tp, n_pred + n_ref, both_empty),
        "iou": _ratio(tp, union, both_empty),
        "precision": _ratio(tp, n_pred, both_empty),
        "recall": _ratio(tp, n_ref, both_empty),
        "vol_ref_ml": vol_ref,
        "vol_pred_ml": vol_pred,
        "vol_diff_ml": vol_pred - vol_ref,
        "vol_diff_pct": pct,
    }


def dice_per_label(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
    """Dice coefficient of each label of two label maps (cheap: counts only, no distances).

    Parameters
    ----------
    pred, ref
        Integer label maps of equal shape (any number of dimensions, same grid).
    labels
        Label values to score (0 is allowed, e.g. for background).

    Returns
    -------
    dict[int, float]
        ``{label: dice}``; a label absent from both maps scores 1, absent from one scores 0.

    Raises
    ------
    ValueError
        If the shapes differ.

    Examples
    --------
    >>> a = np.array([0, 1, 1, 2]); b = np.array([0, 1, 2, 2])
    >>> dice_per_label(a, b, [1, 2, 3])
    {1: 0.6666666666666666, 2: 0.6666666666666666, 3: 1.0}
    """
    p = np.asarray(pred)
    r = np.asarray(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    out: dict[int, float] = {}
    for lab in labels:
        pm = p == lab
        rm = r == lab
        n_p = int(np.count_nonzero(pm))
        n_r = int(np.count_nonzero(rm))
        tp = int(np.count_nonzero(pm & rm)) if n_p and n_r else 0
        out[int(lab)] = _ratio(2 * tp, n_p + n_r, n_p == 0 and n_r == 0)
    return out

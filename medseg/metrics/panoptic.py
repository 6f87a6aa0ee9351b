"""Panoptic quality (Kirillov et al., CVPR 2019) of lesion instances, per label.

Definition
----------
Instances are the connected components of one label in each map (:func:`scipy.ndimage.label`
with the neighbourhood of :func:`medseg.metrics.lesion.structure_for`, the same
``connectivity`` as the lesion-wise measures; medseg's default is 3, the 26-neighbourhood).
A reference instance ``g`` and a predicted instance ``p`` match when ``IoU(g, p) > 0.5``
(strictly). Because instances of one map do not overlap, such a match is unique: no solver is
needed. Matched pairs are TP, unmatched predicted instances FP, unmatched reference instances FN:

- ``SQ`` (segmentation quality) = mean IoU of the matched pairs,
- ``RQ`` (recognition quality) = ``TP / (TP + FP/2 + FN/2)`` (an F1 score),
- ``PQ = SQ x RQ = sum of matched IoUs / (TP + FP/2 + FN/2)``.

IoU is counted in voxels, so the measure does not depend on the spacing.

Empty cases
-----------
- No instance in either map: ``PQ``, ``SQ`` and ``RQ`` are **NaN** (undefined), so summaries
  count them under ``n_nan`` and leave them out of the means. This is the ``no_instances``
  convention of the panoptica library (BrainLesion/panoptica: NaN for its IoU/Dice-based
  metrics) and of Kirillov et al., who drop a class absent from both. It differs from
  medseg's lesion-wise F1/Dice, which score an empty-empty case 1 as BraTS 2023 does.
- Instances but no match (``TP = 0``): ``PQ = RQ = 0`` and ``SQ = 0`` (panoptica's default for
  zero TP; the mean IoU of no pairs is otherwise undefined).

:func:`pooled_panoptic` gives the dataset-level PQ of Kirillov et al.: TP, FP, FN and the sum
of matched IoUs are pooled over cases before dividing, so empty cases simply add nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.metrics.lesion import overlap_pairs, structure_for

PANOPTIC_KEYS = ("pq_n_ref", "pq_n_pred", "pq_tp", "pq_fp", "pq_fn", "pq_sq", "pq_rq", "pq")


def empty_panoptic() -> dict[str, float]:
    """The panoptic row of a label with no instance in either map (NaN qualities)."""
    row: dict[str, float] = dict.fromkeys(PANOPTIC_KEYS[:5], 0)
    row.update(pq_sq=math.nan, pq_rq=math.nan, pq=math.nan)
    return row


def panoptic_from_instances(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Panoptic quality of two instance maps (0 background, ids 1..N per map).

    Parameters
    ----------
    pred, ref
        Non-negative integer instance maps of equal shape (any dimension) on the same grid;
        each positive id is one instance (ids need not be contiguous).

    Returns
    -------
    dict
        ``pq_n_ref, pq_n_pred`` (instances), ``pq_tp, pq_fp, pq_fn`` (counts), ``pq_sq``,
        ``pq_rq``, ``pq`` (0..1, NaN when neither map has an instance). See the module
        docstring.
    """
    p = np.asarray(pred)
    g = np.asarray(ref)
    if p.shape != g.shape:
        raise ValueError(f"expected instance maps of equal shape, got {p.shape} and {g.shape}")
    p_fg, g_fg = p > 0, g > 0
    p_ids, g_ids = p[p_fg], g[g_fg]  # foreground only: counting over the scan is slow
    n_p, n_g = int(p_ids.max(initial=0)), int(g_ids.max(initial=0))
    p_size = np.bincount(p_ids, minlength=n_p + 1)
    g_size = np.bincount(g_ids, minlength=n_g + 1)
    n_pred, n_ref = int(np.count_nonzero(p_size[1:])), int(np.count_nonzero(g_size[1:]))
    if n_pred == 0 and n_ref == 0:
        return empty_panoptic()
    gi, pj, inter = overlap_pairs(g, p, n_g, n_p, p_fg & g_fg)
    iou = inter / (g_size[gi] + p_size[pj] - inter)
    matched = iou > 0.5  # unique: two instances cannot both overlap one by more than half
    tp = int(matched.sum())
    fp, fn = n_pred - tp, n_ref - tp
    iou_sum = float(iou[matched].sum())
    sq = iou_sum / tp if tp else 0.0
    rq = tp / (tp + fp / 2 + fn / 2)
    return {
        "pq_n_ref": n_ref,
        "pq_n_pred": n_pred,
        "pq_tp": tp,
        "pq_fp": fp,
        "pq_fn": fn,
        "pq_sq": sq,
        "pq_rq": rq,
        "pq": sq * rq,
    }


def panoptic_quality(
    pred: np.ndarray, ref: np.ndarray, *, connectivity: int = 3
) -> dict[str, float]:
    """Panoptic quality of two binary masks of one label, instances by connected components.

    Parameters
    ----------
    pred, ref
        Boolean masks of equal shape ``(I, J, K)`` on the same grid.
    connectivity
        Neighbourhood of the components: 1/2/3 (or 6/18/26), as for
        :func:`medseg.metrics.lesion.lesion_metrics`.

    Returns
    -------
    dict
        See :func:`panoptic_from_instances`.
    """
    st = structure_for(connectivity)
    p, _ = ndimage.label(np.asarray(pred, bool), structure=st)
    g, _ = ndimage.label(np.asarray(ref, bool), structure=st)
    return panoptic_from_instances(p, g)


def pooled_panoptic(rows: Sequence[dict[str, Any]], labels: Sequence[int]) -> dict[str, Any]:
    """Dataset-level PQ per label (Kirillov et al.): counts and matched IoUs pooled over cases.

    Parameters
    ----------
    rows
        Per-case rows holding ``label`` and the :data:`PANOPTIC_KEYS`; rows without them are
        skipped.
    labels
        Labels to pool.

    Returns
    -------
    dict
        ``{str(label): {"tp", "fp", "fn", "sq", "rq", "pq"}}`` for labels with panoptic rows;
        the qualities are NaN when no case of the label has an instance.
    """
    out: dict[str, Any] = {}
    for lab in labels:
        sel = [r for r in rows if r.get("label") == lab and "pq_tp" in r]
        if not sel:
            continue
        tp = sum(int(r["pq_tp"]) for r in sel)
        fp = sum(int(r["pq_fp"]) for r in sel)
        fn = sum(int(r["pq_fn"]) for r in sel)
        iou_sum = sum(float(r["pq_sq"]) * int(r["pq_tp"]) for r in sel if r["pq_tp"])
        denom = tp + fp / 2 + fn / 2
        sq = iou_sum / tp if tp else (0.0 if denom else math.nan)
        rq = tp / denom if denom else math.nan
        out[str(lab)] = {"tp": tp, "fp": fp, "fn": fn, "sq": sq, "rq": rq, "pq": sq * rq}
    return out

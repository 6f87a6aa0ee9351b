"""Lesion-wise (instance) measures from connected components.

Matching rule
-------------
Components come from :func:`scipy.ndimage.label` with ``connectivity`` 1, 2 or 3 (6-, 18- or
26-neighbourhood in 3D; 6, 18, 26 are accepted too). For each reference lesion ``G_i``, let
``U_i`` be the union of the predicted components that overlap it.

- ``overlap="any"``: ``G_i`` is detected (TP) when ``U_i`` is not empty.
- ``overlap="iou"``: ``G_i`` is detected when ``IoU(G_i, U_i) >= iou_threshold``.

Undetected reference lesions are FN. A predicted component is a FP when it matches no reference
lesion under the same rule (for ``"iou"``: IoU with the union of the reference lesions it
touches is below the threshold). Lesion-wise F1 = ``2 TP / (2 TP + FP + FN)``.

Lesion-wise Dice in the BraTS 2023 style: ``sum_i Dice(G_i, U_i) / (n_ref + FP)``, i.e. every
reference lesion contributes its Dice (0 when missed) and every false-positive component
contributes 0. BraTS additionally dilates each reference lesion by a few voxels before looking
for overlapping predictions and drops lesions under a size threshold; medseg does **not**
dilate (matching uses the lesion itself) and drops components smaller than ``min_voxels``
(default 1, i.e. nothing) from both maps. With no lesion in either map the score is 1; with
lesions in only one map it is 0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

LESION_KEYS = (
    "lesion_n_ref",
    "lesion_n_pred",
    "lesion_tp",
    "lesion_fp",
    "lesion_fn",
    "lesion_f1",
    "lesion_dice",
)
#: Above this many ``(ref, pred)`` id pairs the overlap table is built with ``np.unique``
#: (sparse) instead of one dense ``np.bincount``.
_DENSE_PAIRS = 1 << 24


def structure_for(connectivity: int) -> np.ndarray:
    """3D structuring element for a connectivity given as 1/2/3 or 6/18/26."""
    rank = {1: 1, 2: 2, 3: 3, 6: 1, 18: 2, 26: 3}.get(int(connectivity))
    if rank is None:
        raise ValueError(f"connectivity must be 1, 2, 3 (or 6, 18, 26), got {connectivity}")
    return ndimage.generate_binary_structure(3, rank)


def _components(mask: np.ndarray, structure: np.ndarray, min_voxels: int) -> np.ndarray:
    lab, n = ndimage.label(mask, structure=structure)
    if min_voxels > 1 and n:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        keep = sizes >= min_voxels
        keep[0] = False
        remap = np.zeros(n + 1, dtype=np.int64)
        remap[keep] = np.arange(1, int(keep.sum()) + 1)
        lab = remap[lab]
    return lab


def overlap_pairs(
    ref: np.ndarray,
    pred: np.ndarray,
    n_ref: int,
    n_pred: int,
    both: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sparse contingency table of two instance maps: every overlapping pair and its size.

    Parameters
    ----------
    ref, pred
        Non-negative integer instance maps of equal shape (0 background, ids up to ``n_ref``
        and ``n_pred``).
    n_ref, n_pred
        The largest id of each map.
    both
        ``(ref > 0) & (pred > 0)`` when the caller has it already.

    Returns
    -------
    ref_ids, pred_ids, voxels
        One entry per overlapping ``(ref id, pred id)`` pair, sorted by ref id then pred id;
        ``voxels`` (float64) counts the voxels the two instances share.
    """
    if both is None:
        both = (ref > 0) & (pred > 0)
    pair = ref[both].astype(np.int64) * (n_pred + 1) + pred[both].astype(np.int64)
    if (n_ref + 1) * (n_pred + 1) <= _DENSE_PAIRS:
        counts = np.bincount(pair, minlength=(n_ref + 1) * (n_pred + 1))
        idx = np.flatnonzero(counts)
        inter = counts[idx]
    else:  # too many ids for a dense table
        idx, inter = np.unique(pair, return_counts=True)
    return idx // (n_pred + 1), idx % (n_pred + 1), inter.astype(np.float64)


def lesion_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    connectivity: int = 3,
    overlap: Literal["any", "iou"] = "any",
    iou_threshold: float = 0.1,
    min_voxels: int = 1,
) -> dict[str, float]:
    """Detection counts, lesion-wise F1 and BraTS-style lesion-wise Dice of two masks.

    Parameters
    ----------
    pred, ref
        Boolean masks of equal shape ``(I, J, K)`` on the same grid.
    connectivity
        Neighbourhood for connected components: 1/2/3 (or 6/18/26).
    overlap
        Matching rule, ``"any"`` voxel overlap or ``"iou"`` at ``iou_threshold``.
    iou_threshold
        Minimum IoU for a match when ``overlap="iou"``.
    min_voxels
        Components smaller than this are ignored in both maps.

    Returns
    -------
    dict
        ``lesion_n_ref, lesion_n_pred, lesion_tp, lesion_fp, lesion_fn`` (counts),
        ``lesion_f1`` and ``lesion_dice`` (0..1). See the module docstring.
    """
    if overlap not in ("any", "iou"):
        raise ValueError(f"overlap must be 'any' or 'iou', got {overlap!r}")
    st = structure_for(connectivity)
    g = _components(np.asarray(ref, bool), st, min_voxels)
    p = _components(np.asarray(pred, bool), st, min_voxels)
    n_g, n_p = int(g.max(initial=0)), int(p.max(initial=0))
    gi, pj, inter = overlap_pairs(g, p, n_g, n_p)
    g_size = np.bincount(g.ravel(), minlength=n_g + 1).astype(np.float64)
    p_size = np.bincount(p.ravel(), minlength=n_p + 1).astype(np.float64)
    inter_g = np.bincount(gi, weights=inter, minlength=n_g + 1)[1:]  # |G_i & U_i|
    union_size_g = np.bincount(gi, weights=p_size[pj], minlength=n_g + 1)[1:]  # |U_i|
    inter_p = np.bincount(pj, weights=inter, minlength=n_p + 1)[1:]
    union_size_p = np.bincount(pj, weights=g_size[gi], minlength=n_p + 1)[1:]
    g_size, p_size = g_size[1:], p_size[1:]
    dice_g = np.where(inter_g > 0, 2 * inter_g / np.maximum(g_size + union_size_g, 1), 0.0)
    if overlap == "any":
        detected = inter_g > 0
        matched_p = inter_p > 0
    else:
        iou_g = inter_g / np.maximum(g_size + union_size_g - inter_g, 1)
        iou_p = inter_p / np.maximum(p_size + union_size_p - inter_p, 1)
        detected = (inter_g > 0) & (iou_g >= iou_threshold)
        matched_p = (inter_p > 0) & (iou_p >= iou_threshold)
    tp = int(detected.sum())
    fn = n_g - tp
    fp = int(n_p - matched_p.sum())
    if n_g == 0 and n_p == 0:
        f1, ldice = 1.0, 1.0
    else:
        f1 = 2 * tp / (2 * tp + fp + fn)
        ldice = float(np.where(detected, dice_g, 0.0).sum()) / (n_g + fp)
    return {
        "lesion_n_ref": n_g,
        "lesion_n_pred": n_p,
        "lesion_tp": tp,
        "lesion_fp": fp,
        "lesion_fn": fn,
        "lesion_f1": float(f1),
        "lesion_dice": ldice,
    }

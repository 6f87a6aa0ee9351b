"""Lesion-wise measures against a loop-over-components implementation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg.metrics import lesion_metrics


def brute_lesions(pred, ref, structure, overlap, thr):
    g, n_g = ndimage.label(ref, structure)
    p, n_p = ndimage.label(pred, structure)
    tp, dices = 0, []
    for i in range(1, n_g + 1):
        gi = g == i
        hits = [j for j in np.unique(p[gi]) if j]
        u = np.isin(p, hits)
        inter, union = np.sum(gi & u), np.sum(gi | u)
        ok = inter > 0 if overlap == "any" else (inter > 0 and inter / union >= thr)
        tp += ok
        dices.append(2 * inter / (gi.sum() + u.sum()) if ok else 0.0)
    fp = 0
    for j in range(1, n_p + 1):
        pj = p == j
        hits = [i for i in np.unique(g[pj]) if i]
        u = np.isin(g, hits)
        inter, union = np.sum(pj & u), np.sum(pj | u)
        ok = inter > 0 if overlap == "any" else (inter > 0 and inter / union >= thr)
        fp += not ok
    fn = n_g - tp
    f1 = 2 * tp / (2 * tp + fp + fn) if (n_g or n_p) else 1.0
    ldice = sum(dices) / (n_g + fp) if (n_g or n_p) else 1.0
    return tp, fp, fn, f1, ldice


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("connectivity", [1, 3])
@pytest.mark.parametrize("overlap,thr", [("any", 0.0), ("iou", 0.3)])
def test_random_lesions_match_brute_force(seed, connectivity, overlap, thr):
    rng = np.random.default_rng(seed)
    ref = rng.random((12, 10, 8)) < 0.08
    pred = ref & (rng.random(ref.shape) < 0.7) | (rng.random(ref.shape) < 0.04)
    st = ndimage.generate_binary_structure(3, connectivity)
    tp, fp, fn, f1, ldice = brute_lesions(pred, ref, st, overlap, thr)
    got = lesion_metrics(pred, ref, connectivity=connectivity, overlap=overlap, iou_threshold=thr)
    assert (got["lesion_tp"], got["lesion_fp"], got["lesion_fn"]) == (tp, fp, fn)
    assert got["lesion_f1"] == pytest.approx(f1)
    assert got["lesion_dice"] == pytest.approx(ldice)


def test_hand_made_case_tp_fp_fn():
    ref = np.zeros((20, 20, 20), bool)
    ref[2:5, 2:5, 2:5] = True  # detected
    ref[10:13, 10:13, 10:13] = True  # missed
    pred = np.zeros_like(ref)
    pred[3:6, 2:5, 2:5] = True  # overlaps lesion 1: 18 of 27 voxels
    pred[15:17, 15:17, 15:17] = True  # false positive
    got = lesion_metrics(pred, ref)
    assert (got["lesion_tp"], got["lesion_fp"], got["lesion_fn"]) == (1, 1, 1)
    assert got["lesion_f1"] == pytest.approx(0.5)
    assert got["lesion_dice"] == pytest.approx((2 * 18 / 54) / 3)
    strict = lesion_metrics(pred, ref, overlap="iou", iou_threshold=0.6)
    assert strict["lesion_tp"] == 0  # IoU 18/36 = 0.5


def test_connectivity_changes_component_count():
    ref = np.zeros((5, 5, 5), bool)
    ref[1, 1, 1] = ref[2, 2, 2] = True  # corner neighbours only
    assert lesion_metrics(ref, ref, connectivity=6)["lesion_n_ref"] == 2
    assert lesion_metrics(ref, ref, connectivity=26)["lesion_n_ref"] == 1
    with pytest.raises(ValueError, match="connectivity"):
        lesion_metrics(ref, ref, connectivity=4)

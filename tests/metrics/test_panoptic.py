"""Panoptic quality on hand-built cases with known answers, and against a brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from medseg.metrics.case import compute_case_metrics
from medseg.metrics.panoptic import (
    PANOPTIC_KEYS,
    panoptic_from_instances,
    panoptic_quality,
    pooled_panoptic,
)

SHAPE = (20, 20, 10)


def blank() -> np.ndarray:
    return np.zeros(SHAPE, bool)


def test_perfect_match_is_one() -> None:
    ref = blank()
    ref[2:8, 2:8, 2:6] = ref[12:16, 12:18, 3:9] = True
    out = panoptic_quality(ref.copy(), ref)
    assert (out["pq_tp"], out["pq_fp"], out["pq_fn"]) == (2, 0, 0)
    assert out["pq"] == out["pq_sq"] == out["pq_rq"] == 1.0


def test_iou_0_4_is_unmatched() -> None:
    ref, pred = blank(), blank()
    ref[0:10, 0:4, 0:4] = True  # 160 voxels
    pred[4:14, 0:4, 0:4] = True  # overlap 6 x 4 x 4 = 96 -> IoU 96 / 224 ~ 0.43
    pred2 = blank()
    pred2[5:15, 0:4, 0:4] = True  # overlap 80 -> IoU 80 / 240 = 1/3
    for p, iou in ((pred, 96 / 224), (pred2, 1 / 3)):
        assert iou < 0.5
        out = panoptic_quality(p, ref)
        assert (out["pq_tp"], out["pq_fp"], out["pq_fn"]) == (0, 1, 1)
        assert out["pq"] == out["pq_rq"] == out["pq_sq"] == 0.0


def test_two_reference_lesions_one_matched() -> None:
    ref, pred = blank(), blank()
    ref[0:10, 0:4, 0:4] = True
    ref[14:18, 14:18, 2:6] = True  # missed: FN
    pred[2:10, 0:4, 0:4] = True  # IoU 128 / 160 = 0.8
    pred[14:18, 0:3, 6:9] = True  # nowhere: FP
    out = panoptic_quality(pred, ref)
    assert (out["pq_n_ref"], out["pq_n_pred"]) == (2, 2)
    assert (out["pq_tp"], out["pq_fp"], out["pq_fn"]) == (1, 1, 1)
    assert out["pq_sq"] == pytest.approx(0.8)
    assert out["pq_rq"] == pytest.approx(1 / (1 + 0.5 + 0.5))
    assert out["pq"] == pytest.approx(0.4)


def test_empty_cases() -> None:
    ref = blank()
    ref[2:6, 2:6, 2:6] = True
    both = panoptic_quality(blank(), blank())
    assert all(math.isnan(both[k]) for k in ("pq", "pq_sq", "pq_rq"))
    assert both["pq_tp"] == both["pq_fp"] == both["pq_fn"] == 0
    only_ref = panoptic_quality(blank(), ref)
    assert (only_ref["pq_fn"], only_ref["pq"], only_ref["pq_sq"]) == (1, 0.0, 0.0)
    only_pred = panoptic_quality(ref, blank())
    assert (only_pred["pq_fp"], only_pred["pq"]) == (1, 0.0)


def test_connectivity_decides_instances() -> None:
    ref = blank()
    ref[2:4, 2:4, 2:4] = ref[4:6, 4:6, 4:6] = True  # touching at one corner
    pred = blank()
    pred[2:4, 2:4, 2:4] = True
    assert panoptic_quality(pred, ref, connectivity=3)["pq_n_ref"] == 1
    out = panoptic_quality(pred, ref, connectivity=1)
    assert (out["pq_n_ref"], out["pq_tp"], out["pq_fn"]) == (2, 1, 1)


def brute_pq(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int, float]:
    st = np.ones((3, 3, 3))
    g, n_g = ndimage.label(ref, st)
    p, n_p = ndimage.label(pred, st)
    tp, ious = 0, []
    for i in range(1, n_g + 1):
        for j in range(1, n_p + 1):
            inter = np.sum((g == i) & (p == j))
            iou = inter / np.sum((g == i) | (p == j))
            if iou > 0.5:
                tp += 1
                ious.append(iou)
    return tp, n_p - tp, n_g - tp, float(np.sum(ious))


@pytest.mark.parametrize("seed", range(4))
def test_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = ndimage.binary_opening(rng.random(SHAPE) < 0.35)
    pred = ref ^ (rng.random(SHAPE) < 0.05)
    tp, fp, fn, iou_sum = brute_pq(pred, ref)
    out = panoptic_quality(pred, ref)
    assert (out["pq_tp"], out["pq_fp"], out["pq_fn"]) == (tp, fp, fn)
    assert out["pq"] == pytest.approx(iou_sum / (tp + fp / 2 + fn / 2))


def test_instance_maps_need_not_be_contiguous_and_ignore_spacing() -> None:
    ref = np.zeros(SHAPE, np.uint16)
    ref[0:4, 0:4, 0:4] = 7
    pred = np.zeros(SHAPE, np.uint16)
    pred[0:4, 0:4, 0:3] = 3  # IoU 0.75
    out = panoptic_from_instances(pred, ref)
    assert (out["pq_n_ref"], out["pq_n_pred"], out["pq_tp"]) == (1, 1, 1)
    assert out["pq"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="equal shape"):
        panoptic_from_instances(pred[:, :, :5], ref)
    # in compute_case_metrics the voxel spacing plays no part
    lab_ref, lab_pred = (ref > 0).astype(np.uint8), (pred > 0).astype(np.uint8)
    rows = [
        compute_case_metrics(lab_pred, lab_ref, sp, [1], instance_labels=[1])[0]
        for sp in ((1.0, 1.0, 1.0), (0.7, 0.9, 2.5))
    ]
    assert rows[0]["pq"] == rows[1]["pq"] == pytest.approx(0.75)
    assert set(PANOPTIC_KEYS) <= set(rows[0])


def test_case_rows_and_pooled() -> None:
    ref = np.zeros(SHAPE, np.uint8)
    ref[0:10, 0:4, 0:4] = 1
    pred = np.zeros(SHAPE, np.uint8)
    pred[2:10, 0:4, 0:4] = 1  # IoU 0.8
    rows = compute_case_metrics(pred, ref, (1, 1, 1), [1, 2], instance_labels=[1, 2])
    by = {r["label"]: r for r in rows}
    assert by[1]["pq"] == pytest.approx(0.8) and math.isnan(by[2]["pq"])  # 2 absent: NaN
    other = dict(by[1], pq_tp=0, pq_fp=0, pq_fn=2, pq_sq=0.0, pq_rq=0.0, pq=0.0)
    pooled = pooled_panoptic([by[1], other, by[2]], [1, 2])
    assert pooled["1"]["tp"] == 1 and pooled["1"]["fn"] == 2
    assert pooled["1"]["pq"] == pytest.approx(0.8 / (1 + 1.0))
    assert math.isnan(pooled["2"]["pq"])
    no_instances = compute_case_metrics(pred, ref, (1, 1, 1), [1])[0]
    assert "pq" not in no_instances

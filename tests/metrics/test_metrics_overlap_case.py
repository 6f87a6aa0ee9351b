"""Overlap measures, empty-mask rules and the per-case API."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from medseg.metrics import compute_case_metrics, dice_per_label
from medseg.metrics.summary import describe, summarize

SPACING = (0.5, 1.0, 2.5)


@pytest.mark.parametrize("seed", range(4))
def test_overlap_against_counts(seed):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, 3, (12, 10, 8))
    ref = rng.integers(0, 3, (12, 10, 8))
    rows = compute_case_metrics(pred, ref, SPACING, [1, 2])
    cheap = dice_per_label(pred, ref, [1, 2])
    for row in rows:
        p, r = pred == row["label"], ref == row["label"]
        tp = np.sum(p & r)
        assert row["dice"] == pytest.approx(2 * tp / (p.sum() + r.sum()))
        assert cheap[row["label"]] == pytest.approx(row["dice"])
        assert row["iou"] == pytest.approx(tp / np.sum(p | r))
        assert row["precision"] == pytest.approx(tp / p.sum())
        assert row["recall"] == pytest.approx(tp / r.sum())
        vox_ml = 0.5 * 1.0 * 2.5 / 1000
        assert row["vol_ref_ml"] == pytest.approx(r.sum() * vox_ml)
        assert row["vol_diff_ml"] == pytest.approx((p.sum() - r.sum()) * vox_ml)
        assert row["vol_diff_pct"] == pytest.approx(100 * (p.sum() - r.sum()) / r.sum())


def test_both_empty_label_scores_one_and_zero_distance():
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    (row,) = compute_case_metrics(ref, ref, SPACING, [2], lesion_labels=[2])
    assert row["dice"] == 1.0 and row["iou"] == 1.0
    assert row["hd"] == 0.0 and row["hd95"] == 0.0 and row["assd"] == 0.0
    assert row["nsd"] == 1.0 and row["lesion_f1"] == 1.0 and row["lesion_dice"] == 1.0
    assert dice_per_label(ref, ref, [2]) == {2: 1.0}


@pytest.mark.parametrize("empty", ["pred", "ref"])
def test_one_empty_mask_gives_zero_dice_and_inf_distances(empty):
    full = np.zeros((8, 8, 8), np.uint8)
    full[2:5, 2:5, 2:5] = 1
    zero = np.zeros_like(full)
    pred, ref = (zero, full) if empty == "pred" else (full, zero)
    (row,) = compute_case_metrics(pred, ref, SPACING, [1])
    assert row["dice"] == 0.0 and row["precision"] == 0.0 and row["recall"] == 0.0
    assert math.isinf(row["hd"]) and math.isinf(row["hd95"]) and math.isinf(row["assd"])
    assert row["nsd"] == 0.0 and row["bf1"] == 0.0
    assert dice_per_label(pred, ref, [1]) == {1: 0.0}
    if empty == "ref":
        assert math.isinf(row["vol_diff_pct"])


def test_summary_counts_inf_separately_and_never_averages_it():
    rows = [
        {"case": "a", "label": 1, "dice": 0.8, "hd95": 2.0},
        {"case": "b", "label": 1, "dice": 0.6, "hd95": 4.0},
        {"case": "c", "label": 1, "dice": 0.0, "hd95": float("inf")},
    ]
    stats = summarize(rows, [1])["labels"]["1"]
    assert stats["hd95"]["n_inf"] == 1 and stats["hd95"]["n"] == 3
    assert stats["hd95"]["mean"] == pytest.approx(3.0)
    assert stats["hd95"]["median"] == pytest.approx(3.0)
    assert stats["dice"]["mean"] == pytest.approx(1.4 / 3)
    assert describe([float("inf")])["mean"] is None


def test_bad_inputs_are_rejected():
    a = np.zeros((4, 4, 4))
    with pytest.raises(ValueError, match="equal shape"):
        compute_case_metrics(a, np.zeros((4, 4, 5)), SPACING, [1])
    with pytest.raises(ValueError, match="integer"):
        compute_case_metrics(a + 0.5, a, SPACING, [1])
    with pytest.raises(ValueError, match="positive"):
        compute_case_metrics(a, a, SPACING, [0])


def test_labels_above_the_requested_ones_are_ignored():
    ref = np.zeros((6, 6, 6), np.uint8)
    ref[1:3, 1:3, 1:3] = 1
    ref[4:6, 4:6, 4:6] = 7
    pred = ref.copy()
    pred[0, 0, 0] = 1
    (row,) = compute_case_metrics(pred, ref, SPACING, [1])
    assert row["n_pred"] == 9 and row["n_ref"] == 8


@pytest.mark.realdata
def test_spinal_cord_dice_reference_value(shared_data):
    folder = shared_data / "nifti" / "spinalcord_mr" / "t2"
    pred = nib.load(folder / "t2_seg-deepseg_sc-3d.nii.gz")
    ref = nib.load(folder / "t2_seg-manual.nii.gz")
    p, r = np.asarray(pred.dataobj), np.asarray(ref.dataobj)
    spacing = tuple(float(z) for z in ref.header.get_zooms()[:3])
    assert round(dice_per_label(p, r, [1])[1], 4) == 0.9808
    (row,) = compute_case_metrics(p, r, spacing, [1])
    assert round(row["dice"], 4) == 0.9808
    assert 0 < row["hd95"] < 5 and 0.9 < row["nsd"] <= 1.0

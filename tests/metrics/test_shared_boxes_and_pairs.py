"""Helpers the metrics and post-processing share: the sparse overlap table of two instance
maps, per-label bounding boxes, boxes of label maps and merged boxes with a per-axis margin."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import medseg.metrics.lesion as lesion
from medseg.metrics.case import label_boxes
from medseg.metrics.lesion import overlap_pairs
from medseg.metrics.surface_search import bounding_box, merge_boxes


@pytest.mark.parametrize("dense", [True, False])
def test_overlap_pairs_equal_the_full_contingency_table(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, dense: bool
) -> None:
    if not dense:
        monkeypatch.setattr(lesion, "_DENSE_PAIRS", 0)  # the np.unique branch
    ref, n_ref = ndimage.label(rng.random((20, 18, 16)) > 0.6)
    pred, n_pred = ndimage.label(rng.random((20, 18, 16)) > 0.6)
    table = np.zeros((n_ref + 1, n_pred + 1))
    np.add.at(table, (ref.ravel(), pred.ravel()), 1)
    table[0, :] = table[:, 0] = 0
    gi, pj, voxels = overlap_pairs(ref, pred, n_ref, n_pred)
    want_g, want_p = np.nonzero(table)  # row-major: sorted by ref id, then pred id
    assert np.array_equal(gi, want_g) and np.array_equal(pj, want_p)
    assert np.array_equal(voxels, table[want_g, want_p]) and voxels.dtype == np.float64
    both = (ref > 0) & (pred > 0)
    again = overlap_pairs(ref, pred, n_ref, n_pred, both)
    assert all(np.array_equal(a, b) for a, b in zip(again, (gi, pj, voxels), strict=True))


def test_label_boxes_equal_find_objects(rng: np.random.Generator) -> None:
    labels = np.zeros((30, 25, 20), np.uint8)
    labels[3:9, 4:20, 2:5] = 1
    labels[10:12, 1:3, 15:19] = 3
    labels[20:25, 20:24, 8:9] = 7  # above max_label: ignored
    assert label_boxes(labels, 4) == ndimage.find_objects(np.where(labels <= 4, labels, 0), 4)
    assert label_boxes(labels, 4)[1] is None
    assert label_boxes(np.zeros((4, 4, 4), np.uint8), 2) == [None, None]
    assert label_boxes(labels, 0) == []


def test_bounding_box_of_a_label_map_equals_that_of_its_foreground() -> None:
    labels = np.zeros((12, 10, 8), np.uint16)
    labels[2:5, 3:4, 1:7] = 300
    labels[8, 9, 7] = 2
    assert (
        bounding_box(labels)
        == bounding_box(labels != 0)
        == (
            slice(2, 9),
            slice(3, 10),
            slice(1, 8),
        )
    )


def test_merge_boxes_with_a_margin_per_axis() -> None:
    boxes = [(slice(2, 4), slice(5, 6), slice(0, 3)), None, (slice(3, 9), slice(1, 2), slice(1, 2))]
    assert merge_boxes(boxes, (10, 8, 6), margin=[1, 0, 4]) == (
        slice(1, 10),
        slice(1, 6),
        slice(0, 6),
    )
    assert merge_boxes(boxes, (10, 8, 6), margin=1) == merge_boxes(boxes, (10, 8, 6), [1, 1, 1])
    with pytest.raises(ValueError, match="needs the array shape"):
        merge_boxes(boxes, margin=[0, 1, 0])

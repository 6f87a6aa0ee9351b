"""Per-case, per-label metrics of two label maps: the one entry point training, post-processing
and ``medseg evaluate`` share.

Each label is scored on the bounding box of its voxels in either map (grown by one voxel), so
the cost depends on the size of the structure, not of the scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from medseg.metrics.lesion import LESION_KEYS, lesion_metrics
from medseg.metrics.overlap import OVERLAP_KEYS, overlap_from_counts
from medseg.metrics.panoptic import empty_panoptic, panoptic_quality
from medseg.metrics.surface import SURFACE_KEYS, surface_distances, surface_metrics
from medseg.metrics.surface_search import bounding_box, merge_boxes

COUNT_KEYS = ("n_ref", "n_pred")
METRIC_KEYS = COUNT_KEYS + OVERLAP_KEYS + SURFACE_KEYS


def as_label_map(array: np.ndarray, name: str = "label map") -> np.ndarray:
    """Return ``array`` as a non-negative integer array; bool and integral floats are accepted.

    Raises
    ------
    ValueError
        If values are negative or not integers (e.g. probabilities).
    """
    a = np.asarray(array)
    if a.dtype == bool:
        return a.view(np.uint8)  # zero-copy: find_objects needs integers
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(f"{name}: expected integer labels, found non-integer values")
        a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{name}: expected non-negative labels, found {int(a.min())}")
    return a


def label_boxes(a: np.ndarray, max_label: int) -> list[tuple[slice, ...] | None]:
    """Bounding box of each label 1..max_label of a label map (index ``label - 1``).

    Parameters
    ----------
    a
        Non-negative integer label map ``(I, J, K)``; values above ``max_label`` are ignored.
    max_label
        The highest label whose box is wanted.

    Returns
    -------
    list of (tuple of slice or None)
        As ``scipy.ndimage.find_objects(a, max_label=max_label)``: ``None`` for an absent
        label, ``[]`` when ``max_label < 1``.
    """
    if max_label < 1:
        return []
    # find_objects on the foreground's box only: 111 ms instead of 220 ms of CPU on a
    # 512x512x300 mask (benchmarks/metrics_speed.py); the same boxes.
    box = bounding_box(a)
    if box is None:
        return [None] * max_label
    sub = a[box]
    clipped = np.where(sub <= max_label, sub, 0) if sub.max(initial=0) > max_label else sub
    return [
        None
        if b is None
        else tuple(slice(s.start + o.start, s.stop + o.start) for s, o in zip(b, box, strict=True))
        for b in ndimage.find_objects(clipped, max_label=max_label)
    ]


def empty_label_row(label: int, *, lesion: bool = False, instances: bool = False) -> dict[str, Any]:
    """The row of a label absent from both maps: Dice 1, distances 0 (the both-empty rule).

    ``instances``: add the panoptic keys (no instance in either map: PQ/SQ/RQ NaN).
    """
    row: dict[str, Any] = {"label": int(label), "n_ref": 0, "n_pred": 0}
    row.update(overlap_from_counts(0, 0, 0, 1.0))
    row.update({"hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0, "bf1": 1.0})
    if lesion:
        row.update(dict.fromkeys(LESION_KEYS[:5], 0))
        row.update({"lesion_f1": 1.0, "lesion_dice": 1.0})
    if instances:
        row.update(empty_panoptic())
    return row


def compute_case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    labels: Sequence[int],
    *,
    tolerance_mm: float = 1.0,
    lesion_labels: Sequence[int] = (),
    connectivity: int = 3,
    lesion_overlap: Literal["any", "iou"] = "any",
    lesion_iou_threshold: float = 0.1,
    method: Literal["kdtree", "edt"] = "kdtree",
    instance_labels: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """All measures of one case, one row per label.

    Parameters
    ----------
    pred, ref
        Integer label maps of equal shape ``(I, J, K)`` on the same voxel grid (bool and
        integral float arrays are accepted).
    spacing
        Voxel size in mm along ``(I, J, K)`` (the reference's).
    labels
        Label values to score (positive integers).
    tolerance_mm
        Tolerance for NSD and boundary F1, mm.
    lesion_labels
        Labels that also get lesion-wise measures (:func:`medseg.metrics.lesion.lesion_metrics`).
    connectivity
        Connected-component neighbourhood for lesions: 1/2/3 (or 6/18/26).
    lesion_overlap, lesion_iou_threshold
        Lesion matching rule, see :mod:`medseg.metrics.lesion`.
    method
        Nearest-surface search, ``"kdtree"`` or ``"edt"`` (same values).
    instance_labels
        Labels that also get panoptic quality (:mod:`medseg.metrics.panoptic`), instances
        from connected components with the same ``connectivity``.

    Returns
    -------
    list[dict]
        One dict per label with ``label, n_ref, n_pred`` (voxel counts), ``dice, iou,
        precision, recall, vol_ref_ml, vol_pred_ml, vol_diff_ml, vol_diff_pct, hd, hd95, assd,
        nsd, bf1``, for lesion labels ``lesion_*`` keys and for instance labels ``pq_*``
        keys (:data:`medseg.metrics.panoptic.PANOPTIC_KEYS`).

    Notes
    -----
    Empty masks: both empty -> Dice 1 and distances 0; one empty -> Dice 0 and distances
    ``inf`` (summaries count those separately instead of averaging them).
    """
    p = as_label_map(pred, "prediction")
    r = as_label_map(ref, "reference")
    if p.shape != r.shape or p.ndim != 3:
        raise ValueError(f"expected 3D maps of equal shape, got {p.shape} and {r.shape}")
    labs = [int(v) for v in labels]
    if any(v < 1 for v in labs):
        raise ValueError(f"labels must be positive integers, got {labs}")
    top = max(labs, default=0)
    boxes_p, boxes_r = label_boxes(p, top), label_boxes(r, top)
    voxel_mm3 = float(np.prod(spacing))
    rows = []
    for lab in labs:
        box = merge_boxes([boxes_p[lab - 1], boxes_r[lab - 1]], p.shape, margin=1)
        is_lesion, is_instance = lab in lesion_labels, lab in instance_labels
        if box is None:
            rows.append(empty_label_row(lab, lesion=is_lesion, instances=is_instance))
            continue
        pm, rm = p[box] == lab, r[box] == lab
        n_p, n_r = int(pm.sum()), int(rm.sum())
        row: dict[str, Any] = {"label": lab, "n_ref": n_r, "n_pred": n_p}
        row.update(overlap_from_counts(int(np.count_nonzero(pm & rm)), n_p, n_r, voxel_mm3))
        sd = surface_distances(pm, rm, spacing, method=method, crop=False)
        row.update(surface_metrics(sd, tolerance_mm))
        if is_lesion:
            row.update(
                lesion_metrics(
                    pm,
                    rm,
                    connectivity=connectivity,
                    overlap=lesion_overlap,
                    iou_threshold=lesion_iou_threshold,
                )
            )
        if is_instance:  # components lie inside the label's box: the crop changes nothing
            row.update(panoptic_quality(pm, rm, connectivity=connectivity))
        rows.append(row)
    return rows

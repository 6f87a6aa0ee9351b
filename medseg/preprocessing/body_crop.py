"""Crop a CT scan to the patient's body before inference (air is never segmented).

The body is found on a coarse copy of the scan: voxels above :data:`BODY_THRESHOLD_HU`
(-500 HU: between air, -1000, and fat, about -100; lung, about -850, is enclosed by the body
and does not affect its bounding box), their 6-connected components, and the bounding box of
the largest one together with every other component of at least :data:`BODY_MIN_PART` of the
largest one's size, grown by :data:`BODY_MARGIN_MM` plus one coarse step on each side (a
voxel of the coarse copy stands for its whole block). A body can come in several pieces: both
legs of a lower-limb scan, arms lying apart from the trunk; only small separate objects
(cables, markers, a thin table rail) are dropped, and a larger one (a table) only widens the
box, as does anything touching the body. Prediction runs on the crop only and is mapped back
onto the full scan by world coordinates, so everything outside the box is background.

The coarse copy takes every ``n``-th voxel along each axis (``n`` = :data:`COARSE_STEP_MM` /
spacing, at least 1): a view, thresholded into a small boolean array, so the cost is a few
milliseconds and a few MB even on a 512x512x600 scan.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

BODY_THRESHOLD_HU = -500.0
BODY_MARGIN_MM = 10.0
#: A separate component at least this share of the largest one's size is body too (kept).
BODY_MIN_PART = 0.01
COARSE_STEP_MM = 4.0

Box = tuple[slice, slice, slice]


def body_box(
    image: np.ndarray,
    spacing: Sequence[float],
    *,
    threshold: float = BODY_THRESHOLD_HU,
    margin_mm: float = BODY_MARGIN_MM,
    step_mm: float = COARSE_STEP_MM,
) -> Box | None:
    """Bounding box of the body in a CT scan (every large part of it), grown by ``margin_mm``.

    Parameters
    ----------
    image
        CT scan ``(I, J, K)`` in Hounsfield units, any voxel order.
    spacing
        Voxel size in mm along ``I, J, K``.
    threshold
        Voxels above this (HU) are body candidates.
    margin_mm
        Margin added on every side (mm), clipped to the scan.
    step_mm
        Spacing (mm) of the coarse copy that components are found on.

    Returns
    -------
    tuple of slice or None
        ``(slice_i, slice_j, slice_k)`` of the body box in voxel indices (step 1), or ``None``
        when no voxel is above ``threshold`` (nothing to crop to).
    """
    shape = image.shape[-3:]
    steps = [max(1, math.floor(step_mm / float(sp))) for sp in spacing]
    coarse = np.asarray(image[..., :: steps[0], :: steps[1], :: steps[2]]) > threshold
    components, count = ndimage.label(coarse)
    if count == 0:
        return None
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    kept = np.flatnonzero(sizes >= BODY_MIN_PART * sizes.max())  # the largest, and big parts
    boxes = ndimage.find_objects(components, max_label=int(kept.max()))
    found = [
        slice(min(boxes[k - 1][d].start for k in kept), max(boxes[k - 1][d].stop for k in kept))
        for d in range(3)
    ]
    box = []
    for sl, n, st, sp in zip(found, shape, steps, spacing, strict=True):
        pad = math.ceil(margin_mm / float(sp)) + st  # + one coarse step: a sample is a block
        box.append(slice(max(0, sl.start * st - pad), min(n, (sl.stop - 1) * st + 1 + pad)))
    return tuple(box)  # type: ignore[return-value]


def crop_volume(volume: Volume, box: Sequence[slice]) -> Volume:
    """``volume`` restricted to ``box`` (voxel indices, step 1), with the affine that keeps every
    voxel at its world position (RAS, mm). The array is a view: nothing is copied.

    ``volume.array`` may be ``(I, J, K)`` or ``(C, I, J, K)`` (every channel is cropped).
    """
    shift = np.eye(4)
    shift[:3, 3] = [s.start for s in box]
    index: tuple[Any, ...] = (Ellipsis, *box)
    array = volume.array[index]
    return Volume(array, volume.affine @ shift, path=volume.path, meta=dict(volume.meta))


def crop_to_body(volume: Volume, channel: int = 0) -> tuple[Volume, Box | None]:
    """Crop a CT ``volume`` to its body box (:func:`body_box` of channel ``channel``).

    Returns
    -------
    volume, box
        The cropped volume (a view with its own affine) and the box, or ``volume`` itself and
        ``None`` when no crop applies (no body found, or the box is the whole scan).
    """
    ct = volume.array if volume.array.ndim == 3 else volume.array[channel]
    box = body_box(ct, volume.spacing)
    if box is None or all(s.start == 0 and s.stop == n for s, n in zip(box, ct.shape, strict=True)):
        return volume, None
    kept = math.prod(s.stop - s.start for s in box) / math.prod(ct.shape)
    logger.debug("body crop %s: %.0f%% of the scan's voxels", box, 100 * kept)
    return crop_volume(volume, box), box

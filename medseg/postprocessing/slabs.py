"""Slabs of whole planes: the one iterator behind every "slab by slab" loop over a volume.

Streamed preprocessing (:mod:`medseg.preprocessing.streamed`), the CRF's intensity statistics
and bilateral grid (:mod:`medseg.postprocessing.crf`, :mod:`medseg.postprocessing.bilateral_grid`)
and the component filters of :mod:`medseg.postprocessing.morphology` cut an array along its first
axis into runs of planes of about :data:`SLAB_VOXELS` voxels, so that a temporary (a float64
copy, an int64 index, a sampling grid) never has the size of the whole volume.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

#: Voxels per slab, by default: 2 Mvox (a float64 temporary of 16 MB).
SLAB_VOXELS = 1 << 21


def slabs(stop: int, plane: int, voxels: int = SLAB_VOXELS, *, start: int = 0) -> Iterator[slice]:
    """Consecutive slices ``start:stop`` of an axis, each of about ``voxels // plane`` planes.

    Parameters
    ----------
    stop
        End of the range along the first axis (its length, when ``start`` is 0).
    plane
        Voxels of one plane (the product of the other axes' lengths).
    voxels
        Voxels per slab wanted; a slab holds at least one plane.
    start
        Start of the range.

    Yields
    ------
    slice
        ``slice(i, min(i + step, stop))`` for ``i`` in ``range(start, stop, step)``, ``step =
        max(1, voxels // plane)``: they partition ``start:stop`` in order.
    """
    step = max(1, voxels // max(1, plane))
    for i in range(start, stop, step):
        yield slice(i, min(stop, i + step))


def box_slabs(box: Sequence[slice], voxels: int = SLAB_VOXELS) -> list[tuple[slice, ...]]:
    """A 3D box ``(slice, slice, slice)`` cut along its first axis into slabs of about
    ``voxels`` voxels (the other two slices kept as they are)."""
    plane = (box[1].stop - box[1].start) * (box[2].stop - box[2].start)
    return [(sl, box[1], box[2]) for sl in slabs(box[0].stop, plane, voxels, start=box[0].start)]

"""The one slab iterator: slabs partition the range in order, each about the voxels asked."""

from __future__ import annotations

import pytest

from medseg.postprocessing.slabs import box_slabs, slabs


@pytest.mark.parametrize(
    ("stop", "plane", "voxels", "start"),
    [(10, 6, 20, 0), (10, 6, 5, 0), (7, 0, 3, 0), (25, 4, 1 << 21, 3), (3, 100, 1000, 3)],
)
def test_slabs_partition_the_range(stop: int, plane: int, voxels: int, start: int) -> None:
    got = list(slabs(stop, plane, voxels, start=start))
    covered = [i for sl in got for i in range(sl.start, sl.stop)]
    assert covered == list(range(start, stop))
    step = max(1, voxels // max(1, plane))
    assert all(sl.stop - sl.start == step for sl in got[:-1])
    assert all(0 < sl.stop - sl.start <= step for sl in got)


def test_box_slabs_keep_the_other_axes() -> None:
    box = (slice(4, 14), slice(2, 5), slice(1, 3))  # planes of 6 voxels
    got = box_slabs(box, voxels=20)
    assert [s[0] for s in got] == [slice(4, 7), slice(7, 10), slice(10, 13), slice(13, 14)]
    assert all(s[1:] == box[1:] for s in got)
    assert box_slabs((slice(5, 5), slice(0, 2), slice(0, 2))) == []

"""``instance_map``: one id per connected component, in the documented order."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.postprocessing.instances import MAX_INSTANCES, InstanceInfo, instance_map


def three_label_map() -> np.ndarray:
    a = np.zeros((20, 18, 10), np.uint8)
    a[1:3, 1:3, 1:3] = 2  # label 2: 8 voxels, first in raster order
    a[5:9, 5:9, 2:6] = 2  # label 2: 64 voxels
    a[12:14, 12:14, 6:8] = 2  # label 2: 8 voxels, tie with the first
    a[15:19, 1:5, 1:4] = 1  # label 1: 48 voxels
    a[1:4, 14:17, 7:9] = 3  # label 3: not asked for
    return a


def test_ids_follow_label_order_then_size_then_raster_order() -> None:
    a = three_label_map()
    inst, info = instance_map(a, [2, 1])
    assert inst.dtype == np.uint16 and inst.shape == a.shape
    assert info == [
        InstanceInfo(1, 2, 64),
        InstanceInfo(2, 2, 8),
        InstanceInfo(3, 2, 8),
        InstanceInfo(4, 1, 48),
    ]
    assert np.all(inst[5:9, 5:9, 2:6] == 1)
    assert np.all(inst[1:3, 1:3, 1:3] == 2)  # the tie: raster order first
    assert np.all(inst[12:14, 12:14, 6:8] == 3)
    assert np.all(inst[15:19, 1:5, 1:4] == 4)
    assert np.all(inst[a == 3] == 0) and np.all(inst[a == 0] == 0)
    assert [i.voxels for i in info] == [int(np.sum(inst == i.id)) for i in info]


def test_matches_scipy_components_on_random_maps(rng: np.random.Generator) -> None:
    a = (rng.random((16, 15, 14)) < 0.2).astype(np.uint8) * rng.integers(1, 3, (16, 15, 14))
    inst, info = instance_map(a, [1, 2])
    for lab in (1, 2):
        _, n = ndimage.label(a == lab, structure=np.ones((3, 3, 3)))
        assert sum(i.label == lab for i in info) == n
    # every instance is one component of one label, and all label voxels are covered
    assert np.array_equal(inst > 0, np.isin(a, [1, 2]))
    for i in info:
        vals = np.unique(a[inst == i.id])
        assert vals.tolist() == [i.label]
        _, n = ndimage.label(inst == i.id, structure=np.ones((3, 3, 3)))
        assert n == 1


@pytest.mark.parametrize("connectivity,expected", [(26, 1), (3, 1), (18, 2), (6, 2)])
def test_connectivity(connectivity: int, expected: int) -> None:
    a = np.zeros((6, 6, 6), np.uint8)
    a[1, 1, 1] = a[2, 2, 2] = 1  # corner neighbours: joined by 26 only
    _, info = instance_map(a, [1], connectivity=connectivity)
    assert len(info) == expected


def test_min_voxels_drops_small_components() -> None:
    a = three_label_map()
    inst, info = instance_map(a, [2], min_voxels=9)
    assert info == [InstanceInfo(1, 2, 64)]
    assert int(inst.max()) == 1 and not inst[1:3, 1:3, 1:3].any()


def test_absent_label_gives_no_instance_and_input_untouched() -> None:
    a = three_label_map()
    before = a.copy()
    inst, info = instance_map(a, [4], known_labels=[0, 1, 2, 3, 4])
    assert info == [] and not inst.any()
    assert np.array_equal(a, before)


def test_more_than_65535_instances_is_an_error() -> None:
    a = np.zeros((82, 82, 82), np.uint8)
    a[::2, ::2, ::2] = 1  # 41^3 = 68921 isolated voxels
    with pytest.raises(MedsegError, match=f"at most {MAX_INSTANCES} instances"):
        instance_map(a, [1], path="case.nii.gz")


@pytest.mark.parametrize(
    "labels,kwargs,match",
    [
        (np.zeros((4, 4)), {}, r"3D label map"),
        (np.full((4, 4, 4), 0.5), {}, r"integer labels"),
        (np.zeros((4, 4, 4), np.uint8), {"known_labels": [0, 1]}, r"\[2\] are not labels"),
        (np.zeros((4, 4, 4), np.uint8), {"connectivity": 5}, r"connectivity"),
        (np.zeros((4, 4, 4), np.uint8), {"min_voxels": 0}, r"min_voxels"),
    ],
)
def test_bad_input_is_a_clear_error(labels: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(MedsegError, match=match) as err:
        instance_map(labels, [2], path="case.nii.gz", **kwargs)
    assert err.value.path == "case.nii.gz"


@pytest.mark.parametrize("wanted", [[], [0], [1, 1]])
def test_bad_instance_labels(wanted: list[int]) -> None:
    with pytest.raises(MedsegError, match="distinct positive label values"):
        instance_map(np.zeros((3, 3, 3), np.uint8), wanted)

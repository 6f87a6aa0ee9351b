"""Crop to the body: threshold + largest component box, and crops that keep world positions."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.synthetic import make_ct_phantom
from medseg.io import Volume
from medseg.preprocessing.body_crop import (
    BODY_THRESHOLD_HU,
    body_box,
    crop_to_body,
    crop_volume,
)


def _padded_phantom(axcodes: str = "RAS") -> Volume:
    """A CT phantom with 12 voxels of air added around it in-plane, and a 'table' apart."""
    image, _ = make_ct_phantom((40, 36, 16), (1.5, 1.5, 3.0), seed=3, axcodes=axcodes)
    pad = [(12, 12) if n > 16 else (0, 0) for n in image.array.shape]
    array = np.pad(image.array, pad, constant_values=-1000)
    shift = np.eye(4)
    shift[:3, 3] = [-p[0] for p in pad]
    return Volume(array, image.affine @ shift, meta=image.meta)


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PSR"])
def test_box_holds_the_body_and_drops_air_and_a_separate_object(axcodes: str) -> None:
    volume = _padded_phantom(axcodes)
    array = volume.array.copy()
    body = array > BODY_THRESHOLD_HU
    # a small dense object (table rail) well apart from the body, at one corner
    corner = tuple(slice(0, 3) for _ in range(3))
    array[corner] = 300
    box = body_box(array, volume.spacing)
    assert box is not None
    inside = np.zeros(array.shape, bool)
    inside[box] = True
    assert body[inside].sum() == body.sum()  # every body voxel is kept
    assert not inside[corner].any()  # the separate object is not
    assert inside.mean() < 0.7  # and most of the air goes
    # the margin: 10 mm plus one coarse step at most beyond the body on each side
    for axis, sl in enumerate(box):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.nonzero(body.any(axis=other))[0]
        sp = volume.spacing[axis]
        assert sl.start == 0 or (idx[0] - sl.start) * sp >= 10.0
        assert (idx[0] - sl.start) * sp <= 10.0 + 2 * 4.0 + sp
        n = array.shape[axis]
        assert sl.stop == n or (sl.stop - 1 - idx[-1]) * sp >= 10.0
        assert (sl.stop - 1 - idx[-1]) * sp <= 10.0 + 2 * 4.0 + sp


def test_a_body_in_two_pieces_keeps_both() -> None:
    """Both legs of a lower-limb scan (apart on every slice): the crop once kept one leg."""
    shape, spacing = (120, 80, 20), (1.0, 1.0, 3.0)
    ii, jj = np.mgrid[: shape[0], : shape[1]]
    array = np.full(shape, -1000, np.int16)
    for centre, radius in ((33, 15), (87, 14)):  # 30 and 28 mm legs, 24 mm of air between
        array[(ii - centre) ** 2 + (jj - 40) ** 2 < radius**2] = 40
    array[0, 0, :2] = 300  # a marker lying apart (2 coarse voxels, under 1 %): dropped
    box = body_box(array, spacing)
    assert box is not None
    inside = np.zeros(shape, bool)
    inside[box] = True
    body = array == 40
    assert body[inside].sum() == body.sum()  # every voxel of both legs is kept
    assert not inside[0, 0, 0]


def test_all_air_has_no_box_and_no_crop() -> None:
    air = Volume(np.full((20, 20, 10), -1000, np.int16), np.diag([1.0, 1.0, 2.0, 1.0]))
    assert body_box(air.array, air.spacing) is None
    cropped, box = crop_to_body(air)
    assert box is None and cropped is air


def test_crop_keeps_every_voxel_at_its_world_position() -> None:
    volume = _padded_phantom("PSR")
    cropped, box = crop_to_body(volume)
    assert box is not None
    assert cropped.array.shape == tuple(s.stop - s.start for s in box)
    assert np.shares_memory(cropped.array, volume.array)  # a view, nothing copied
    idx = np.array([3, 4, 5, 1.0])
    world = cropped.affine @ idx
    full_idx = [s.start + int(i) for s, i in zip(box, idx[:3], strict=True)]
    np.testing.assert_allclose(world, volume.affine @ np.array([*full_idx, 1.0]))
    assert cropped.array[3, 4, 5] == volume.array[tuple(full_idx)]
    assert cropped.axcodes == volume.axcodes and cropped.spacing == pytest.approx(volume.spacing)


def test_crop_volume_crops_every_channel() -> None:
    two = Volume(np.arange(2 * 6 * 5 * 4).reshape(2, 6, 5, 4), np.eye(4))
    out = crop_volume(two, (slice(1, 4), slice(0, 5), slice(2, 4)))
    assert out.array.shape == (2, 3, 5, 2)
    np.testing.assert_array_equal(out.array, two.array[:, 1:4, :, 2:4])
    np.testing.assert_allclose(out.affine[:3, 3], [1.0, 0.0, 2.0])

"""The tiled dense CRF: grid alignment of tiles, equality with the untiled CRF, bounded boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

import medseg.postprocessing.crf_tiled as crf_tiled
from medseg.errors import MedsegError
from medseg.postprocessing import CRFConfig, crf_refine_labels, dense_crf
from medseg.postprocessing.bilateral_grid import BilateralGrid
from medseg.postprocessing.crf_tiled import crf_tiles

CPU = CRFConfig(device="cpu", margin_mm=200.0)  # the box is the whole volume


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _noisy_ellipsoid(rng, shape=(64, 64, 32), spacing=(1.0, 1.0, 2.0)):
    """Image and noisy 2-class probabilities of an ellipsoid (the CRF relabels many voxels)."""
    ii, jj, kk = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    c = [n * s / 2 for n, s in zip(shape, spacing, strict=True)]
    r2 = ((ii - c[0]) ** 2 + (jj - c[1]) ** 2) / (0.3 * shape[0]) ** 2 + (kk - c[2]) ** 2 / c[
        2
    ] ** 2
    ref = (r2 < 1).astype(np.uint8)
    image = (ref + rng.normal(0, 0.3, shape)).astype(np.float32)
    noise = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.5)
    logit = (2.0 * ref - 1.0) + 1.5 * noise / noise.std() + rng.normal(0, 1, shape)
    p1 = 1.0 / (1.0 + np.exp(-logit))
    return image, np.stack([1 - p1, p1]).astype(np.float32)


@pytest.mark.parametrize("bilateral", [False, True])
def test_offset_tile_filters_like_the_whole_volume(rng, bilateral: bool) -> None:
    """A block with ``offset`` (and the volume's intensity floor) shares the volume's grid cells:
    away from its borders it filters exactly as the whole volume does."""
    shape, spacing, sigma = (40, 36, 30), (1.0, 1.0, 1.5), 2.0
    image = rng.normal(size=shape).astype(np.float32)
    values = torch.from_numpy(rng.random(shape).astype(np.float32))[None]
    z = torch.from_numpy(image) if bilateral else None
    floor = float(image.min()) if bilateral else None
    cpu = torch.device("cpu")
    whole = BilateralGrid(shape, spacing, sigma, z, cpu, intensity_floor=floor).filter(values)
    block = (slice(7, 33), slice(5, 31), slice(3, 27))
    zb = None if z is None else z[block]
    offset = [b.start for b in block]
    tile = BilateralGrid(
        [b.stop - b.start for b in block], spacing, sigma, zb, cpu, offset=offset,
        intensity_floor=floor,
    )  # fmt: skip
    out = tile.filter(values[(slice(None), *block)])
    # reach of one filtering on the grid: splat tent + blur radius + slice tent, in voxels
    reach = [math.ceil((1 + math.ceil(3 * tile.blur_sigma) + 1) * sigma / sp) for sp in spacing]
    inner = tuple(slice(r, b.stop - b.start - r) for r, b in zip(reach, block, strict=True))
    assert all(s.stop > s.start for s in inner)
    inner_whole = tuple(
        slice(b.start + s.start, b.start + s.stop) for b, s in zip(block, inner, strict=True)
    )
    got = out[(slice(None), *inner)]
    want = whole[(slice(None), *inner_whole)]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    # without the offset the cells are misaligned and the values differ by far more
    plain = BilateralGrid(
        [b.stop - b.start for b in block], spacing, sigma, zb, cpu, intensity_floor=floor
    ).filter(values[(slice(None), *block)])
    assert float((plain[(slice(None), *inner)] - want).abs().max()) > 1e-3


def test_one_tile_is_the_dense_crf_on_the_box(rng) -> None:
    image, probs = _noisy_ellipsoid(rng, shape=(24, 24, 12))
    labels = crf_refine_labels(probs, image, (1.0, 1.0, 2.0), CPU)
    refined = dense_crf(probs, image, (1.0, 1.0, 2.0), CPU)
    np.testing.assert_array_equal(labels, refined.argmax(0))
    assert (labels != probs.argmax(0)).mean() > 0.05  # the CRF did change labels


def test_cores_partition_the_box_and_tiles_fit_the_budget() -> None:
    box = (slice(3, 203), slice(10, 150), slice(0, 97))
    spacing = (0.8, 0.8, 1.0)
    tiles = crf_tiles(box, spacing, CPU, classes=2, tile_mb=60.0)
    assert len(tiles) > 8
    cover = np.zeros([s.stop for s in box], np.uint8)
    budget = 60.0e6 / (crf_tiled.BYTES_PER_VOXEL[0] + 2 * crf_tiled.BYTES_PER_VOXEL[1])
    halo = [math.ceil(crf_tiled.HALO_SIGMAS * CPU.bilateral_sigma_mm / s) for s in spacing]
    for core, ext in tiles:
        cover[core] += 1
        assert math.prod(e.stop - e.start for e in ext) <= budget
        for c, e, b, h in zip(core, ext, box, halo, strict=True):
            assert b.start <= e.start <= c.start < c.stop <= e.stop <= b.stop
            assert e.start == max(b.start, c.start - h) and e.stop == min(b.stop, c.stop + h)
    assert (cover[box] == 1).all() and cover.sum() == math.prod(s.stop - s.start for s in box)
    assert crf_tiles(box, spacing, CPU, tile_mb=1e5) == [(box, box)]  # fits: one tile, no halo


def test_tiled_crf_equals_untiled_except_a_few_seam_voxels(rng) -> None:
    """Measured (module docstring of crf_tiled): 1e-4 of the voxels at most with 3-sigma halos."""
    spacing = (1.0, 1.0, 2.0)
    image, probs = _noisy_ellipsoid(rng, spacing=spacing)
    whole = crf_refine_labels(probs, image, spacing, CPU, tile_mb=1e5)
    box = tuple(slice(0, n) for n in image.shape)
    assert len(crf_tiles(box, spacing, CPU, tile_mb=10.0)) >= 8
    tiled = crf_refine_labels(probs, image, spacing, CPU, tile_mb=10.0)
    changed = whole != probs.argmax(0)
    assert changed.mean() > 0.1  # a strong effect, so seams would show
    assert (tiled != whole).mean() < 5e-4


def test_cores_stitch_exactly_when_every_tile_sees_the_whole_box(rng, monkeypatch) -> None:
    """Tiles whose extension is the whole box compute the untiled CRF: stitching is exact."""
    spacing = (1.0, 1.0, 2.0)
    image, probs = _noisy_ellipsoid(rng, shape=(32, 28, 14), spacing=spacing)
    whole = crf_refine_labels(probs, image, spacing, CPU, tile_mb=1e5)
    box = tuple(slice(0, n) for n in image.shape)
    cores = [
        (slice(0, 13), slice(0, 28), slice(0, 14)),
        (slice(13, 32), slice(0, 9), slice(0, 14)),
        (slice(13, 32), slice(9, 28), slice(0, 5)),
        (slice(13, 32), slice(9, 28), slice(5, 14)),
    ]
    monkeypatch.setattr(crf_tiled, "crf_tiles", lambda *a, **k: [(c, box) for c in cores])
    tiled = crf_refine_labels(probs, image, spacing, CPU)
    np.testing.assert_array_equal(tiled, whole)
    assert (whole != probs.argmax(0)).mean() > 0.05


def test_a_halo_over_the_budget_stops_the_splitting() -> None:
    box = (slice(0, 40), slice(0, 30), slice(0, 20))
    tiles = crf_tiles(box, (1.0, 1.0, 1.0), CPU, tile_mb=1e-3)  # halo 15 voxels, budget 1 voxel
    assert 1 < len(tiles) < 100


def test_callable_source_is_asked_one_tile_at_a_time(rng) -> None:
    spacing = (2.0, 2.0, 2.0)  # halos of 8 voxels
    image, probs = _noisy_ellipsoid(rng, shape=(48, 40, 20), spacing=spacing)
    asked: list[tuple[slice, ...]] = []

    def source(box: tuple[slice, ...]) -> np.ndarray:
        asked.append(box)
        return probs[(slice(None), *box)].astype(np.float16)

    labels = probs.argmax(0).astype(np.uint8)
    got = crf_refine_labels(source, image, spacing, CPU, labels=labels, tile_mb=3.0)
    want = crf_refine_labels(probs.astype(np.float16), image, spacing, CPU, tile_mb=3.0)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.uint8 and not np.shares_memory(got, labels)
    tiles = [b for b in asked if math.prod(s.stop - s.start for s in b) > 1]  # not the probe
    assert len(tiles) > 1
    assert max(math.prod(s.stop - s.start for s in b) for b in tiles) < 0.6 * image.size
    with pytest.raises(MedsegError, match="expected labels"):
        crf_refine_labels(source, image, spacing, CPU)


@pytest.mark.parametrize(
    ("image_shape", "spacing", "match"),
    [
        ((14, 14, 14), (1.0, 1.0, 1.0), "on the image's grid"),  # once ran on a crop silently
        ((10, 10, 10), (1.0, 1.0), "3 positive spacings"),  # once an IndexError
        ((10, 10, 10), (1.0, 0.0, 1.0), "3 positive spacings"),  # once a ZeroDivisionError
    ],
)
def test_array_inputs_on_other_grids_are_refused(rng, image_shape, spacing, match) -> None:
    probs = rng.random((2, 10, 10, 10)).astype(np.float32)
    probs /= probs.sum(0)
    image = rng.random(image_shape).astype(np.float32)
    with pytest.raises(MedsegError, match=match):
        crf_refine_labels(probs, image, spacing, CPU)


def test_callable_source_needs_labels_on_the_image_grid(rng) -> None:
    image, probs = _noisy_ellipsoid(rng, shape=(16, 16, 8))

    def source(box: tuple[slice, ...]) -> np.ndarray:
        return probs[(slice(None), *box)]

    labels = probs.argmax(0).astype(np.uint8)
    with pytest.raises(MedsegError, match="labels of the image's shape"):
        crf_refine_labels(source, image, (1.0, 1.0, 2.0), CPU, labels=labels[:12])
    with pytest.raises(MedsegError, match="labels of the image's shape"):
        crf_refine_labels(probs, image, (1.0, 1.0, 2.0), CPU, labels=labels[:, :, :6])

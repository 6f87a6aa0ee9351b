"""Dense CRF: bilateral-grid filter against brute force, refinement of noisy probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.metrics import dice_per_label
from medseg.postprocessing import CRFConfig, crf_refine_labels, dense_crf
from medseg.postprocessing.bilateral_grid import (
    BILATERAL_CELLS_PER_SIGMA,
    SPATIAL_CELLS_PER_SIGMA,
    BilateralGrid,
)

CPU = CRFConfig(device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _positions(shape: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray:
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def _brute_force(values, image, spacing, sigma_mm, intensity_sigma):
    """O(N^2) normalised Gaussian / bilateral filter."""
    pos = _positions(values.shape, spacing)
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1) / sigma_mm**2
    if intensity_sigma is not None:
        z = image.reshape(-1)
        d2 = d2 + ((z[:, None] - z[None]) / intensity_sigma) ** 2
    k = np.exp(-0.5 * d2)
    return (k @ values.reshape(-1) / k.sum(1)).reshape(values.shape)


@pytest.mark.parametrize(
    ("sigma_mm", "intensity_sigma", "cells"),
    [
        (2.0, 1.0, BILATERAL_CELLS_PER_SIGMA),
        (3.0, 0.5, BILATERAL_CELLS_PER_SIGMA),
        (1.5, None, SPATIAL_CELLS_PER_SIGMA),
        (4.0, None, BILATERAL_CELLS_PER_SIGMA),
    ],
)
def test_grid_filter_matches_brute_force(rng, sigma_mm, intensity_sigma, cells) -> None:
    shape, spacing = (8, 8, 6), (1.0, 1.0, 2.0)  # anisotropic on purpose
    image = (rng.normal(size=shape) * 0.3).astype(np.float32)
    image[4:] += 2.0  # an intensity edge the bilateral kernel must respect
    pos = _positions(shape, spacing)
    values = (0.05 * pos[:, 0] + (image.reshape(-1) > 1)).reshape(shape).astype(np.float32)
    ref = _brute_force(values, image, spacing, sigma_mm, intensity_sigma)
    z = None if intensity_sigma is None else torch.from_numpy(image / intensity_sigma)
    grid = BilateralGrid(shape, spacing, sigma_mm, z, torch.device("cpu"), cells)
    out = grid.filter(torch.from_numpy(values)[None]).numpy()[0]
    err = np.abs(out - ref)
    # a few percent (the grid's tents are not exactly Gaussian); the filter itself moves the
    # values far more than that
    assert err.mean() < 0.03 * np.abs(ref).mean()
    assert err.max() < 0.05 * np.abs(ref).max()
    assert np.abs(ref - values).mean() > 5 * err.mean()
    # and the edge is kept: across it the bilateral result differs much more than the error
    if intensity_sigma is not None:
        assert out[5:].mean() - out[:3].mean() > 20 * err.mean()


def _noisy_case(rng, shape=(32, 32, 20), spacing=(1.0, 1.0, 2.0)):
    ii, jj, kk = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    ref = (((ii - 16) ** 2 + (jj - 15) ** 2) / 100 + (kk - 20) ** 2 / 144 < 1).astype(np.uint8)
    image = (ref + rng.normal(0, 0.3, shape)).astype(np.float32)
    noise = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.5)
    logit = (2.0 * ref - 1.0) + 1.5 * noise / noise.std() + rng.normal(0, 1, shape)
    p1 = 1.0 / (1.0 + np.exp(-logit))
    return ref, image, np.stack([1 - p1, p1]).astype(np.float32)


def test_crf_improves_dice_of_noisy_probabilities(rng) -> None:
    spacing = (1.0, 1.0, 2.0)
    ref, image, probs = _noisy_case(rng, spacing=spacing)
    before = dice_per_label(probs.argmax(0), ref, [1])[1]
    out = dense_crf(probs, image, spacing, CPU)
    after = dice_per_label(out.argmax(0), ref, [1])[1]
    assert after > before + 0.2, (before, after)
    assert out.shape == probs.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    # the voxels it relabels are relabelled to the truth (99 % here), not merely smoothed
    changed = out.argmax(0) != probs.argmax(0)
    assert changed.sum() > 0.1 * ref.size
    assert (out.argmax(0)[changed] == ref[changed]).mean() > 0.95
    # the appearance kernel matters: without it the result is worse
    spatial_only = dense_crf(probs, image, spacing, CRFConfig(device="cpu", bilateral_weight=0))
    assert dice_per_label(spatial_only.argmax(0), ref, [1])[1] < after


def _first_foreground_planes(probs: np.ndarray) -> set[int]:
    """Index along I of the first foreground voxel of every (j, k) line of the argmax."""
    return {int(v) for v in np.unique(probs.argmax(0).argmax(0))}


def test_uncertain_boundary_moves_onto_the_image_edge(rng) -> None:
    """Where the network is unsure, the appearance kernel puts the boundary on the image edge."""
    shape, spacing = (32, 16, 12), (1.0, 1.0, 1.0)
    i = np.broadcast_to(np.arange(shape[0], dtype=np.float32)[:, None, None], shape)
    image = (i >= 16) + rng.normal(0, 0.05, shape).astype(np.float32)  # step at plane 16
    p1 = 1.0 / (1.0 + np.exp(-(i - 19.5) / 3.0))  # a smeared boundary, 4 planes too far
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    assert _first_foreground_planes(probs) == {20}
    assert _first_foreground_planes(dense_crf(probs, image, spacing, CPU)) == {16}
    # the smoothness kernel alone knows nothing of the image and leaves the boundary alone
    spatial_only = CRFConfig(device="cpu", bilateral_weight=0)
    assert _first_foreground_planes(dense_crf(probs, image, spacing, spatial_only)) == {20}


@pytest.mark.parametrize(("n_classes", "present"), [(2, 0), (2, 1), (3, 2)])
def test_one_class_input_keeps_that_class(rng, n_classes: int, present: int) -> None:
    """Certain, single-class probabilities (exact zeros elsewhere) on textured or flat images."""
    shape, spacing = (10, 9, 7), (1.0, 1.0, 2.0)
    probs = np.zeros((n_classes, *shape), np.float32)
    probs[present] = 1.0
    for image in (rng.normal(size=shape).astype(np.float32), np.zeros(shape, np.float32)):
        out = dense_crf(probs, image, spacing, CPU)
        assert out.shape == probs.shape and out.dtype == np.float32
        assert np.isfinite(out).all()
        assert out[present].min() > 0.99
        np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
        labels = crf_refine_labels(probs, image, spacing, CPU)
        assert labels.dtype == np.uint8 and (labels == present).all()


def test_uniform_input_stays_uniform(rng) -> None:
    shape = (10, 12, 6)
    probs = np.empty((3, *shape), np.float32)
    probs[:] = np.array([0.2, 0.5, 0.3], np.float32)[:, None, None, None]
    image = np.full(shape, 7.0, np.float32)
    out = dense_crf(torch.from_numpy(probs), image, (0.8, 0.8, 3.0), CPU)
    assert out.std(axis=(1, 2, 3)).max() < 1e-4
    assert (out.argmax(0) == 1).all()
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)


def test_zero_iterations_returns_input_distribution(rng) -> None:
    p1 = rng.random((6, 6, 6)).astype(np.float32) * 0.98 + 0.01
    probs = np.stack([1 - p1, p1])
    out = dense_crf(probs, rng.random((6, 6, 6)), (1.0, 1.0, 1.0), CRFConfig(iterations=0))
    np.testing.assert_allclose(out, probs, atol=1e-5)


def test_refine_labels_only_touches_the_foreground_box(rng) -> None:
    spacing = (1.0, 1.0, 2.0)
    ref, image, probs = _noisy_case(rng, spacing=spacing)
    # noisy foreground only in planes < 30 of a 60-plane volume: the box ends before plane 35
    big = np.zeros((2, 60, 32, 20), np.float32)
    big[1, :30] = probs[1, :30]
    big[0] = 1.0 - big[1]
    img = np.zeros((60, 32, 20), np.float32)
    img[:32] = image
    labels = crf_refine_labels(big, img, spacing, CRFConfig(device="cpu", margin_mm=5.0))
    assert labels.dtype == np.uint8 and labels.shape == (60, 32, 20)
    assert not labels[35:].any()
    full_ref = np.zeros_like(labels)
    full_ref[:32] = ref
    assert (
        dice_per_label(labels, full_ref, [1])[1] > dice_per_label(big.argmax(0), full_ref, [1])[1]
    )
    empty = np.stack([np.ones((4, 4, 4)), np.zeros((4, 4, 4))]).astype(np.float32)
    assert not crf_refine_labels(empty, np.zeros((4, 4, 4)), (1.0, 1.0, 1.0), CPU).any()


def test_bad_inputs_raise_medseg_error() -> None:
    probs = np.full((2, 4, 4, 4), 0.5, np.float32)
    with pytest.raises(MedsegError, match="does not match"):
        dense_crf(probs, np.zeros((4, 4, 5)), (1.0, 1.0, 1.0), CPU)
    with pytest.raises(MedsegError, match="spacings"):
        dense_crf(probs, np.zeros((4, 4, 4)), (1.0, 0.0, 1.0), CPU)
    with pytest.raises(MedsegError, match="intensity_sigma"):
        CRFConfig(intensity_sigma=0).validate()


@pytest.mark.parametrize("bilateral", [True, False])
def test_splat_is_the_adjoint_of_slice(rng, bilateral: bool) -> None:
    shape, spacing = (9, 7, 5), (0.9, 1.1, 2.5)
    z = torch.from_numpy(rng.normal(size=shape).astype(np.float32)) if bilateral else None
    grid = BilateralGrid(shape, spacing, 2.0, z, torch.device("cpu"), 1.5)
    g = torch.from_numpy(rng.normal(size=(2, *grid.grid_shape)).astype(np.float32))
    v = torch.from_numpy(rng.normal(size=(2, *shape)).astype(np.float32))
    lhs = float((grid.slice(g) * v).sum())
    rhs = float((g * grid.splat(v)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-4)


def test_flipped_numpy_views_are_accepted(rng) -> None:
    _, image, probs = _noisy_case(rng, shape=(12, 10, 8))
    flipped = dense_crf(probs[:, ::-1], image[::-1], (1.0, 1.0, 2.0), CPU)
    straight = dense_crf(
        np.ascontiguousarray(probs[:, ::-1]), image[::-1].copy(), (1.0, 1.0, 2.0), CPU
    )
    np.testing.assert_allclose(flipped, straight, atol=1e-6)
    with pytest.raises(MedsegError, match="C >= 2"):
        dense_crf(probs[:1], image, (1.0, 1.0, 2.0), CPU)

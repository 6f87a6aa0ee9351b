"""Surface distances against brute-force pairwise distances and analytic cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg.metrics import compute_case_metrics, surface_distances, surface_metrics

SPACING = (0.5, 1.0, 2.5)


def brute_surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a face neighbour outside the mask or the array (explicit shifts)."""
    pad = np.pad(mask, 1)
    inner = np.ones(mask.shape, dtype=bool)
    for axis in range(3):
        for shift in (-1, 1):
            inner &= np.roll(pad, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~inner


def brute_directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """For each surface voxel centre of ``a``, min distance (mm) to the surface of ``b``."""
    pa = np.argwhere(brute_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(brute_surface(b)) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1)


def brute_metrics(pred, ref, spacing, tau):
    a, b = brute_directed(pred, ref, spacing), brute_directed(ref, pred, spacing)
    prec, rec = np.mean(a <= tau), np.mean(b <= tau)
    return {
        "hd": max(a.max(), b.max()),
        "hd95": max(np.percentile(a, 95), np.percentile(b, 95)),
        "assd": np.concatenate([a, b]).mean(),
        "nsd": (np.sum(a <= tau) + np.sum(b <= tau)) / (a.size + b.size),
        "bf1": 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec),
    }


def random_mask(rng: np.random.Generator, shape=(12, 10, 8)) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2)
    return noise > np.quantile(noise, 0.6)


@pytest.mark.parametrize("method", ["kdtree", "edt"])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tau", [0.5, 1.5])
def test_matches_brute_force_on_random_masks(method, seed, tau):
    rng = np.random.default_rng(seed)
    pred, ref = random_mask(rng), random_mask(rng)
    sd = surface_distances(pred, ref, SPACING, method=method)
    np.testing.assert_allclose(np.sort(sd.pred_to_ref), np.sort(brute_directed(pred, ref, SPACING)))
    np.testing.assert_allclose(np.sort(sd.ref_to_pred), np.sort(brute_directed(ref, pred, SPACING)))
    got = surface_metrics(sd, tau)
    want = brute_metrics(pred, ref, SPACING, tau)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_masks_touching_the_array_border_have_surface_there():
    ref = np.zeros((6, 6, 6), bool)
    ref[:, :, :3] = True  # fills whole slabs up to the border
    pred = ref.copy()
    pred[:, :, 3] = True
    got = surface_metrics(surface_distances(pred, ref, SPACING), 1.0)
    want = brute_metrics(pred, ref, SPACING, 1.0)
    assert got["hd"] == pytest.approx(want["hd"]) == pytest.approx(2.5)
    assert got["assd"] == pytest.approx(want["assd"])


@pytest.mark.parametrize("axis,k", [(0, 3), (1, 2), (2, 3), (2, 1)])
def test_shifted_cube_hausdorff_is_shift_times_spacing(axis, k):
    ref = np.zeros((20, 20, 20), np.uint8)
    ref[4:10, 4:10, 4:10] = 1
    pred = np.roll(ref, k, axis=axis)
    (row,) = compute_case_metrics(pred, ref, SPACING, [1])
    assert row["hd"] == pytest.approx(k * SPACING[axis], abs=1e-12)
    assert row["hd95"] <= row["hd"] + 1e-12
    assert row["dice"] == pytest.approx((6 - k) / 6)


def sphere(shape, spacing, centre_mm, radius_mm):
    grids = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    d2 = sum((g - c) ** 2 for g, c in zip(grids, centre_mm, strict=True))
    return d2 <= radius_mm**2


@pytest.mark.parametrize("r1,r2", [(4.0, 7.0), (5.0, 6.0)])
def test_concentric_spheres(r1, r2):
    spacing = (0.5, 0.75, 1.0)
    shape = (40, 28, 22)
    centre = (10.0, 10.0, 10.0)
    inner, outer = sphere(shape, spacing, centre, r1), sphere(shape, spacing, centre, r2)
    (row,) = compute_case_metrics(inner.astype(np.uint8), outer.astype(np.uint8), spacing, [1])
    assert abs(row["hd"] - (r2 - r1)) <= max(spacing)
    assert abs(row["assd"] - (r2 - r1)) <= max(spacing)
    assert row["hd95"] <= row["hd"]
    # NSD with a tolerance above the gap is 1, below it (minus a voxel) it is 0
    (wide,) = compute_case_metrics(inner, outer, spacing, [1], tolerance_mm=r2 - r1 + 1.0)
    (tight,) = compute_case_metrics(inner, outer, spacing, [1], tolerance_mm=r2 - r1 - 1.0)
    assert wide["nsd"] == 1.0 and wide["bf1"] == 1.0
    assert tight["nsd"] == 0.0 and tight["bf1"] == 0.0


def test_hd95_uses_directed_percentiles_like_monai():
    monai_metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    pred, ref = random_mask(rng, (14, 12, 10)), random_mask(rng, (14, 12, 10))
    (row,) = compute_case_metrics(pred, ref, SPACING, [1])

    def onehot(m):
        return torch.as_tensor(np.stack([~m, m])[None].astype(np.float32))

    hd95 = monai_metrics.compute_hausdorff_distance(
        onehot(pred), onehot(ref), percentile=95, spacing=SPACING
    )
    hd = monai_metrics.compute_hausdorff_distance(onehot(pred), onehot(ref), spacing=SPACING)
    assert row["hd95"] == pytest.approx(float(hd95), rel=1e-5)
    assert row["hd"] == pytest.approx(float(hd), rel=1e-5)

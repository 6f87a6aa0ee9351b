"""Surface distances against brute-force pairwise distances and analytic cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg.metrics import compute_case_metrics, surface_distances, surface_metrics, surface_search
from medseg.metrics.surface import surface_voxels, union_bbox

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


# --- the cropped, look-up-first search (medseg issue 20, item 5) ------------------------------


def assert_matches_brute(pred, ref, spacing, method="kdtree"):
    """Both directed sets equal brute-force pairwise distances, voxel for voxel (raster order)."""
    sd = surface_distances(pred, ref, spacing, method=method)
    np.testing.assert_allclose(sd.pred_to_ref, brute_directed(pred, ref, spacing), rtol=1e-12)
    np.testing.assert_allclose(sd.ref_to_pred, brute_directed(ref, pred, spacing), rtol=1e-12)
    return sd


def embed(mask: np.ndarray, shape, at) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[tuple(slice(a, a + n) for a, n in zip(at, mask.shape, strict=True))] = mask
    return out


@pytest.mark.parametrize("method", ["kdtree", "edt"])
@pytest.mark.parametrize("seed", range(4))
def test_small_masks_in_a_large_volume_equal_brute_force(method, seed):
    rng = np.random.default_rng(100 + seed)
    spacing = (0.7, 0.7, 1.5)
    pred = embed(random_mask(rng, (9, 8, 7)), (40, 36, 30), (5 + seed, 20, 3))
    ref = embed(random_mask(rng, (10, 7, 6)), (40, 36, 30), (8, 18 - seed, 4))
    assert_matches_brute(pred, ref, spacing, method)


@pytest.mark.parametrize("method", ["kdtree", "edt"])
def test_masks_far_apart_equal_brute_force(method):
    """Far beyond every look-up offset: the KD-tree (or the EDT's box) must still be exact."""
    rng = np.random.default_rng(3)
    shape = (60, 50, 40)
    pred = embed(random_mask(rng, (6, 5, 4)), shape, (0, 0, 0))  # touches three borders
    ref = embed(random_mask(rng, (5, 6, 4)), shape, (54, 44, 36))  # touches the other three
    sd = assert_matches_brute(pred, ref, (0.5, 1.0, 2.5), method)
    assert sd.pred_to_ref.min() > 40.0  # really far: nothing came from the look-ups


@pytest.mark.parametrize("method", ["kdtree", "edt"])
@pytest.mark.parametrize("where", ["corner", "middle"])
def test_one_voxel_masks(method, where):
    spacing = (0.5, 1.0, 2.5)
    pred, ref = np.zeros((7, 6, 5), bool), np.zeros((7, 6, 5), bool)
    at = (0, 0, 0) if where == "corner" else (3, 2, 2)
    pred[at] = True
    ref[6, 5, 4] = True
    sd = assert_matches_brute(pred, ref, spacing, method)
    assert sd.pred_to_ref.shape == sd.ref_to_pred.shape == (1,)
    same = surface_distances(pred, pred.copy(), spacing, method=method)
    assert same.pred_to_ref.tolist() == same.ref_to_pred.tolist() == [0.0]


@pytest.mark.parametrize("method", ["kdtree", "edt"])
def test_empty_masks(method):
    ref = np.zeros((8, 8, 8), bool)
    ref[2:5, 2:5, 2:5] = True
    empty = np.zeros_like(ref)
    both = surface_distances(empty, empty, SPACING, method=method)
    assert both.pred_empty and both.ref_empty
    assert both.pred_to_ref.size == both.ref_to_pred.size == 0
    assert surface_metrics(both)["hd95"] == 0.0 and surface_metrics(both)["nsd"] == 1.0
    one = surface_distances(empty, ref, SPACING, method=method)
    assert one.pred_empty and not one.ref_empty
    assert one.pred_to_ref.size == 0 and one.ref_to_pred.size == 26  # 27 voxels, one inside
    assert np.all(np.isinf(one.ref_to_pred))
    assert surface_metrics(one)["assd"] == float("inf") and surface_metrics(one)["nsd"] == 0.0


def test_whole_volume_equals_tight_crop_and_inputs_are_untouched():
    """crop=True on a big array gives the very numbers of crop=False on the cut-out box."""
    rng = np.random.default_rng(11)
    pred = embed(random_mask(rng, (12, 10, 8)), (50, 45, 40), (20, 5, 30))
    ref = embed(random_mask(rng, (12, 10, 8)), (50, 45, 40), (22, 7, 29))
    before = pred.copy(), ref.copy()
    full = surface_distances(pred, ref, SPACING)
    box = union_bbox(pred, ref, margin=0)
    cut = surface_distances(pred[box], ref[box], SPACING, crop=False)
    np.testing.assert_array_equal(full.pred_to_ref, cut.pred_to_ref)
    np.testing.assert_array_equal(full.ref_to_pred, cut.ref_to_pred)
    assert np.array_equal(pred, before[0]) and np.array_equal(ref, before[1])


@pytest.mark.parametrize("offsets", [1, 8, 40, 1000])
def test_look_up_budget_never_changes_the_values(monkeypatch, offsets):
    """However many offsets are looked up before the KD-tree, the numbers are the same."""
    rng = np.random.default_rng(5)
    ref = random_mask(rng, (16, 14, 12))
    pred = ndimage.binary_dilation(ref, iterations=2) & ~random_mask(rng, (16, 14, 12))
    monkeypatch.setattr(surface_search, "_SHELL_OFFSETS", offsets)
    monkeypatch.setattr(surface_search, "_CHECK_EVERY", 4)
    assert_matches_brute(pred, ref, (0.7, 0.7, 1.5))


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.5), (1.0, 1.0, 1.0), (0.1, 0.1, 5.0)])
def test_lattice_offsets_are_complete_shells_in_order(spacing):
    offsets, lengths = surface_search._lattice_offsets(spacing, 200)
    assert len(offsets) >= 201 and not offsets[0].any() and np.all(np.diff(lengths) >= 0)
    n = np.ceil(lengths[-1] / np.asarray(spacing)).astype(int) + 1
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in n], indexing="ij"), -1)
    every = np.sqrt(((grid.reshape(-1, 3) * spacing) ** 2).sum(1))
    assert np.count_nonzero(every <= lengths[-1]) == len(offsets)  # none missing, none extra
    np.testing.assert_allclose(np.sqrt(((offsets * spacing) ** 2).sum(1)), lengths)


@pytest.mark.parametrize("seed", range(3))
def test_surface_voxels_and_bounding_box_equal_scipy(seed):
    rng = np.random.default_rng(seed)
    mask = random_mask(rng, (13, 11, 9))
    structure = ndimage.generate_binary_structure(3, 1)
    want = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)
    flipped = (slice(None, None, -1), slice(None), slice(None, None, -1))
    cases = [(mask, want), (np.asfortranarray(mask), want), (mask[flipped], want[flipped])]
    for view, expected in cases:  # C order, Fortran order, a strided view
        np.testing.assert_array_equal(surface_voxels(view), expected)
        assert surface_search.bounding_box(view) == ndimage.find_objects(view.astype(np.uint8))[0]
    assert surface_search.bounding_box(np.zeros((4, 5, 6), bool)) is None


def test_case_metrics_on_a_multilabel_volume_equal_brute_force():
    rng = np.random.default_rng(9)
    shape = (40, 30, 24)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    ref[embed(random_mask(rng, (10, 9, 8)), shape, (2, 3, 1))] = 1
    pred[embed(random_mask(rng, (10, 9, 8)), shape, (3, 2, 2))] = 1
    ref[embed(random_mask(rng, (8, 8, 6)), shape, (30, 20, 15))] = 2
    pred[embed(random_mask(rng, (8, 8, 6)), shape, (31, 21, 16))] = 2
    pred[0, 29, 23] = 2  # a stray voxel far from the label's structure
    rows = compute_case_metrics(pred, ref, SPACING, [1, 2], tolerance_mm=1.5)
    for row in rows:
        want = brute_metrics(pred == row["label"], ref == row["label"], SPACING, 1.5)
        for key, value in want.items():
            assert row[key] == pytest.approx(value, rel=1e-12), (row["label"], key)


def ellipsoid(shape, centre, radii):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1.0


def test_equals_monai_hd95_assd_nsd_on_a_64_cube():
    """MONAI 1.6's three calls on a medium anisotropic case: equal to float32 precision."""
    monai_metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    spacing, tau = (0.7, 0.7, 1.5), 1.0
    ref = ellipsoid((64, 64, 64), (32, 31, 30), (20, 16, 12))
    pred = ellipsoid((64, 64, 64), (34, 30, 31), (19, 17, 11)) & ~ellipsoid(
        (64, 64, 64), (40, 40, 36), (5, 5, 4)
    )
    got = surface_metrics(surface_distances(pred, ref, spacing), tau)
    yp = torch.as_tensor(pred[None, None].astype(np.float32))
    yt = torch.as_tensor(ref[None, None].astype(np.float32))
    kw = {"include_background": True, "spacing": spacing}
    want = {
        "hd95": monai_metrics.compute_hausdorff_distance(yp, yt, percentile=95, **kw),
        "hd": monai_metrics.compute_hausdorff_distance(yp, yt, **kw),
        "assd": monai_metrics.compute_average_surface_distance(yp, yt, symmetric=True, **kw),
        "nsd": monai_metrics.compute_surface_dice(yp, yt, [tau], **kw),
    }
    assert got["hd95"] > 1.0 and 0.1 < got["nsd"] < 0.9  # a case with something to measure
    for key, value in want.items():
        assert got[key] == pytest.approx(float(value), rel=2e-7, abs=1e-6), key

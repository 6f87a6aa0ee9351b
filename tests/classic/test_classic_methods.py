"""The classic methods on arrays: each beats chance on a seeded phantom; config and seed checks."""

from __future__ import annotations

import numpy as np
import pytest
from classic_phantom import CENTRES, sphere_phantom

from medseg.classic import (
    METHOD_NAMES,
    METHODS,
    ClassicConfig,
    Seeds,
    ras_to_voxel,
    resolve_seeds,
    segment_array,
)
from medseg.data.synthetic import make_ct_phantom
from medseg.errors import MedsegError
from medseg.io import Volume, write_nifti
from medseg.metrics.overlap import dice_per_label


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    return dice_per_label((pred > 0).astype(np.uint8), ref.astype(np.uint8), [1])[1]


@pytest.fixture(scope="module")
def phantom() -> tuple[Volume, Volume]:
    return sphere_phantom(0)


def bright_centre(labels: Volume) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.argwhere(labels.array == 2).mean(axis=0).round())  # type: ignore[return-value]


# (config, target, minimum Dice); the Dice each reaches on sphere_phantom(0) is in the comment.
# Chance level (a random mask of the target's size) is about the target fraction: 0.058 for
# both spheres, 0.022 for the bright one.
UNSEEDED = [
    (ClassicConfig("otsu"), "both", 0.9),  # 0.978
    (ClassicConfig("multi-otsu", smooth_mm=1.0), "bright", 0.8),  # 0.873
    (ClassicConfig("multi-otsu", keep=(1, 2), smooth_mm=1.0), "both", 0.85),  # 0.937
    (ClassicConfig("kmeans", smooth_mm=1.0), "bright", 0.8),  # 0.868
    (ClassicConfig("kmeans", keep=(1, 2), smooth_mm=1.0), "both", 0.85),  # 0.937
    (ClassicConfig("gmm"), "bright", 0.9),  # 0.991
    (ClassicConfig("watershed"), "both", 0.9),  # 0.940
]


@pytest.mark.parametrize(("config", "target", "minimum"), UNSEEDED, ids=lambda v: str(v)[:40])
def test_unseeded_methods_beat_chance(phantom, config, target, minimum):
    image, labels = phantom
    ref = labels.array == 2 if target == "bright" else labels.array > 0
    before = image.array.copy()
    out = segment_array(image.array, image.spacing, config)
    assert out.shape == image.array.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1}
    score = dice(out, ref)
    assert score >= minimum, f"{config.method}: Dice {score:.3f}"
    assert score > 10 * ref.mean()  # far above a chance-level mask
    np.testing.assert_array_equal(image.array, before)  # the input is not modified


@pytest.mark.parametrize(
    ("method", "extra", "minimum"),
    [
        ("region-grow", {"lower": 120.0, "upper": 400.0}, 0.95),  # 1.000
        ("confidence-connected", {}, 0.95),  # 0.993
        ("watershed", {"smooth_mm": 1.0}, 0.8),  # 0.900
    ],
)
def test_seeded_methods_grow_the_seeded_sphere(phantom, method, extra, minimum):
    image, labels = phantom
    centre = bright_centre(labels)
    config = ClassicConfig(method, seeds_voxel=(centre,), **extra)
    seeds = resolve_seeds(image, config, "case0")
    np.testing.assert_array_equal(seeds.points, [centre])
    out = segment_array(image.array, image.spacing, config, seeds)
    score = dice(out, labels.array == 2)
    assert score >= minimum, f"{method}: Dice {score:.3f}"
    assert not np.any(out[labels.array == 1])  # the other (unseeded) sphere is left out


def test_watershed_from_a_seed_mask_with_background_markers(phantom):
    image, labels = phantom
    marks = np.zeros(image.array.shape, np.int64)
    c = bright_centre(labels)
    marks[c[0] - 1 : c[0] + 2, c[1], c[2] - 1 : c[2] + 2] = 1
    marks[0, :, :] = marks[-1, :, :] = 2
    marks[labels.array == 1] = 2  # the dim sphere is declared background
    config = ClassicConfig("watershed", smooth_mm=1.0, fill_holes=True)
    out = segment_array(image.array, image.spacing, config, Seeds(mask=marks))
    assert dice(out, labels.array == 2) > 0.8  # 0.900
    assert not np.any(out[labels.array == 1])


def test_region_grow_from_a_world_seed_on_an_lps_ct_phantom():
    """A seed in RAS mm finds the right kidney of a CT phantom stored in LPS voxel order."""
    image, labels = make_ct_phantom((48, 48, 24), (1.5, 1.5, 3.0), seed=3, axcodes="LPS")
    shape = labels.array.shape
    world = np.indices(shape).reshape(3, -1).T @ image.affine[:3, :3].T + image.affine[:3, 3]
    right_kidney = (labels.array == 2) & (world[:, 0] > 0).reshape(shape)  # +x is Right
    voxels = np.argwhere(right_kidney)
    centre = voxels[np.argmin(np.linalg.norm(voxels - voxels.mean(axis=0), axis=1))]
    point = tuple(float(v) for v in image.affine[:3, :3] @ centre + image.affine[:3, 3])
    config = ClassicConfig(
        "region-grow", lower=100.0, upper=260.0, seeds_ras=(point,), smooth_mm=1.5, fill_holes=True
    )
    seeds = resolve_seeds(image, config, "ct")
    np.testing.assert_array_equal(seeds.points, [centre])
    out = segment_array(image.array, image.spacing, config, seeds)
    assert dice(out, right_kidney) > 0.8  # 0.859


def test_label_value_dtype_and_largest_component(phantom):
    image, labels = phantom
    out = segment_array(image.array, image.spacing, ClassicConfig("otsu", label_value=300))
    assert out.dtype == np.uint16 and set(np.unique(out)) == {0, 300}
    one = segment_array(
        image.array, image.spacing, ClassicConfig("otsu", largest_component=True, min_size_mm3=0)
    )
    from scipy import ndimage

    assert ndimage.label(out > 0, structure=np.ones((3, 3, 3)))[1] > 2  # noise specks
    assert ndimage.label(one > 0, structure=np.ones((3, 3, 3)))[1] == 1
    assert dice(one, labels.array == 1) > 0.9  # the larger (dim) sphere survives


def test_registry_matches_the_method_names():
    assert tuple(METHODS) == METHOD_NAMES


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "otsuu"}, "did you mean 'otsu'"),
        ({"method": "watershedd"}, "did you mean 'watershed'"),
        ({"method": "otsu", "seeds_voxel": ((1, 2, 3),)}, "classic.seeds_voxel: expected no"),
        ({"method": "otsu", "classes": 3}, "read by multi-otsu, kmeans, gmm"),
        ({"method": "confidence-connected", "lower": 0.0}, "classic.lower: expected no lower"),
        ({"method": "region-grow", "lower": 0.0}, "expected seed points"),
        ({"method": "region-grow", "seeds_voxel": ((1, 2, 3),)}, "expected --lower and/or"),
        ({"method": "kmeans", "keep": (3,)}, "class indices 0 (darkest) to 2"),
        ({"method": "otsu", "lower": 5.0, "upper": 1.0}, "expected lower < upper"),
        ({"method": "otsu", "label_value": 0}, "classic.label_value"),
        ({"method": "gmm", "classes": 9}, "classic.classes: expected 2 to 8"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(MedsegError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ClassicConfig(**kwargs)


def test_methods_that_cannot_run_say_why(phantom):
    image, _ = phantom
    flat = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(MedsegError, match="at least two intensity levels"):
        segment_array(flat, (1.0, 1.0, 1.0), ClassicConfig("kmeans"))
    cfg = ClassicConfig("region-grow", lower=500.0, upper=900.0, seeds_voxel=((1, 1, 1),))
    with pytest.raises(MedsegError, match=r"a seed with an intensity inside \[500, 900\]"):
        segment_array(image.array, image.spacing, cfg, resolve_seeds(image, cfg, "case0"))


def test_world_seeds_map_to_voxels_and_outside_seeds_are_refused(phantom, tmp_path):
    image, labels = phantom
    bright = np.argwhere(labels.array == 2).mean(axis=0)
    # the bright sphere's centre, given in RAS mm, lands on the voxel nearest to it
    got = ras_to_voxel(image.affine, [CENTRES[1]])[0]
    assert np.abs(got - bright).max() <= 1.0
    far = ClassicConfig("region-grow", lower=0.0, seeds_ras=((0.0, 0.0, 500.0),))
    with pytest.raises(
        MedsegError, match=r"--seed \(RAS mm\) \(0.0, 0.0, 500.0\): expected a point"
    ):
        resolve_seeds(image, far, "case0")
    shape = image.array.shape
    bad = ClassicConfig("region-grow", lower=0.0, seeds_voxel=((shape[0], 0, 0),))
    with pytest.raises(MedsegError, match="--seed-voxel"):
        resolve_seeds(image, bad, "case0")


def test_a_seed_mask_on_another_grid_is_refused(phantom, tmp_path):
    image, labels = phantom
    other = image.affine.copy()
    other[:3, 3] += 5.0  # same shape, shifted 5 mm
    write_nifti((labels.array == 2).astype(np.uint8), other, tmp_path / "seeds.nii.gz")
    config = ClassicConfig("region-grow", lower=120.0, seed_mask=str(tmp_path / "seeds.nii.gz"))
    with pytest.raises(MedsegError, match="seed mask grid: expected the image's grid") as info:
        resolve_seeds(image, config, "case0")
    assert "seeds.nii.gz" in str(info.value)
    write_nifti((labels.array == 2).astype(np.uint8), image.affine, tmp_path / "ok.nii.gz")
    good = ClassicConfig("region-grow", lower=120.0, seed_mask=str(tmp_path / "ok.nii.gz"))
    seeds = resolve_seeds(image, good, "case0")
    out = segment_array(image.array, image.spacing, good, seeds)
    assert dice(out, labels.array == 2) > 0.95

"""Patch sampling with foreground oversampling and augmentation shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import ClassesToIndicesd

from medseg.planning.plans import Plans
from medseg.transforms.augmentation import (
    PadForSamplingd,
    class_ratios,
    sampling_shape,
    training_transforms,
)
from medseg.transforms.config import AugmentConfig


def _case() -> dict:
    label = torch.zeros(1, 48, 48, 40, dtype=torch.uint8)
    label[0, 10:30, 10:30, 10:30] = 1
    label[0, 40:42, 40:42, 35:37] = 2  # an 8-voxel "lesion" far from the organ
    image = torch.randn(1, 48, 48, 40) + label.float()
    return dict(ClassesToIndicesd("label", num_classes=3)({"image": image, "label": label}))


def _plans(**kw) -> Plans:
    return Plans(
        modality="CT",
        labels={0: "bg", 1: "organ", 2: "lesion"},
        target_spacing=(1.0, 1.0, 1.0),
        normalization="zscore",
        patch_size=(16, 16, 16),
        batch_size=2,
        **kw,
    )


def test_class_ratios() -> None:
    assert class_ratios(3, 0.6) == pytest.approx([0.4, 0.3, 0.3])
    assert class_ratios(1, 0.6) == [1.0]


@pytest.mark.parametrize("rotate", [0.0, 1.0])
def test_patches_have_patch_size_and_see_rare_classes(rotate: float) -> None:
    aug = AugmentConfig(rotate_prob=rotate, scale_prob=rotate)
    transform = training_transforms(_plans(), aug, foreground_ratio=1.0)
    transform.set_random_state(seed=3)
    case = _case()
    lesion_seen = 0
    for _ in range(20):
        (patch,) = transform(case)
        assert tuple(patch["image"].shape) == (1, 16, 16, 16)
        assert tuple(patch["label"].shape) == (1, 16, 16, 16)
        lesion_seen += int((patch["label"] == 2).any())
    # half the patches are centred on the 8-voxel lesion (occupying 0.0002 of the volume)
    assert lesion_seen >= 5


def test_mirroring_follows_plans() -> None:
    case = _case()
    no_mirror = AugmentConfig(
        rotate_prob=0,
        scale_prob=0,
        noise_prob=0,
        blur_prob=0,
        brightness_prob=0,
        contrast_prob=0,
        gamma_prob=0,
        lowres_prob=0,
        mirror_prob=1.0,
    )
    transform = training_transforms(_plans(mirror_axes=()), no_mirror, foreground_ratio=0.0)
    transform.set_random_state(seed=0)
    (patch,) = transform(case)
    # without mirroring the patch is an exact crop of the image
    img = case["image"][0].numpy()
    p = patch["image"][0].numpy()
    (i, j, k), *_ = np.argwhere(img == p[0, 0, 0])  # random floats: the match is unique
    assert np.array_equal(img[i : i + 16, j : j + 16, k : k + 16], p)


def _thin_case() -> dict:
    """60 x 60 x 30 voxels, an organ blob near the far corner: thinner than the crop in Z."""
    label = torch.zeros(1, 60, 60, 30, dtype=torch.uint8)
    label[0, 40:43, 40:43, 20:23] = 1
    image = torch.randn(1, 60, 60, 30, generator=torch.Generator().manual_seed(0))
    return dict(ClassesToIndicesd("label", num_classes=2)({"image": image, "label": label}))


def _fg_plans(patch: tuple[int, int, int]) -> Plans:
    return Plans(
        modality="CT",
        labels={0: "bg", 1: "organ"},
        target_spacing=(1.0, 1.0, 1.0),
        normalization="zscore",
        patch_size=patch,
        batch_size=2,
    )


@pytest.mark.parametrize("rotate", [0.0, 1.0])
def test_foreground_patches_hit_foreground_in_cases_thinner_than_the_crop(rotate: float) -> None:
    # The case is padded in Z to reach the crop; the class indices must follow the padding
    # (MONAI's pad alone leaves them pointing into the unpadded shape: 0 of 30 hits).
    case = _thin_case()
    before = {k: case[k].clone() for k in ("image", "label")}
    aug = AugmentConfig(rotate_prob=rotate, scale_prob=0.0)
    transform = training_transforms(_fg_plans((20, 20, 40)), aug, foreground_ratio=1.0)
    transform.set_random_state(seed=0)
    hits = 0
    for _ in range(30):
        (patch,) = transform(case)
        assert tuple(patch["label"].shape) == (1, 20, 20, 40)
        hits += int((patch["label"] == 1).sum() >= 9)
    assert hits >= 27  # rotation may turn a few voxels of the 27-voxel blob out of the patch
    for k, v in before.items():  # the cached case is not modified
        assert torch.equal(case[k], v)


def test_load_cached_pads_training_cases_for_sampling(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from medseg.training.data import load_cached

    case = _thin_case()
    path = tmp_path / "case.npz"
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 7.0]
    np.savez(path, image=case["image"].numpy(), label=case["label"].numpy(), affine=affine)
    plans = _fg_plans((20, 20, 40))
    aug = AugmentConfig(rotate_prob=0.2)
    assert sampling_shape(plans, aug) == (25, 25, 50)
    (item,) = load_cached([path], 2, pad=PadForSamplingd.from_plans(plans, aug))
    # at least the crop (Z: 30 -> 50) and the crop's margin over the patch (X, Y: 60 + 5)
    assert tuple(item["image"].shape) == (1, 65, 65, 50) and item["label"].dtype == torch.uint8
    assert type(item["image"]) is torch.Tensor  # plain tensors, as the loader expects
    # centred ("symmetric"): 2 voxels before in X and Y, 10 slices before in Z
    blob = item["label"][0, 42:45, 42:45, 30:33]
    assert torch.equal(blob, torch.ones(3, 3, 3, dtype=torch.uint8))
    assert int(item["label"].sum()) == 27
    organ = np.unravel_index(np.asarray(item["label_cls_indices"][1]), (65, 65, 50))
    assert set(organ[2].tolist()) == {30, 31, 32} and set(organ[0].tolist()) == {42, 43, 44}
    # the voxel-to-world map follows: padded voxel (2, 2, 10) is the old voxel (0, 0, 0)
    world = np.asarray(item["affine"]) @ np.array([2.0, 2.0, 10.0, 1.0])
    assert np.allclose(world[:3], affine[:3, 3])
    # the mark stops a second padding (without it the case would grow to 70 x 70 x 60)
    again = PadForSamplingd.from_plans(plans, aug)(item)
    assert tuple(again["label"].shape) == (1, 65, 65, 50)
    assert again["label_cls_indices"] is item["label_cls_indices"]  # not re-indexed
    transform = training_transforms(plans, aug, foreground_ratio=1.0)
    transform.set_random_state(seed=1)
    (patch,) = transform(item)
    assert int(patch["label"].sum()) > 0
    (val,) = load_cached([path], 2, indices=False)
    assert tuple(val["image"].shape) == (1, 60, 60, 30)  # validation cases keep their shape


def test_patches_reach_the_border_of_cases_larger_than_the_crop() -> None:
    # A one-voxel object in the corner of a 40^3 case; patch 16, crop 20 (rotation on, never
    # drawn). Without the crop's margin the final patch (the crop's centre) could not come
    # closer than 2 voxels to the border: the corner voxel was never trained on.
    label = torch.zeros(1, 40, 40, 40, dtype=torch.uint8)
    label[0, 0, 0, 0] = 1
    case = dict(
        ClassesToIndicesd("label", num_classes=2)(
            {"image": torch.randn(1, 40, 40, 40), "label": label}
        )
    )
    aug = AugmentConfig(rotate_prob=1e-9, scale_prob=0.0)
    transform = training_transforms(_fg_plans((16, 16, 16)), aug, foreground_ratio=1.0)
    transform.set_random_state(seed=0)
    seen = [int(transform(case)[0]["label"].sum()) for _ in range(5)]
    assert seen == [1] * 5

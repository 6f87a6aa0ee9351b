"""Patch sampling with foreground oversampling and augmentation shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import ClassesToIndicesd

from medseg.training.config import AugmentConfig
from medseg.training.plans import Plans
from medseg.transforms.augmentation import class_ratios, training_transforms


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

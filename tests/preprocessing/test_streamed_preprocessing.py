"""Bounded-memory preprocessing steps equal the MONAI transforms they replace."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from monai.transforms import NormalizeIntensity, ScaleIntensityRange, Spacingd
from tiny_run import tiny_plans

import medseg.preprocessing.streamed as streamed
from medseg.data.synthetic import make_ct_phantom, make_mr_phantom
from medseg.preprocessing.pipeline import preprocessing_transforms
from medseg.preprocessing.streamed import (
    ClipScaleIntensity,
    ZScoreIntensity,
    apply_preprocessing,
    resample_in_slabs,
)


@pytest.fixture(autouse=True)
def _small_slabs(monkeypatch):
    monkeypatch.setattr(streamed, "_SLAB_VOXELS", 500)  # many slabs even on tiny arrays


@pytest.mark.parametrize("nonzero", [False, True])
def test_zscore_equals_monai_normalize_intensity(rng, nonzero: bool) -> None:
    img = rng.normal(50.0, 20.0, (2, 12, 10, 9)).astype(np.float32)
    img[0, :4] = 0.0  # background the non-zero variant must leave alone
    img[1] = 7.0  # a constant channel: std 0 -> divided by 1
    want = NormalizeIntensity(nonzero=nonzero, channel_wise=True)(torch.from_numpy(img.copy()))
    x = torch.from_numpy(img.copy())
    got = ZScoreIntensity(nonzero=nonzero)(x)
    assert got is x  # in place
    np.testing.assert_allclose(got.numpy(), np.asarray(want), rtol=1e-5, atol=1e-5)
    if nonzero:
        assert (got[0, :4] == 0).all()


def test_clip_scale_equals_monai_scale_intensity_range(rng) -> None:
    img = rng.normal(0.0, 400.0, (1, 20, 18, 9)).astype(np.float32)
    args = {"a_min": -200.0, "a_max": 800.0, "b_min": -1.73, "b_max": 4.93}
    want = ScaleIntensityRange(**args, clip=True)(torch.from_numpy(img.copy()))
    x = torch.from_numpy(img.copy())
    got = ClipScaleIntensity(**args)(x)
    assert got is x
    np.testing.assert_array_equal(got.numpy(), np.asarray(want))  # the same operations


def test_zscore_of_an_all_zero_channel_leaves_it_alone() -> None:
    x = torch.zeros((1, 4, 4, 4))
    assert (ZScoreIntensity(nonzero=True)(x) == 0).all()


@pytest.mark.parametrize("axcodes", ["RAS", "LPS"])
def test_slab_resampling_equals_spacingd(axcodes: str) -> None:
    image, _ = make_ct_phantom((30, 26, 14), (1.1, 0.9, 2.5), seed=2, axcodes=axcodes)
    mt = image.to_metatensor().float()
    spacing = Spacingd("image", pixdim=(1.5, 1.5, 3.0), mode="bilinear", dtype=np.float32)
    want = spacing({"image": mt})["image"]
    got, affine = resample_in_slabs(mt, spacing, slab_mvox=2e-4)  # slabs of a plane or two
    assert tuple(got.shape) == tuple(want.shape) and got.dtype == torch.float32
    np.testing.assert_allclose(affine, np.asarray(want.affine), atol=1e-6)
    np.testing.assert_allclose(got.numpy(), want.as_tensor().numpy(), rtol=1e-5, atol=2e-3)


@pytest.mark.parametrize("kind", ["ct", "mr"])
def test_apply_preprocessing_equals_the_pipeline(kind: str) -> None:
    if kind == "ct":
        plans = tiny_plans()
        image, _ = make_ct_phantom((36, 30, 12), (1.2, 1.2, 2.0), seed=1, axcodes="LPS")
    else:
        plans = dataclasses.replace(tiny_plans(), modality="MR", normalization="zscore_nonzero")
        image, _ = make_mr_phantom((36, 30, 12), (1.2, 1.2, 2.0), seed=1, axcodes="PSR")
    pipeline = preprocessing_transforms(plans, keys=("image",), load=False)
    before = image.array.copy()
    want = pipeline({"image": image.to_metatensor()})["image"]
    got, affine = apply_preprocessing(pipeline, image.to_metatensor(), slab_mvox=5e-4)
    np.testing.assert_array_equal(image.array, before)
    np.testing.assert_allclose(affine, np.asarray(want.affine), atol=1e-6)
    np.testing.assert_allclose(got.numpy(), want.as_tensor().numpy(), rtol=1e-4, atol=1e-4)

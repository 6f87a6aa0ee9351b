"""Per-channel normalisation never changes the caller's arrays."""

from __future__ import annotations

import numpy as np
import torch

from medseg.io.volume import Volume
from medseg.planning.plans import ChannelPlan, NetworkSpec, Plans
from medseg.preprocessing.pipeline import preprocessing_transforms


def _plans(channels: tuple[ChannelPlan, ...]) -> Plans:
    first = channels[0]
    return Plans(
        modality=first.modality,
        labels={0: "background", 1: "x"},
        target_spacing=(1.0, 1.0, 1.0),
        normalization=first.normalization,
        intensity_clip=first.intensity_clip,
        intensity_mean=first.intensity_mean,
        intensity_std=first.intensity_std,
        patch_size=(8, 8, 8),
        batch_size=2,
        network=NetworkSpec(channels=(4, 8), strides=((2, 2, 2),)),
        input_channels=channels if len(channels) > 1 else (),
    )


def test_each_channel_gets_its_scheme_and_inputs_stay_unchanged() -> None:
    rng = np.random.default_rng(0)
    arr = np.stack([rng.normal(40, 30, (10, 9, 8)), rng.gamma(2.0, 2.0, (10, 9, 8))])
    arr = arr.astype(np.float32)
    before = arr.copy()
    plans = _plans(
        (ChannelPlan("CT", "ct", (-100.0, 200.0), 40.0, 30.0), ChannelPlan("PET", "zscore"))
    )
    vol = Volume(arr, np.eye(4))
    out = preprocessing_transforms(plans, keys=("image",), load=False)(
        {"image": vol.to_metatensor()}
    )
    img = torch.as_tensor(out["image"]).numpy()
    np.testing.assert_array_equal(arr, before)  # the caller's volume is untouched
    np.testing.assert_allclose(img[0], (np.clip(before[0], -100, 200) - 40) / 30, atol=1e-5)
    pet = before[1]
    np.testing.assert_allclose(img[1], (pet - pet.mean()) / pet.std(), atol=1e-4)


def test_single_channel_zscore_leaves_the_input_alone() -> None:
    arr = np.random.default_rng(1).normal(100, 20, (10, 9, 8)).astype(np.float32)
    before = arr.copy()
    plans = _plans((ChannelPlan("MRI", "zscore_nonzero"),))
    out = preprocessing_transforms(plans, keys=("image",), load=False)(
        {"image": Volume(arr, np.eye(4)).to_metatensor()}
    )
    np.testing.assert_array_equal(arr, before)
    assert abs(float(torch.as_tensor(out["image"]).mean())) < 1e-4

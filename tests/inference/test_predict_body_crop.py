"""``Predictor`` with the crop to the body: the same mask as without it, on the source grid.

The network is pointwise (a 1x1x1 convolution thresholding the normalised HU), so its
probabilities do not depend on where the sliding windows fall: with and without the crop the
masks must then be identical voxel for voxel, and equal to the threshold rule applied to the
source scan (which checks the geometry of the paste-back on non-RAS input).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from tiny_run import tiny_plans

from medseg.data.synthetic import make_ct_phantom
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.inference.config import InferConfig
from medseg.io import Volume

TISSUE_HU, BONE_HU = 20.5, 300.5  # half-integers: integer HU never ties


def _plans():
    return dataclasses.replace(tiny_plans(), labels={0: "background", 1: "tissue", 2: "bone"})


def _pointwise_model(plans) -> torch.nn.Module:
    """Logits of (background, tissue, bone) from the normalised intensity of each voxel."""
    mean, std = plans.intensity_mean, plans.intensity_std
    t1, t2 = (TISSUE_HU - mean) / std, (BONE_HU - mean) / std
    conv = torch.nn.Conv3d(1, 3, 1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([0.0, 20.0, 60.0]).view(3, 1, 1, 1, 1)
        conv.bias[:] = torch.tensor([0.0, -20.0 * t1, -20.0 * t1 - 40.0 * t2])
    return conv.eval()


def _rule(hu: np.ndarray) -> np.ndarray:
    return np.select([hu > BONE_HU, hu > TISSUE_HU], [2, 1], 0).astype(np.uint8)


def _scan(axcodes: str) -> Volume:
    """A CT phantom (1.5 x 1.5 x 3 mm, the plans' spacing) with 12 voxels of air around it."""
    image, _ = make_ct_phantom((40, 36, 16), (1.5, 1.5, 3.0), seed=4, axcodes=axcodes)
    pad = [(12, 12) if n > 16 else (0, 0) for n in image.array.shape]
    shift = np.eye(4)
    shift[:3, 3] = [-p[0] for p in pad]
    array = np.pad(image.array, pad, constant_values=-1000)
    return Volume(array, image.affine @ shift, meta=image.meta)


def _predictor(body_crop: bool | str) -> Predictor:
    plans = _plans()
    config = InferConfig(device="cpu", body_crop=body_crop)  # type: ignore[arg-type]
    return Predictor([_pointwise_model(plans)], plans, config=config)


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PSR"])
def test_body_crop_gives_the_uncropped_mask_on_the_source_grid(axcodes: str) -> None:
    torch.set_num_threads(1)
    scan = _scan(axcodes)
    before = scan.array.copy()
    plain, cropped = _predictor(False), _predictor(True)
    full = plain.predict(scan).mask
    crop = cropped.predict(scan).mask
    np.testing.assert_array_equal(scan.array, before)  # the input is not modified
    assert crop.array.shape == scan.array.shape
    np.testing.assert_array_equal(crop.affine, scan.affine)
    np.testing.assert_array_equal(crop.array, full.array)
    np.testing.assert_array_equal(crop.array, _rule(scan.array))  # geometry: voxel for voxel
    assert (crop.array == 2).any() and (crop.array == 1).any()
    # less work: the sliding window saw the body box only
    seen_plain = plain.preprocess(scan).image.shape[1:]
    seen_crop = cropped.preprocess(scan).image.shape[1:]
    assert np.prod(seen_crop) < 0.75 * np.prod(seen_plain)


def test_auto_crops_ct_models_only() -> None:
    assert _predictor("auto").body_crop
    assert not _predictor(False).body_crop
    mr = dataclasses.replace(_plans(), modality="MR", normalization="zscore_nonzero")
    predictor = Predictor([_pointwise_model(_plans())], mr, config=InferConfig(device="cpu"))
    assert not predictor.body_crop
    assert Predictor([torch.nn.Identity()], mr, config=InferConfig(body_crop=True)).body_crop


def test_auto_does_not_crop_when_a_channel_is_normalised_per_image() -> None:
    """CT + PET: the PET z-score would take the crop's statistics, not the whole scan's."""
    base = _plans()
    ct = base.channel_plans[0]
    pet = dataclasses.replace(
        ct,
        modality="PET",
        normalization="zscore",
        intensity_clip=None,
        intensity_mean=None,
        intensity_std=None,
    )
    ct_pet = dataclasses.replace(base, input_channels=(ct, pet))
    predictor = Predictor([torch.nn.Identity()], ct_pet, config=InferConfig(device="cpu"))
    assert not predictor.body_crop
    both_ct = dataclasses.replace(base, input_channels=(ct, dataclasses.replace(ct)))
    assert Predictor([torch.nn.Identity()], both_ct, config=InferConfig(device="cpu")).body_crop


def test_bad_body_crop_value_is_refused() -> None:
    with pytest.raises(MedsegError, match="body_crop"):
        InferConfig(body_crop="yes")  # type: ignore[arg-type]

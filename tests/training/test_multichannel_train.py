"""Two-channel training (CT + PET on another grid): plans, fingerprint, cache and network follow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_config_helpers import two_channel_config

from medseg.data.ct_pet import write_ct_pet_cohort
from medseg.data.manifest import load_manifest
from medseg.planning.plans import load_plans
from medseg.preprocessing.cache import PreprocessedCache
from medseg.training.run import train
from medseg.transforms.augmentation import training_transforms


@pytest.fixture(scope="module")
def ct_pet_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ct_pet_cohort(tmp_path_factory.mktemp("ctpet"), 4, seed=5)


def test_two_channel_run_plans_each_channel_and_builds_a_two_input_network(
    ct_pet_cohort: Path, tmp_path: Path
) -> None:
    cfg = two_channel_config(ct_pet_cohort, tmp_path / "cache")
    train(cfg, tmp_path / "run")
    plans = load_plans(tmp_path / "run" / "plans.json")
    assert plans.in_channels == 2 and plans.channel_names == ("CT", "PET")
    ct, pet = plans.channel_plans
    assert ct.normalization == "ct" and ct.intensity_clip is not None
    assert pet.normalization == "zscore" and pet.intensity_clip is None
    fp = json.loads((tmp_path / "run" / "fingerprint.json").read_text())
    assert fp["modalities"] == ["CT", "PET"]
    # the PET channel's tumour statistics are the PET's (SUV ~ 3-9), not the CT's (HU ~ 35)
    assert 1.0 < fp["channel_intensity"][1]["mean"] < 10.0
    assert 20.0 < fp["channel_intensity"][0]["mean"] < 60.0
    ckpt = torch.load(tmp_path / "run" / "fold_0" / "checkpoint_last.pt", weights_only=True)
    first = next(v for k, v in ckpt["model"].items() if k.endswith("weight") and v.ndim == 5)
    assert first.shape[1] == 2  # the first convolution reads two channels


def test_cache_holds_both_channels_normalised_per_channel(
    ct_pet_cohort: Path, tmp_path: Path
) -> None:
    cfg = two_channel_config(ct_pet_cohort, tmp_path / "cache")
    train(cfg, tmp_path / "run")
    plans = load_plans(tmp_path / "run" / "plans.json")
    manifest = load_manifest(ct_pet_cohort, ct_pet_cohort.parent)
    cache = PreprocessedCache(tmp_path / "cache", plans)
    (path,) = cache.ensure(manifest.training[:1])
    with np.load(path) as z:
        image, label = z["image"], z["label"]
    assert image.shape[0] == 2 and label.shape[1:] == image.shape[1:]
    pet = image[1]
    assert abs(float(pet.mean())) < 1e-3 and float(pet.std()) == pytest.approx(1.0, abs=1e-3)
    assert float(pet[label[0] > 0].mean()) > 1.0  # the tumour is avid after normalisation
    # augmentation keeps two channels and draws intensity changes per channel
    aug = training_transforms(plans, cfg.augment)
    out = aug({"image": torch.as_tensor(image), "label": torch.as_tensor(label)})[0]
    assert tuple(out["image"].shape) == (2, *plans.patch_size)


def test_manifest_with_a_missing_channel_file_names_the_channel(
    ct_pet_cohort: Path, tmp_path: Path
) -> None:
    doc = json.loads(ct_pet_cohort.read_text())
    doc["training"][1]["image"][1] = "./ctpet_001/nope.nii.gz"
    bad = ct_pet_cohort.parent / "bad.json"
    bad.write_text(json.dumps(doc))
    from medseg.data.validation import validate_manifest

    report = validate_manifest(load_manifest(bad, ct_pet_cohort.parent))
    text = "\n".join(map(str, report.problems))
    assert "nope.nii.gz: [ctpet_001] file not found (expected the image file of channel 1)" in text
    assert len(report.problems) == 1

"""A two-channel (CT + PET) bundle: metadata per channel, and `monai.bundle run` == `medseg predict`
on a folder of ``CASE_0000``/``CASE_0001`` cases."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import assert_torchscript_matches_state_dict, bundle_run_and_predict
from multichannel_run import ct_pet_case, fit_two_channel, two_channel_plans, write_two_channel_run

from medseg.bundle import export_bundle, verify_metadata
from medseg.data.synthetic import reorient
from medseg.io import write_nifti


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    plans = two_channel_plans()
    run = write_two_channel_run(tmp_path_factory.mktemp("run"), plans, fit_two_channel(plans))
    out = tmp_path_factory.mktemp("bundles") / "ct_pet"
    return export_bundle(run, out, name="ct_pet", version="0.2.0")


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two cases: RAS, and an LPS-ordered CT; each PET on its own coarser, shifted grid."""
    folder = tmp_path_factory.mktemp("scans")
    for name, seed, codes in (("ras", 5, "RAS"), ("lps", 6, "LPS")):
        ct, pet, _ = ct_pet_case(seed, centre_mm=(0.5, -1.0, 0.0))
        ct = reorient(ct.array, ct.affine, codes)
        write_nifti(ct.array, ct.affine, folder / f"{name}_0000.nii.gz")
        write_nifti(pet.array, pet.affine, folder / f"{name}_0001.nii.gz")
    return folder


def test_metadata_describes_each_channel(bundle: Path) -> None:
    verify_metadata(bundle / "configs/metadata.json")
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 2 and image["channel_def"] == {"0": "CT", "1": "PET"}
    assert image["modality"] == "CT+PET" and image["format"] == "mixed"
    norms = image["channel_normalization"]
    assert norms["0"].startswith("ct: clip to [-100, 200], then (x - 40) / 50")
    assert norms["1"].startswith("zscore: per-image z-score")
    assert "CT+PET" in meta["task"]
    inference = json.loads((bundle / "configs/inference.json").read_text())
    assert inference["network_def"]["in_channels"] == 2
    readme = (bundle / "docs/README.md").read_text()
    assert "`CASE_0001` (PET)" in readme and "| 1 | PET | zscore" in readme


def test_monai_verify_metadata_accepts_the_extra_keys(bundle: Path) -> None:
    from monai.bundle import verify_metadata as monai_verify

    schema = bundle / "configs/meta_schema.json"
    monai_verify(meta_file=str(bundle / "configs/metadata.json"), filepath=str(schema))


def test_weights_and_torchscript_take_two_channels(bundle: Path) -> None:
    plans = two_channel_plans()
    assert_torchscript_matches_state_dict(bundle, plans, 2, (16, 16, 16))


def test_monai_bundle_run_equals_medseg_predict(bundle: Path, scans: Path, tmp_path: Path) -> None:
    out_bundle, out_medseg = bundle_run_and_predict(bundle, scans, tmp_path)
    assert sorted(p.name for p in out_bundle.glob("*.nii.gz")) == ["lps.nii.gz", "ras.nii.gz"]
    n_core = 0
    for name in ("ras", "lps"):
        a = nib.load(out_bundle / f"{name}.nii.gz")
        b = nib.load(out_medseg / f"{name}.nii.gz")
        ct = nib.load(scans / f"{name}_0000.nii.gz")
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_allclose(a.affine, ct.affine, atol=1e-6)  # channel 0's grid
        assert a.shape == ct.shape and nib.aff2axcodes(a.affine) == nib.aff2axcodes(ct.affine)
        n_core += int(np.count_nonzero(np.asarray(a.dataobj) == 2))
    assert n_core > 0  # the core, visible in PET only: both channels reached the network

"""Bundle export: layout, metadata, TorchScript, and `monai.bundle run` == `medseg predict`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from atomic_helpers import (
    DiskFullError,
    folder_state,
    raise_after,
    tear_text_writes,
    write_half_and_raise,
)
from bundle_helpers import assert_torchscript_matches_state_dict, bundle_run_and_predict
from tiny_run import SHAPE, SPACING, make_tiny_run, tiny_plans

from medseg.bundle import export as export_mod
from medseg.bundle import export_bundle, verify_metadata
from medseg.cli import main
from medseg.data.synthetic import make_ct_phantom
from medseg.errors import MedsegError
from medseg.io import write_nifti


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return make_tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def bundle(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "phantom_ct"
    return export_bundle(run_dir, out, name="phantom_ct", version="1.2.3")


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two scans: one RAS and one LPS-oriented, anisotropic."""
    folder = tmp_path_factory.mktemp("scans")
    for name, seed, codes in (("ras_case", 3, "RAS"), ("lps_case", 4, "LPS")):
        img, _ = make_ct_phantom(SHAPE, SPACING, seed=seed, axcodes=codes)
        write_nifti(img.array, img.affine, folder / f"{name}.nii.gz")
    return folder


def test_layout_and_metadata(bundle: Path) -> None:
    for rel in (
        "configs/metadata.json",
        "configs/inference.json",
        "configs/plans.json",
        "configs/logging.conf",
        "models/model.pt",
        "models/model.ts",
        "docs/README.md",
        "LICENSE",
    ):
        assert (bundle / rel).is_file(), rel
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    verify_metadata(bundle / "configs/metadata.json")
    assert meta["version"] == "1.2.3" and "1.2.3" in meta["changelog"]
    for key in ("monai_version", "pytorch_version", "numpy_version", "task", "authors"):
        assert meta[key], key
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 6 and pred["channel_def"]["5"] == "lesion"
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["spacing_mm"] == list(SPACING) and image["format"] == "hounsfield"
    assert meta["performance"]["dice"] == {"liver": 0.5}
    assert "liver" in (bundle / "docs/README.md").read_text()
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no temp dir


def test_monai_verify_metadata_offline(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MONAI's own checker accepts the metadata against the shipped schema, without network."""
    import socket

    from monai.bundle import verify_metadata as monai_verify

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("verify_metadata tried to download its schema")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    schema = bundle / "configs/meta_schema.json"
    shipped = schema.read_bytes()
    # raises ValueError naming the field on a schema violation (see the next test)
    monai_verify(meta_file=str(bundle / "configs/metadata.json"), filepath=str(schema))
    assert schema.read_bytes() == shipped


def test_monai_verify_metadata_rejects_a_broken_file(bundle: Path, tmp_path: Path) -> None:
    from monai.bundle import verify_metadata as monai_verify

    meta = json.loads((bundle / "configs/metadata.json").read_text())
    del meta["network_data_format"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(Exception, match="network_data_format"):
        monai_verify(meta_file=str(bad), filepath=str(bundle / "configs/meta_schema.json"))


def test_metadata_missing_field_is_reported(bundle: Path, tmp_path: Path) -> None:
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    del meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(MedsegError, match="channel_def"):
        verify_metadata(bad)


def test_torchscript_matches_state_dict(bundle: Path) -> None:
    plans = tiny_plans()
    assert_torchscript_matches_state_dict(bundle, plans, 1, (32, 32, 16))


def test_monai_bundle_run_equals_medseg_predict(bundle: Path, scans: Path, tmp_path: Path) -> None:
    out_bundle, out_medseg = bundle_run_and_predict(bundle, scans, tmp_path)
    n_labelled = 0
    for name in ("ras_case", "lps_case"):
        a = nib.load(out_bundle / f"{name}.nii.gz")
        b = nib.load(out_medseg / f"{name}.nii.gz")
        src = nib.load(scans / f"{name}.nii.gz")
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_allclose(a.affine, src.affine, atol=1e-6)
        assert nib.aff2axcodes(a.affine) == nib.aff2axcodes(src.affine)
        n_labelled += int(np.count_nonzero(np.asarray(a.dataobj)))
    assert n_labelled > 0  # the comparison is not between two empty masks


def test_predict_never_evaluates_bundle_config(bundle: Path, scans: Path, tmp_path: Path) -> None:
    """Loading a bundle for `medseg predict` reads plans + weights only, never inference.json."""
    copy = tmp_path / "untrusted"
    import shutil

    shutil.copytree(bundle, copy)
    marker = tmp_path / "pwned"
    cfg = json.loads((copy / "configs/inference.json").read_text())
    cfg["bundle_root"] = f"$open({str(marker)!r}, 'w').write('x')"
    (copy / "configs/inference.json").write_text(json.dumps(cfg))
    args = ["predict", "--model", str(copy), "--input", str(scans / "ras_case.nii.gz")]
    assert main([*args, "--output", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert (tmp_path / "out" / "ras_case.nii.gz").is_file()
    assert not marker.exists()


def test_export_refuses_to_overwrite(run_dir: Path, bundle: Path) -> None:
    before = (bundle / "models/model.pt").read_bytes()
    with pytest.raises(MedsegError, match="--force"):
        export_bundle(run_dir, bundle)
    assert (bundle / "models/model.pt").read_bytes() == before
    assert main(["export-bundle", str(run_dir), str(bundle)]) == 1


def test_export_errors_name_the_run(tmp_path: Path, run_dir: Path) -> None:
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(MedsegError, match="trained fold"):
        export_bundle(tmp_path / "empty_run", tmp_path / "out")
    with pytest.raises(MedsegError, match=r"\[0\]"):
        export_bundle(run_dir, tmp_path / "out2", fold=3)
    assert not (tmp_path / "out2").exists()


def test_export_cli(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_bundle"
    assert main(["export-bundle", str(run_dir), str(out), "--name", "x", "--version", "2.0.0"]) == 0
    assert json.loads((out / "configs/metadata.json").read_text())["version"] == "2.0.0"
    assert main(["verify-bundle", str(out)]) == 0


def _fail_verify(path: Path) -> None:
    raise DiskFullError()


def _interrupt_verify(path: Path) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("failure", ["model.pt", "model.ts", "configs", "verify", "interrupt"])
def test_failed_forced_export_keeps_old_bundle(
    run_dir: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    before = folder_state(bundle.parent)
    if failure == "model.pt":
        monkeypatch.setattr(torch, "save", raise_after(torch.save))
    elif failure == "model.ts":
        monkeypatch.setattr(export_mod, "_torchscript", write_half_and_raise(2))
    elif failure == "configs":
        tear_text_writes(monkeypatch, skip=2)  # metadata.json, inference.json land
    else:
        verify = _fail_verify if failure == "verify" else _interrupt_verify
        monkeypatch.setattr(export_mod, "verify_metadata", verify)
    with pytest.raises(KeyboardInterrupt if failure == "interrupt" else DiskFullError):
        export_bundle(run_dir, bundle, name="other", force=True)
    assert folder_state(bundle.parent) == before  # old bundle byte-identical, no temp folder


def test_bundle_modes_follow_umask(bundle: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o777 & ~umask
    for rel in ("models/model.pt", "models/model.ts", "configs/meta_schema.json", "LICENSE"):
        assert stat.S_IMODE((bundle / rel).stat().st_mode) == 0o666 & ~umask, rel

"""Multi-channel prediction (CT + PET): ``CASE_0000``/``CASE_0001`` folders, a DICOM channel 0,
per-case channel problems, channel-count errors, TTA, and ``--manifest/--data-root`` lists."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from inference_helpers import tiny_plans, write_run
from multichannel_run import (
    ct_pet_case,
    fit_two_channel,
    two_channel_plans,
    write_two_channel_run,
)

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.inference.config import InferConfig, load_infer_config
from medseg.inference.predictor import Predictor
from medseg.io import Volume, affines_match, load_volume, write_dicom_series, write_nifti
from medseg.io.channels import load_channels, resample_to_grid
from medseg.networks.registry import build_network
from medseg.planning.plans import Plans

CPU = ["--device", "cpu"]
SEEDS = {"p1": (5, (0.0, -1.5, 0.0)), "p2": (6, (1.5, 0.5, -0.5))}


@pytest.fixture(scope="module")
def mc_net() -> tuple[Plans, torch.nn.Module]:
    torch.set_num_threads(1)
    plans = two_channel_plans()
    return plans, fit_two_channel(plans)


@pytest.fixture
def mc_run(tmp_path: Path, mc_net: tuple[Plans, torch.nn.Module]) -> Path:
    return write_two_channel_run(tmp_path / "run", *mc_net)


@pytest.fixture
def predictor(mc_net: tuple[Plans, torch.nn.Module]) -> Predictor:
    return Predictor([mc_net[1]], mc_net[0], config=InferConfig(device="cpu"))


def write_case(folder: Path, name: str, seed: int, centre: tuple[float, float, float]) -> Volume:
    """Write ``name_0000.nii.gz`` (CT), ``name_0001.nii.gz`` (PET, coarser grid); the labels."""
    ct, pet, labels = ct_pet_case(seed, centre_mm=centre)
    write_nifti(ct.array, ct.affine, folder / f"{name}_0000.nii.gz")
    write_nifti(pet.array, pet.affine, folder / f"{name}_0001.nii.gz")
    return labels


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.sum(a & b)) / max(1, int(a.sum() + b.sum()))


def to_ras(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ornt = nib.orientations.io_orientation(affine)
    return (
        nib.orientations.apply_orientation(arr, ornt),
        affine @ nib.orientations.inv_ornt_aff(ornt, arr.shape),
    )


def test_folder_of_channel_files(mc_run: Path, predictor: Predictor, tmp_path: Path) -> None:
    """Masks on channel 0's grid; a missing or extra channel fails that case only (exit 1)."""
    src = tmp_path / "in"
    labels = {n: write_case(src, n, *SEEDS[n]) for n in SEEDS}
    write_case(src, "p3", 7, (0.0, 0.0, 0.0))
    (src / "p3_0001.nii.gz").unlink()  # p3 lacks its PET
    write_case(src, "p4", 8, (0.0, 0.0, 0.0))
    write_nifti(np.ones((4, 4, 4)), np.eye(4), src / "p4_0002.nii.gz")  # p4 has a third channel
    stacked = load_channels([src / "p1_0000.nii.gz", src / "p1_0001.nii.gz"])
    write_nifti(np.moveaxis(stacked.array, 0, -1), stacked.affine, src / "p1_msd.nii.gz")  # 4D
    before, out = hashes(src), tmp_path / "out"
    assert (
        main(["predict", "--model", str(mc_run), "--input", str(src), "--output", str(out), *CPU])
        == 1
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 2}
    errors = {f["case"]: f["error"] for f in summary["failures"]}
    assert "case p3" in errors["p3"] and "missing channel p3_0001 (PET)" in errors["p3"]
    assert "case p4" in errors["p4"] and "p4_0002.nii.gz" in errors["p4"]
    for name in ("p1", "p2"):
        ct = load_volume(src / f"{name}_0000.nii.gz")
        mask = load_volume(out / f"{name}.nii.gz", allow_empty=True)
        assert np.array_equal(mask.affine, ct.affine) and mask.spatial_shape == ct.spatial_shape
        assert dice(mask.array > 0, labels[name].array > 0) > 0.8
        assert dice(mask.array == 2, labels[name].array == 2) > 0.6  # the core: PET only
        side = json.loads((out / f"{name}.json").read_text())
        assert side["inputs"] == [
            str(src / f"{name}_0000.nii.gz"),
            str(src / f"{name}_0001.nii.gz"),
        ]
        assert side["channels"] == ["CT", "PET"]
    p1 = load_volume(out / "p1.nii.gz").array
    assert np.array_equal(p1, predictor(stacked).array)  # the CLI runs the library's predictor
    assert np.array_equal(load_volume(out / "p1_msd.nii.gz").array, p1)  # 4D NIfTI == 2 files
    assert hashes(src) == before  # inputs untouched


def test_dicom_series_as_channel_0(mc_run: Path, tmp_path: Path) -> None:
    from medseg.data.synthetic import reorient

    ct, pet, _ = ct_pet_case(5, centre_mm=SEEDS["p1"][1])
    src = tmp_path / "in"
    write_dicom_series(reorient(ct.array, ct.affine, "LPS"), src / "q_0000", rescale_slope=0.01)
    write_nifti(pet.array, pet.affine, src / "q_0001.nii.gz")
    dicom = load_volume(src / "q_0000")
    arr, aff = to_ras(dicom.array, dicom.affine)  # the same CT as NIfTI, in RAS order
    write_nifti(arr, aff, src / "r_0000.nii.gz")
    write_nifti(pet.array, pet.affine, src / "r_0001.nii.gz")
    out = tmp_path / "out"
    assert (
        main(["predict", "--model", str(mc_run), "--input", str(src), "--output", str(out), *CPU])
        == 0
    )
    q = load_volume(out / "q.nii.gz")
    assert np.array_equal(q.affine, dicom.affine) and q.spatial_shape == dicom.spatial_shape
    assert q.axcodes == ("L", "P", "S")
    a, a_aff = to_ras(q.array, q.affine)
    r = load_volume(out / "r.nii.gz")
    assert affines_match(a_aff, r.affine, 1e-4)
    assert np.array_equal(a, r.array) and (a == 2).sum() > 20


def test_channel_count_mismatch_is_refused(predictor: Predictor) -> None:
    ct, _, _ = ct_pet_case(5)
    scan = Volume(ct.array, ct.affine, path=Path("ct_only.nii.gz"))
    with pytest.raises(MedsegError) as info:
        predictor.preprocess(scan)
    text = str(info.value)
    assert text.startswith("ct_only.nii.gz: expected (C, I, J, K) with C = 2")
    assert "the model takes 2 input channel(s) (CT, PET), found 1 channel(s)" in text
    three = Volume(np.stack([ct.array] * 3), ct.affine, path=Path("three.nii.gz"))
    with pytest.raises(MedsegError, match=r"three\.nii\.gz: .*found 3 channel\(s\)"):
        predictor(three)
    plans = tiny_plans()
    single = Predictor(
        [build_network(plans.network, 1, 3)], plans, config=InferConfig(device="cpu")
    )
    with pytest.raises(MedsegError, match=r"expected a 3D scan .*1 input channel\(s\) \(MR\)"):
        single(Volume(np.stack([ct.array] * 2), ct.affine))


def test_pet_channel_is_used_through_world_coordinates_and_tta(predictor: Predictor) -> None:
    ct, pet, labels = ct_pet_case(6, centre_mm=SEEDS["p2"][1])
    on_ct = resample_to_grid(pet, ct.affine, ct.spatial_shape)
    mask = predictor(ct.with_array(np.stack([ct.array, on_ct]))).array
    assert dice(mask == 2, labels.array == 2) > 0.6
    _, cold, _ = ct_pet_case(6, centre_mm=SEEDS["p2"][1], core_uptake=40.0)  # no hot core
    cold_on_ct = resample_to_grid(cold, ct.affine, ct.spatial_shape)
    without = predictor(ct.with_array(np.stack([ct.array, cold_on_ct]))).array
    assert (without == 2).sum() < 0.2 * (mask == 2).sum()  # the core is seen in PET only
    # the same scene's PET sampled on the CT grid itself: the same mask, almost everywhere
    _, fine, _ = ct_pet_case(
        6, centre_mm=SEEDS["p2"][1], pet_spacing=(1.0,) * 3, pet_shift=(0.0,) * 3
    )
    fine_on_ct = resample_to_grid(fine, ct.affine, ct.spatial_shape)
    same = predictor(ct.with_array(np.stack([ct.array, fine_on_ct]))).array
    assert (same == mask).mean() > 0.98
    tta = Predictor(predictor.models, predictor.plans, config=InferConfig(device="cpu", tta=True))
    mirrored = tta(ct.with_array(np.stack([ct.array, on_ct]))).array
    assert (mirrored == mask).mean() > 0.97 and dice(mirrored == 2, labels.array == 2) > 0.6


def write_manifest(root: Path) -> tuple[Path, str]:
    """Two test cases: files in sub-folders, and a CT DICOM folder holding two series."""
    ct, pet, _ = ct_pet_case(5, centre_mm=SEEDS["p1"][1])
    write_nifti(ct.array, ct.affine, root / "a" / "ct.nii.gz")
    write_nifti(pet.array, pet.affine, root / "a" / "pet.nii.gz")
    ct2, pet2, _ = ct_pet_case(6, centre_mm=SEEDS["p2"][1])
    uid = "1.2.826.0.1.3680043.8.498.77"
    write_dicom_series(ct2, root / "b" / "ct", series_uid=uid, rescale_slope=0.01)
    scout = Volume(ct2.array[:, :, :12], ct2.affine)  # another series in the same folder
    write_dicom_series(scout, root / "b" / "ct", file_names=[f"s{k}.dcm" for k in range(12)])
    write_nifti(pet2.array, pet2.affine, root / "b" / "pet.nii.gz")
    doc = {
        "name": "ct_pet",
        "modality": {"0": "CT", "1": "PET"},
        "labels": {"0": "background", "1": "organ", "2": "core"},
        "training": [],
        "test": [
            {"id": "first", "image": ["a/ct.nii.gz", "a/pet.nii.gz"]},
            {"id": "second", "image": ["b/ct", "b/pet.nii.gz"], "series": [uid, None]},
        ],
    }
    (root / "dataset.json").write_text(json.dumps(doc))
    return root / "dataset.json", uid


def test_manifest_test_list(mc_run: Path, predictor: Predictor, tmp_path: Path) -> None:
    root = tmp_path / "data"
    manifest, _ = write_manifest(root)
    before, out = hashes(root), tmp_path / "out"
    args = [
        "predict",
        "--model",
        str(mc_run),
        "--manifest",
        str(manifest),
        "--data-root",
        str(root),
    ]
    assert main([*args, "--output", str(out), *CPU]) == 0
    first = load_volume(out / "first.nii.gz")
    stacked = load_channels([root / "a" / "ct.nii.gz", root / "a" / "pet.nii.gz"])
    assert np.array_equal(first.array, predictor(stacked).array)
    second = load_volume(out / "second.nii.gz")
    assert second.spatial_shape == (24, 24, 20)  # the series the manifest chose, not the scout
    assert (second.array == 2).sum() > 20
    resolved = load_infer_config(out / "predict_config.yaml")
    assert (resolved.manifest, resolved.data_root) == (str(manifest), str(root))
    again = tmp_path / "again"  # the resolved config alone runs the same prediction
    cmd = ["predict", "--model", str(mc_run), "--config", str(out / "predict_config.yaml")]
    assert main([*cmd, "--output", str(again)]) == 0
    assert np.array_equal(load_volume(again / "second.nii.gz").array, second.array)
    assert hashes(root) == before


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--input", "IN"], "--input and --manifest are mutually exclusive"),
        (["--drop-manifest"], "expected --input (a scan or a folder of cases) or --manifest"),
        (["--drop-root"], "--manifest: expected data_root as well"),
        (["--one-channel"], "takes 1 input channel(s) (MR), expected the manifest's"),
    ],
)
def test_manifest_refusals_write_nothing(
    mc_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    says: str,
) -> None:
    root = tmp_path / "data"
    manifest, _ = write_manifest(root)
    model, source = mc_run, ["--manifest", str(manifest), "--data-root", str(root)]
    if extra == ["--drop-manifest"]:
        source = []
    elif extra == ["--drop-root"]:
        source = source[:2]
    elif extra == ["--one-channel"]:
        plans = tiny_plans()
        model = write_run(tmp_path / "mr_run", plans, [build_network(plans.network, 1, 3)])
    else:
        source += ["--input", str(root / "a")]
    out = tmp_path / "out"
    assert main(["predict", "--model", str(model), *source, "--output", str(out), *CPU]) == 1
    assert says in capsys.readouterr().err
    assert not out.exists()

"""``medseg predict --instances``: instance maps, per-case and folder lesion tables with the
intensity of every input channel (CT in HU, PET as SUV columns), label names or values,
refusals before any work, and the helpers behind them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from multichannel_run import ct_pet_case, fit_two_channel, two_channel_plans, write_two_channel_run

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.inference.case_outputs import channel_images
from medseg.inference.config import InferConfig, load_infer_config
from medseg.inference.output_request import (
    OutputRequest,
    case_complete,
    parse_instance_labels,
    resolve_instance_labels,
)
from medseg.io import Volume, write_nifti
from medseg.io.channels import load_channels

LABELS = {0: "background", 1: "organ", 2: "core"}


@pytest.fixture(scope="module")
def mc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    plans = two_channel_plans()
    return write_two_channel_run(tmp_path_factory.mktemp("run"), plans, fit_two_channel(plans))


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two CT + PET cases, ``pN_0000.nii.gz`` (CT) and ``pN_0001.nii.gz`` (PET, 2 mm grid)."""
    root = tmp_path_factory.mktemp("cases")
    for name, seed, centre in (("p1", 5, (0.0, -1.5, 0.0)), ("p2", 6, (1.5, 0.5, -0.5))):
        ct, pet, _ = ct_pet_case(seed, centre_mm=centre)
        write_nifti(ct.array, ct.affine, root / f"{name}_0000.nii.gz")
        write_nifti(pet.array, pet.affine, root / f"{name}_0001.nii.gz")
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_ct_pet_lesion_tables_measure_every_channel(
    mc_run: Path, cases: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["predict", "--model", str(mc_run), "--input", str(cases), "--output", str(out)]
    assert main([*args, "--device", "cpu", "--instances", "core,1"]) == 0
    total = 0
    for name in ("p1", "p2"):
        mask_img = nib.load(out / f"{name}.nii.gz")
        mask = np.asarray(mask_img.dataobj)
        inst_img = nib.load(out / f"{name}_instances.nii.gz")
        inst = np.asarray(inst_img.dataobj)
        assert inst_img.get_data_dtype() == np.uint16
        assert np.array_equal(inst_img.affine, mask_img.affine)
        assert np.array_equal(inst > 0, mask > 0)  # both labels split
        rows = read_csv(out / f"{name}_lesions.csv")
        ids = [int(i) for i in np.unique(inst) if i]
        assert [int(r["id"]) for r in rows] == ids and ids
        assert rows[0]["label_name"] == "core"  # ids follow the requested order: core first
        volume = load_channels(
            [cases / f"{name}_0000.nii.gz", cases / f"{name}_0001.nii.gz"], n_channels=2
        )  # (2, I, J, K): the PET resampled onto the CT grid, as the model saw it
        voxel_mm3 = abs(np.linalg.det(mask_img.affine[:3, :3]))
        for row in rows:
            voxels = inst == int(row["id"])
            ct, pet = volume.array[0][voxels], volume.array[1][voxels]
            assert float(row["CT_mean"]) == pytest.approx(ct.mean(), rel=1e-6)
            assert float(row["CT_max"]) == pytest.approx(ct.max(), rel=1e-6)
            assert float(row["PET_SUVmean"]) == pytest.approx(pet.mean(), rel=1e-6)
            assert float(row["PET_SUVmax"]) == pytest.approx(pet.max(), rel=1e-6)
            assert float(row["volume_ml"]) == pytest.approx(voxels.sum() * voxel_mm3 / 1e3)
            centre = mask_img.affine[:3, :3] @ np.argwhere(voxels).mean(0) + mask_img.affine[:3, 3]
            got = [float(row[f"centroid_{a}_mm"]) for a in "ras"]
            assert got == pytest.approx(centre.tolist(), abs=1e-6)
            assert float(row["long_axis_mm"]) >= float(row["short_axis_mm"]) > 0
        side = json.loads((out / f"{name}.json").read_text())
        assert side["lesions"]["labels"] == {"2": "core", "1": "organ"}
        assert side["lesions"]["channels"] == {"CT": "CT", "PET": "PET"}
        total += len(rows)
    folder = json.loads((out / "lesions.json").read_text())
    assert folder["n_cases"] == 2 and folder["n_lesions"] == total
    assert [r["case"] for r in read_csv(out / "lesions.csv")].count("p1") == folder["cases"]["p1"]


def test_unknown_instance_label_is_refused_before_any_work(
    mc_run: Path, cases: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    args = ["predict", "--model", str(mc_run), "--input", str(cases), "--output", str(out)]
    assert main([*args, "--device", "cpu", "--instances", "core,tumour"]) == 1
    err = capsys.readouterr().err
    assert "--instances" in err and "tumour" in err and "1=organ, 2=core" in err
    assert not out.exists() or not list(out.iterdir())  # not even predict_config.yaml


def test_resolve_instance_labels() -> None:
    assert resolve_instance_labels(parse_instance_labels("Core, 1"), LABELS) == (2, 1)
    assert resolve_instance_labels(("2",), LABELS) == (2,)  # a YAML string of digits
    for bad in ("0", "3", "background", "core,2"):
        with pytest.raises(MedsegError, match="--instances"):
            resolve_instance_labels(parse_instance_labels(bad), LABELS)


def test_instances_in_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "infer.yaml"
    path.write_text("instances: [core, 2]\nformats: [nifti, rtstruct]\nreference: refs\n")
    cfg = load_infer_config(path)
    assert cfg.instances == ("core", 2) and cfg.formats == ("nifti", "rtstruct")
    with pytest.raises(MedsegError, match=r"infer\.instances"):
        InferConfig(instances=("core", "core"))
    with pytest.raises(MedsegError, match=r"infer\.formats"):
        InferConfig(formats=())


def test_channel_images_name_and_kind_every_channel() -> None:
    arr = np.arange(3 * 2 * 2 * 2, dtype=np.float32).reshape(3, 2, 2, 2)
    images, kinds = channel_images(Volume(arr, np.eye(4)), ("CT", "FDG-PET", "CT"))
    assert list(images) == ["CT", "FDG-PET", "CT_2"]
    assert kinds == {"CT": "CT", "FDG-PET": "PET", "CT_2": "CT"}
    assert np.array_equal(images["CT_2"], arr[2])
    single, _ = channel_images(Volume(arr[0], np.eye(4)), ())
    assert list(single) == ["channel0"]


def test_case_complete_needs_every_requested_file(tmp_path: Path) -> None:
    request = OutputRequest(("nifti", "dicom-seg"), instance_labels=(2,))
    side = {"omitted": {}, "lesions": {"labels": {"2": "core"}}}
    names = ["c.nii.gz", "c_instances.nii.gz", "c_lesions.csv", "c_lesions.json"]
    for n in names:
        (tmp_path / n).write_text("x")
    (tmp_path / "c.json").write_text(json.dumps(side))
    assert not case_complete(tmp_path, "c", request)  # no c_seg.dcm
    side["omitted"] = {"dicom-seg": "not written: the mask is empty"}
    (tmp_path / "c.json").write_text(json.dumps(side))
    assert case_complete(tmp_path, "c", request)
    assert not case_complete(tmp_path, "c", OutputRequest(("nifti",), instance_labels=(1,)))
    (tmp_path / "c_lesions.csv").unlink()
    assert not case_complete(tmp_path, "c", request)

"""``medseg train --configuration 2d`` then ``medseg predict``: a slice-wise 2D network on the
3D pipeline, masks back on the source grid of a non-RAS anisotropic scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cohort_run import predict_first_case, train_ct_cohort
from typer.testing import CliRunner

from medseg.cli import app
from medseg.data.cohorts import write_ct_cohort
from medseg.errors import MedsegError
from medseg.inference.config import InferConfig
from medseg.inference.predictor import Predictor
from medseg.io import load_volume, write_nifti
from medseg.networks.slicewise import SliceWise2D
from medseg.planning.plans import load_plans


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-epoch 2d run on four CT phantoms; returns (run directory, manifest)."""
    root = tmp_path_factory.mktemp("ct2d")
    return train_ct_cohort(root, "2d", batch_size=8, extra=("--no-postprocess-decision",))


def test_2d_run_plans_slices_along_the_coarse_axis(run_2d: tuple[Path, Path]) -> None:
    run, _ = run_2d
    plans = load_plans(run / "plans.json")
    assert plans.configuration == "2d" and plans.slice_axis == 2  # S, 4 mm
    assert plans.patch_size[2] == 1 and plans.patch_size[:2] == (32, 32)
    assert plans.network.slice_axis == 2 and 2 not in plans.mirror_axes
    ckpt = torch.load(run / "fold_0" / "checkpoint_last.pt", weights_only=True)
    conv_weights = [v for k, v in ckpt["model"].items() if k.endswith("conv.weight")]
    assert conv_weights and all(w.dim() == 4 for w in conv_weights)  # 2D kernels only
    log = (run / "fold_0" / "log.csv").read_text().splitlines()
    assert np.isfinite(float(log[1].split(",")[1]))


def test_2d_predict_keeps_source_geometry(run_2d: tuple[Path, Path], tmp_path: Path) -> None:
    run, manifest = run_2d
    predict_first_case(run, manifest, tmp_path / "pred")


def test_slice_constant_scan_gives_slice_constant_prediction(
    run_2d: tuple[Path, Path], tmp_path: Path
) -> None:
    """Every slice of the scan the same: a slice-wise model predicts the same slice each time,
    through preprocessing, sliding windows (1 slice each) and resampling back onto the
    scan's own (non-RAS) grid: no slice sees its neighbours or the zero padding beyond the
    scan's first and last slice, as a 3D network's windows would."""
    run, manifest = run_2d
    first = json.loads(manifest.read_text())["training"][0]["image"]
    scan = load_volume((manifest.parent / first).resolve())
    axis = 1  # voxel axis of S in "PSR"
    middle = np.take(scan.array, scan.array.shape[axis] // 2, axis=axis)
    constant = np.repeat(np.expand_dims(middle, axis), scan.array.shape[axis], axis=axis)
    path = write_nifti(constant, scan.affine, tmp_path / "constant.nii.gz")
    predictor = Predictor.from_run(run, config=InferConfig(device="cpu", overlap=0.25))
    assert isinstance(predictor.models[0], SliceWise2D)
    predicted = predictor.predict(load_volume(path), with_probabilities=True)
    assert predicted.mask.array.shape == constant.shape
    np.testing.assert_allclose(predicted.mask.affine, scan.affine)
    probs = np.asarray(predicted.probabilities.array, dtype=np.float32)  # (K, *shape)
    reference = np.take(probs, [0], axis=axis + 1)
    np.testing.assert_allclose(probs, np.broadcast_to(reference, probs.shape), atol=2e-3)
    labels = predicted.mask.array
    assert (labels == np.take(labels, [0], axis=axis)).all()


def test_2d_augmentation_stays_in_plane(run_2d: tuple[Path, Path]) -> None:
    """Every augmentation on (probability 1): the crop keeps one slice, rotation is about the
    slice axis and scaling in-plane only, and every patch is one finite slice."""
    from monai.transforms import RandAffined

    from medseg.transforms.augmentation import (
        PadForSamplingd,
        sampling_shape,
        training_transforms,
    )
    from medseg.transforms.config import AugmentConfig

    plans = load_plans(run_2d[0] / "plans.json")
    axis = plans.slice_axis
    assert axis is not None
    probs = ("mirror", "rotate", "scale", "noise", "blur", "brightness", "contrast", "gamma")
    aug = AugmentConfig(**{f"{p}_prob": 1.0 for p in probs}, lowres_prob=1.0)
    assert sampling_shape(plans, aug)[axis] == 1
    xf = training_transforms(plans, aug)
    affine = next(t for t in xf.transforms if isinstance(t, RandAffined))
    grid = affine.rand_affine.rand_affine_grid
    assert [bool(r) for r in grid.rotate_range] == [a == axis for a in range(3)]
    assert tuple(grid.scale_range[axis]) == (0.0, 0.0)
    assert all(grid.scale_range[a] != (0.0, 0.0) for a in range(3) if a != axis)
    rng = np.random.default_rng(0)
    image = torch.as_tensor(rng.normal(size=(1, 40, 40, 6)), dtype=torch.float32)
    label = torch.zeros((1, 40, 40, 6), dtype=torch.uint8)
    label[0, 10:30, 12:28, :] = 1
    case = PadForSamplingd.from_plans(plans, aug)({"image": image, "label": label})
    xf.set_random_state(seed=0)
    for _ in range(4):
        patch = xf(case)[0]
        assert tuple(patch["image"].shape) == (1, *plans.patch_size)
        assert tuple(patch["label"].shape) == (1, *plans.patch_size)
        assert torch.isfinite(torch.as_tensor(patch["image"])).all()


def test_2d_bundle_predicts_as_the_run(run_2d: tuple[Path, Path], tmp_path: Path) -> None:
    """Bundle export of a 2d run: TorchScript by scripting, the same masks as the run."""
    from medseg.bundle.export import export_bundle
    from medseg.bundle.runtime import bundle_predictor

    run, manifest = run_2d
    bundle = export_bundle(run, tmp_path / "bundle", name="phantom_2d")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["torchscript"]["method"] == "script"
    first = json.loads(manifest.read_text())["training"][0]["image"]
    scan = load_volume((manifest.parent / first).resolve())
    cfg = InferConfig(device="cpu")
    expected = Predictor.from_run(run, config=cfg).predict(scan).mask.array
    got = bundle_predictor(str(bundle), device="cpu", postprocess="none").predict(scan).mask.array
    np.testing.assert_array_equal(got, expected)


def test_bad_configuration_flag_names_the_flag(tmp_path: Path) -> None:
    manifest = write_ct_cohort(tmp_path / "data", 2, seed=1, shape=(16, 16, 8))
    args = ["train", "--manifest", str(manifest), "--data-root", str(manifest.parent)]
    args += ["--out", str(tmp_path / "run"), "--configuration", "2.5d"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, MedsegError)  # medseg's main() prints it, exit 1
    message = str(result.exception)
    assert "--configuration" in message and "'2d'" in message and "2.5d" in message
    assert not (tmp_path / "run").exists()

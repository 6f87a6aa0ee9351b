"""Predictor: masks overlay their scans in any orientation, DICOM == NIfTI, ensembles, TTA."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from inference_helpers import fit_tiny, phantom, write_run

from medseg.data.synthetic import reorient
from medseg.errors import MedsegError
from medseg.inference.config import InferConfig, parse_folds
from medseg.inference.predictor import Predictor
from medseg.inference.sliding import resample_to_source, window_predictor
from medseg.io import Volume, affines_match, load_volume, write_nifti
from medseg.planning.plans import save_plans


def to_ras(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Array and affine of ``vol`` re-expressed in RAS voxel order (world positions kept)."""
    ornt = nib.orientations.io_orientation(vol.affine)
    arr = nib.orientations.apply_orientation(vol.array, ornt)
    aff = vol.affine @ nib.orientations.inv_ornt_aff(ornt, vol.array.shape)
    return arr, aff


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / max(1, a.sum() + b.sum())


@pytest.fixture
def predictor(run_dir: Path) -> Predictor:
    return Predictor.from_run(run_dir, device="cpu")


def test_prediction_is_meaningful_and_multiclass(predictor: Predictor) -> None:
    image, labels = phantom(seed=7)
    mask = predictor(image)
    assert mask.array.dtype == np.uint8
    assert set(np.unique(mask.array)) == {0, 1, 2}
    assert dice(mask.array == 1, labels.array == 1) > 0.8
    assert dice(mask.array == 2, labels.array == 2) > 0.6
    assert np.array_equal(mask.affine, image.affine)


@pytest.mark.parametrize("codes", ["LPS", "PSR", "ILA"])
def test_orientations_give_the_same_mask_in_world_space(predictor: Predictor, codes: str) -> None:
    image, _ = phantom(seed=3)
    reference = predictor(image)
    moved = reorient(image.array, image.affine, codes)
    mask = predictor(moved)
    assert mask.axcodes == tuple(codes)
    assert np.array_equal(mask.affine, moved.affine)  # overlays its scan exactly
    assert mask.array.shape == moved.array.shape
    arr, aff = to_ras(mask)
    assert affines_match(aff, reference.affine)
    assert np.array_equal(arr, reference.array)


def test_dicom_series_and_nifti_give_identical_masks(predictor: Predictor, tmp_path: Path) -> None:
    from medseg.io.dicom_write import write_dicom_series

    image, _ = phantom(seed=4)
    lps_order = reorient(image.array, image.affine, "LPS")
    write_dicom_series(lps_order, tmp_path / "dcm", modality="MR", rescale_slope=0.01)
    dicom = load_volume(tmp_path / "dcm")
    # The same scan converted to NIfTI, stored in RAS order (as converters often do).
    arr, aff = to_ras(dicom)
    write_nifti(arr, aff, tmp_path / "scan.nii.gz")
    nifti = load_volume(tmp_path / "scan.nii.gz")
    m_dicom, m_nifti = predictor(dicom), predictor(nifti)
    assert np.array_equal(m_dicom.affine, dicom.affine)
    assert np.array_equal(m_nifti.affine, nifti.affine)
    a, a_aff = to_ras(m_dicom)
    b, b_aff = to_ras(m_nifti)
    assert affines_match(a_aff, b_aff, 1e-4)
    assert np.array_equal(a, b)
    assert (a > 0).sum() > 50


def test_volume_smaller_than_a_patch(predictor: Predictor) -> None:
    image, labels = phantom(shape=(11, 9, 7), seed=2)
    mask = predictor(image)
    assert mask.array.shape == (11, 9, 7)
    assert np.array_equal(mask.affine, image.affine)
    assert dice(mask.array > 0, labels.array > 0) > 0.5


def test_very_anisotropic_spacing(predictor: Predictor) -> None:
    image, labels = phantom(shape=(28, 28, 5), spacing=(0.9, 0.9, 5.0), seed=8)
    mask = predictor(image)
    assert mask.array.shape == (28, 28, 5)
    assert np.array_equal(mask.affine, image.affine)
    assert dice(mask.array > 0, labels.array > 0) > 0.7


def test_oblique_scan_overlays(predictor: Predictor) -> None:
    image, labels = phantom(seed=9)
    rot = np.eye(4)
    c, s = np.cos(0.3), np.sin(0.3)
    rot[:2, :2] = [[c, -s], [s, c]]
    oblique = Volume(image.array, rot @ image.affine)
    mask = predictor(oblique)
    assert np.array_equal(mask.affine, oblique.affine)
    assert dice(mask.array > 0, labels.array > 0) > 0.7


def test_fold_ensemble_averages_probabilities(tiny_net, tmp_path: Path) -> None:
    plans, net0 = tiny_net
    net1 = fit_tiny(plans, steps=20, seed=1)
    run = write_run(tmp_path / "run2", plans, [net0, net1])
    image, _ = phantom(seed=5)
    both = Predictor.from_run(run, device="cpu")
    assert len(both.models) == 2 and both.identity["folds"] == [0, 1]
    singles = [Predictor.from_run(run, folds=(k,), device="cpu") for k in (0, 1)]
    pre = both.preprocess(image)
    p = both.network_probabilities(pre)
    mean = sum(s.network_probabilities(pre) for s in singles) / 2
    assert torch.allclose(p, mean, atol=1e-5)
    with pytest.raises(MedsegError, match="fold"):
        Predictor.from_run(run, folds=(3,), device="cpu")


def test_mirror_tta_averages_the_eight_flips() -> None:
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    x = torch.randn(1, 1, 6, 7, 8)
    out = window_predictor([net], tta=True, device=torch.device("cpu"), out_dtype=torch.float32)(x)
    flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    with torch.no_grad():
        expected = (
            sum(
                torch.softmax(net(x.flip(f) if f else x), 1).flip(f)
                if f
                else torch.softmax(net(x), 1)
                for f in flips
            )
            / 8
        )
    assert torch.allclose(out, expected, atol=1e-6)
    plain = window_predictor([net], tta=False, device=torch.device("cpu"), out_dtype=torch.float32)
    assert not torch.allclose(plain(x), expected, atol=1e-4)


def test_float16_accumulation_agrees_with_float32(run_dir: Path) -> None:
    image, _ = phantom(shape=(40, 36, 30), seed=6)
    p32 = Predictor.from_run(run_dir, device="cpu", config=InferConfig(accumulation="float32"))
    p16 = Predictor.from_run(run_dir, device="cpu", config=InferConfig(accumulation="float16"))
    pre = p32.preprocess(image)
    a, b = p32.network_probabilities(pre), p16.network_probabilities(pre)
    assert b.dtype == torch.float16
    assert float((a - b.float()).abs().max()) < 5e-3
    agree = (p32(image).array == p16(image).array).mean()
    assert agree > 0.999


def test_resample_back_on_the_same_grid_is_the_argmax() -> None:
    rng = np.random.default_rng(0)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(4, 9, 8, 7))).float(), 0)
    aff = np.diag([0.7, 1.1, 2.0, 1.0])
    aff[:3, 3] = [5, -3, 2]
    labels, full = resample_to_source(
        probs, aff, aff, (9, 8, 7), slab_mvox=1e-4, return_probabilities=True
    )
    assert np.array_equal(labels, probs.argmax(0).numpy())
    assert full is not None and np.allclose(full, probs.numpy(), atol=1e-3)
    # a source grid reaching beyond the probabilities' field of view: background there
    shifted = aff.copy()
    shifted[0, 3] += 0.7 * 5
    labels2, _ = resample_to_source(probs, aff, shifted, (9, 8, 7))
    assert np.array_equal(labels2[:4], probs.argmax(0).numpy()[5:])
    assert not labels2[5:].any()


def test_bundle_layout_predicts_like_the_run(run_dir: Path, tiny_net, tmp_path: Path) -> None:
    plans, net = tiny_net
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "metadata.json").write_text(
        json.dumps({"name": "tiny", "version": "0.1"})
    )
    (bundle / "configs" / "inference.json").write_text("{}")
    save_plans(plans, bundle / "configs" / "plans.json")
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    image, _ = phantom(seed=11)
    from_bundle = Predictor.from_path(bundle, device="cpu")
    assert from_bundle.identity["kind"] == "bundle" and from_bundle.identity["name"] == "tiny"
    assert np.array_equal(
        from_bundle(image).array, Predictor.from_path(run_dir, device="cpu")(image).array
    )
    with pytest.raises(MedsegError, match="run directory"):
        Predictor.from_path(tmp_path, device="cpu")


def test_postprocessing_from_the_run_and_crf_override(run_dir: Path) -> None:
    from medseg.config import to_dict
    from medseg.postprocessing import (
        CRFConfig,
        LabelPostprocessing,
        PostprocessConfig,
        save_postprocessing,
    )

    image, _ = phantom(seed=12)
    arr = image.array.copy()
    arr[1:3, 1:3, 1:3] = 300.0  # a bright speck far from the organ: a spurious component
    noisy = Volume(arr, image.affine)
    raw = Predictor.from_run(run_dir, device="cpu")(noisy)
    save_postprocessing(
        run_dir / "postprocessing.json",
        PostprocessConfig(
            per_label={
                1: LabelPostprocessing(largest_component=True),
                2: LabelPostprocessing(largest_component=True),
            }
        ),
    )
    auto = Predictor.from_run(run_dir, device="cpu")
    assert auto.postprocessing is not None
    cleaned = auto(noisy)
    from scipy import ndimage

    assert ndimage.label(raw.array == 2)[1] > 1  # the speck is predicted as "core"
    assert ndimage.label(cleaned.array == 2)[1] == 1
    none = Predictor.from_run(run_dir, device="cpu", config=InferConfig(postprocess="none"))
    assert none.postprocessing is None
    crf = Predictor.from_run(run_dir, device="cpu", config=InferConfig(crf=True))
    # --crf adds the default CRF to the decided morphology, keeping the decided steps
    assert crf.postprocessing.crf == CRFConfig()
    assert crf.postprocessing.per_label == auto.postprocessing.per_label
    pred = crf.predict(noisy)
    assert pred.postprocessing["crf"] == to_dict(CRFConfig())
    assert pred.mask.array.shape == noisy.spatial_shape
    np.testing.assert_array_equal(pred.mask.affine, noisy.affine)
    # --no-crf keeps the decided morphology only: the same mask as the decided post-processing
    no_crf = Predictor.from_run(run_dir, device="cpu", config=InferConfig(crf=False))
    assert no_crf.postprocessing.crf is None
    assert np.array_equal(no_crf(noisy).array, cleaned.array)


def test_parse_folds_and_config_checks() -> None:
    assert parse_folds("all") == ()
    assert parse_folds("0,2") == (0, 2)
    with pytest.raises(MedsegError, match="--folds"):
        parse_folds("zero")
    with pytest.raises(MedsegError, match="overlap"):
        InferConfig(overlap=1.0)  # validated on construction


def test_resample_with_interpolation_matches_scipy() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(1)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(3, 6, 7, 5))).float() * 3, 0)
    grid_aff = np.diag([2.0, 2.0, 3.0, 1.0])
    src_aff = np.diag([-0.9, 1.0, 1.3, 1.0])  # flipped first axis, finer spacing
    src_aff[:3, 3] = [9.5, 0.2, 0.4]
    shape = (14, 12, 13)  # reaches beyond the grid along i and k
    labels, full = resample_to_source(
        probs, grid_aff, src_aff, shape, slab_mvox=2e-4, return_probabilities=True
    )
    idx = np.indices(shape).reshape(3, -1).astype(float)
    coords = (np.linalg.inv(grid_aff) @ src_aff)[:3] @ np.vstack([idx, np.ones(idx.shape[1])])
    ref = np.stack(
        [ndimage.map_coordinates(p, coords, order=1, mode="nearest") for p in probs.numpy()]
    ).reshape(3, *shape)
    inside = np.all((coords > -0.5) & (coords < np.array([6, 7, 5])[:, None] - 0.5), 0)
    inside = inside.reshape(shape)
    assert np.allclose(full[:, inside], ref[:, inside], atol=2e-3)
    assert (labels[inside] == ref.argmax(0)[inside]).mean() > 0.995
    assert not labels[~inside].any() and (~inside).any()


def test_tta_mirrors_only_the_planned_axes() -> None:
    from medseg.inference.sliding import mirror_axes

    assert mirror_axes(False, (0, 1, 2)) == [()]
    assert len(mirror_axes(True, (0, 1, 2))) == 8
    assert mirror_axes(True, (1,)) == [(), (3,)]
    assert mirror_axes(True, ()) == [()]

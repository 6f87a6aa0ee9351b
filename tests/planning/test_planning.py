"""Fingerprint values and nnU-Net-like planning (spacing, patch, strides)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from atomic_helpers import DiskFullError, folder_state, tear_text_writes

from medseg.data.manifest import Case
from medseg.io import write_nifti
from medseg.networks import build_network
from medseg.planning.config import PlansConfig
from medseg.planning.fingerprint import Fingerprint, compute_fingerprint
from medseg.planning.planner import VNET_CHANNELS, mirror_axes, plan, target_spacing
from medseg.planning.plans import load_plans, save_plans


def _fingerprint(spacings: list[list[float]], shapes: list[list[int]], modality: str = "MR"):
    return Fingerprint(
        modality=modality,
        labels={"0": "background", "1": "organ"},
        case_ids=[f"c{i}" for i in range(len(shapes))],
        spacings=spacings,
        shapes=shapes,
        intensity={
            "mean": 40.0,
            "std": 20.0,
            "p00_5": -100.0,
            "p99_5": 200.0,
            "min": -1000.0,
            "max": 1000.0,
        },
        class_fractions={"0": 0.9, "1": 0.1},
    )


def test_fingerprint_values_on_a_phantom(tmp_path: Path) -> None:
    # voxel axes (i, j, k) point to (S, R, A) with spacings (2, 0.5, 1) mm
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = 2.0, 0.5, 1.0, 1.0
    image = np.zeros((10, 20, 16), np.float32)
    image[2:8, 4:16, 3:13] = 5.0  # non-zero box: 6 x 12 x 10 voxels (i, j, k)
    label = np.zeros(image.shape, np.uint8)
    label[3:5, 5:10, 4:8] = 1
    image[label == 1] = 100.0
    write_nifti(image, affine, tmp_path / "img.nii.gz")
    write_nifti(label, affine, tmp_path / "lab.nii.gz")
    case = Case("c0", tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz")
    fp = compute_fingerprint([case], {0: "background", 1: "organ"}, "MR")
    assert fp.spacings == [[0.5, 1.0, 2.0]]  # R, A, S
    assert fp.shapes == [[12, 10, 6]]
    assert fp.intensity["mean"] == pytest.approx(100.0)
    assert fp.intensity["std"] == pytest.approx(0.0)
    assert fp.class_fractions["1"] == pytest.approx(40 / image.size)
    # label voxels i 3..4, j 5..9, k 4..7 -> centre (7, 5.5, 3.5) mm along (R, A, S)
    assert fp.label_centroids == [{"1": [3.5, 5.5, 7.0]}]


def test_mirroring_is_dropped_along_axes_with_a_fixed_label_layout() -> None:
    rng = np.random.default_rng(1)
    centroids = []
    for _ in range(20):
        side = rng.choice([-1.0, 1.0])  # label 1 left or right of label 2 at random
        a = rng.normal(50.0, 3.0, 3)
        b = a + np.array([side * 5.0, -15.0, rng.normal(0.0, 2.0)])  # 2 always behind 1
        centroids.append({"1": a.tolist(), "2": b.tolist()})
    fp = _fingerprint([[1.0, 1.0, 1.0]] * 20, [[40, 40, 40]] * 20)
    fp = Fingerprint(**{**fp.__dict__, "label_centroids": centroids})
    assert mirror_axes(fp) == (0, 2)
    assert plan(fp, "cpu").mirror_axes == (0, 2)
    assert mirror_axes(_fingerprint([[1.0] * 3] * 2, [[9] * 3] * 2)) == (0, 1, 2)


def test_isotropic_plan_covers_small_cases() -> None:
    fp = _fingerprint([[1.0, 1.0, 1.0]] * 5, [[35, 50, 36]] * 5)
    plans = plan(fp, "cpu")
    assert plans.target_spacing == (1.0, 1.0, 1.0)
    assert plans.patch_size == (40, 56, 40)  # median shape rounded up to the stride 8
    assert plans.network.name == "unet" and not plans.network.deep_supervision
    assert plans.network.full_res_level and plans.network.channels[0] == 8
    assert not plan(fp, "cpu", PlansConfig(unet_full_res=False)).network.full_res_level
    assert plans.batch_size >= 2
    assert plans.normalization == "zscore_nonzero"
    gpu = plan(fp, "cuda")
    assert gpu.network.name == "dynunet" and gpu.network.deep_supervision


def test_full_res_level_only_when_the_step_fits_the_budget() -> None:
    # the CT phantom task: patch 64x64x48 at batch 2 is 393 k voxels, over the 300 k budget
    ct = _fingerprint([[1.5, 1.5, 3.0]] * 5, [[64, 64, 48]] * 5, modality="CT")
    plans = plan(ct, "cpu")
    assert plans.patch_size == (64, 64, 48) and plans.batch_size == 2
    assert not plans.network.full_res_level
    assert plan(ct, "cpu", PlansConfig(unet_full_res=True)).network.full_res_level
    assert plan(ct, "cpu", PlansConfig(step_voxels=400_000)).network.full_res_level
    small = _fingerprint([[1.0] * 3] * 5, [[35, 50, 36]] * 5)  # 40x56x40 x 3 = 269 k voxels
    assert plan(small, "cpu").network.full_res_level
    assert not plan(small, "cpu", PlansConfig(step_voxels=150_000)).network.full_res_level


def test_vnet_plans_record_monais_fixed_widths_and_warn_about_a_channels_override(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fp = _fingerprint([[1.0] * 3] * 5, [[35, 50, 36]] * 5)
    assert plan(fp, "cpu", PlansConfig(model="vnet")).network.channels == VNET_CHANNELS
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="medseg"):
        plans = plan(fp, "cpu", PlansConfig(model="vnet", channels=(4, 8, 16)))
    assert plans.network.channels == VNET_CHANNELS == (16, 32, 64, 128, 256)
    assert "plans.channels [4, 8, 16] ignored for vnet" in caplog.text
    # other networks follow the override
    assert plan(fp, "cpu", PlansConfig(channels=(4, 8, 16))).network.channels[:3] == (4, 8, 16)


def test_unet_head_channels_follow_the_config_for_unet_only() -> None:
    fp = _fingerprint([[1.0] * 3] * 5, [[35, 50, 36]] * 5)
    assert plan(fp, "cpu", PlansConfig(unet_head_channels=12)).network.head_channels == 12
    assert plan(fp, "cpu", PlansConfig(unet_head_channels=0)).network.head_channels == 0
    other = PlansConfig(model="segresnet", unet_head_channels=12)
    assert plan(fp, "cpu", other).network.head_channels == 0


def test_dropout_reaches_the_planned_network_and_is_active_only_in_training() -> None:
    fp = _fingerprint([[1.0] * 3] * 5, [[35, 50, 36]] * 5)
    assert plan(fp, "cpu").network.dropout == 0.0
    spec = plan(fp, "cpu", PlansConfig(dropout=0.2)).network
    assert spec.dropout == 0.2
    assert plan(fp, "cpu", PlansConfig(model="vnet", dropout=0.2)).network.dropout == 0.2
    net = build_network(spec, 1, 3)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.2 for m in net.modules())
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        net.train()
        assert not torch.equal(net(x), net(x))


def test_anisotropic_plan_keeps_coarse_axis() -> None:
    rng = np.random.default_rng(0)
    spacings = [[0.8, 0.8, float(s)] for s in rng.choice([4.0, 5.0, 5.0, 6.0], 10)]
    fp = _fingerprint(spacings, [[400, 400, 30]] * 10, modality="CT")
    spacing = target_spacing(fp)
    # nnU-Net rule: coarse axis gets the 10th percentile of its spacings, not the median
    assert spacing[:2] == (0.8, 0.8)
    assert spacing[2] == pytest.approx(np.percentile([s[2] for s in spacings], 10))
    assert spacing[2] < np.median([s[2] for s in spacings])
    plans = plan(fp, "cpu", PlansConfig(model="dynunet"))
    strides = np.asarray(plans.network.strides)
    assert strides[0].tolist() == [2, 2, 1], "the 5 mm axis must not be pooled first"
    assert strides[:, 2].sum() < strides[:, 0].sum()
    assert plans.network.kernel_sizes[0] == (3, 3, 1)
    assert plans.patch_size[0] > plans.patch_size[2]
    assert plans.normalization == "ct" and plans.intensity_clip == (-100.0, 200.0)
    for size, total in zip(plans.patch_size, np.prod(strides, axis=0), strict=True):
        assert size % total == 0


def test_isotropic_data_is_not_treated_as_anisotropic() -> None:
    fp = _fingerprint([[1.0, 1.0, 2.5]] * 4, [[100, 100, 60]] * 4)
    assert target_spacing(fp) == (1.0, 1.0, 2.5)


def test_step_budget_shrinks_patch() -> None:
    fp = _fingerprint([[1.0, 1.0, 1.0]] * 3, [[300, 300, 200]] * 3)
    plans = plan(fp, "cpu", PlansConfig(step_voxels=400_000, patch_voxels=200_000))
    assert np.prod(plans.patch_size) <= 1.3 * 200_000
    assert plans.batch_size == 2
    assert plan(fp, "cpu", PlansConfig(step_voxels=4_000_000, patch_voxels=200_000)).batch_size > 10


def test_plans_written_before_full_res_level_and_head_keep_their_layout(tmp_path: Path) -> None:
    """Run directories and bundles from before the field must rebuild the same network."""
    plans = plan(_fingerprint([[1.0, 1.0, 1.0]] * 5, [[35, 50, 36]] * 5), "cpu")
    path = save_plans(plans, tmp_path / "plans.json")
    data = json.loads(path.read_text())
    del data["network"]["full_res_level"]
    del data["network"]["head_channels"]
    path.write_text(json.dumps(data))
    old = load_plans(path)
    assert not old.network.full_res_level
    assert old.network.head_channels == 0  # MONAI's own top block, as trained
    assert old.network.channels == plans.network.channels


@pytest.mark.parametrize("existing", [True, False], ids=["old-file", "no-file"])
def test_failed_plans_write_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    plans = plan(_fingerprint([[1.0, 1.0, 1.0]] * 5, [[35, 50, 36]] * 5), "cpu")
    path = tmp_path / "plans.json"
    if existing:
        save_plans(plans, path)
    before = folder_state(tmp_path)
    tear_text_writes(monkeypatch)
    with pytest.raises(DiskFullError):
        save_plans(plans, path)
    assert folder_state(tmp_path) == before

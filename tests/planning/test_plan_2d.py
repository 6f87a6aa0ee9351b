"""The 2d configuration's plans: slice axis, in-plane patch, batch of slices, 2D network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fingerprint_helpers import ct_fingerprint

from medseg.config import from_dict, to_dict
from medseg.errors import MedsegError
from medseg.planning.config import PlansConfig
from medseg.planning.planner import plan
from medseg.planning.planner_2d import MAX_BATCH_2D, MIN_BATCH_2D, slice_axis
from medseg.planning.plans import Plans, load_plans, plans_from_dict, save_plans


def test_slice_axis_is_the_coarsest_then_the_shortest() -> None:
    assert slice_axis(np.array([0.8, 0.8, 5.0]), np.array([300, 300, 40])) == 2
    assert slice_axis(np.array([4.0, 1.0, 1.0]), np.array([30, 200, 200])) == 0
    # isotropic: ties go to the axis with the fewest voxels
    assert slice_axis(np.array([1.0, 1.0, 1.0]), np.array([60, 40, 80])) == 1


def test_ct_cohort_plans_in_plane_patch_and_batch_of_slices() -> None:
    fp = ct_fingerprint([0.8, 0.8, 5.0], [256, 224, 40])
    three_d = plan(fp, "cpu")
    two_d = plan(fp, "cpu", PlansConfig(configuration="2d"))
    assert three_d.configuration == "3d" and three_d.slice_axis is None
    assert two_d.configuration == "2d" and two_d.slice_axis == 2
    assert two_d.network.slice_axis == 2 and two_d.network.name == "unet"
    # the 3D pipeline's choices are kept: spacing, normalisation, median shape
    assert two_d.target_spacing == three_d.target_spacing
    assert two_d.normalization == three_d.normalization
    assert two_d.median_shape == three_d.median_shape
    px, py, pz = two_d.patch_size
    assert pz == 1
    stride = np.prod(np.asarray(two_d.network.strides), axis=0)
    assert stride[2] == 1 and px % stride[0] == 0 and py % stride[1] == 0
    # the median in-plane shape, fitted to the 2D budget: 256 x 224 fits (57 k pixels)
    assert (px, py) == (256, 224)
    assert MIN_BATCH_2D <= two_d.batch_size <= MAX_BATCH_2D
    assert two_d.batch_size > three_d.batch_size
    assert 2 not in two_d.mirror_axes and set(two_d.mirror_axes) <= {0, 1}


def test_large_slices_shrink_into_the_budget_and_auto_is_3d() -> None:
    fp = ct_fingerprint([0.7, 0.7, 3.0], [512, 512, 100])
    plans = plan(fp, "cpu", PlansConfig(configuration="2d"))
    assert plans.patch_size[2] == 1
    assert plans.patch_size[0] * plans.patch_size[1] <= 1.1 * 900_000 / MIN_BATCH_2D
    assert plans.batch_size == MIN_BATCH_2D
    auto = plan(fp, "cpu", PlansConfig(configuration="auto"))
    assert auto.configuration == "3d" and min(auto.patch_size) > 1
    cuda = plan(fp, "cuda", PlansConfig(configuration="2d"))
    assert cuda.network.name == "dynunet" and cuda.network.slice_axis == 2
    assert cuda.patch_size == (512, 512, 1)  # a whole CT slice, as nnU-Net's 2d
    assert all(len(k) == 3 for k in cuda.network.kernel_sizes)
    # in-plane pooling down to 16 x 16: the 3 mm slices do not stop it (the 3D rule would
    # stop pooling once the in-plane spacing passes twice the slice thickness)
    assert len(cuda.network.strides) == 5


def test_2d_refuses_a_3d_only_network() -> None:
    fp = ct_fingerprint([1.0, 1.0, 1.0], [40, 40, 40])
    with pytest.raises(MedsegError, match=r"configuration '2d'.*swinunetr"):
        plan(fp, "cpu", PlansConfig(configuration="2d", model="swinunetr"))


def test_config_rejects_an_unknown_configuration() -> None:
    with pytest.raises(MedsegError, match="configuration"):
        from_dict(PlansConfig, {"configuration": "2.5d"}, "plans")


def test_2d_plans_round_trip_and_old_plans_load_as_3d(tmp_path: Path) -> None:
    fp = ct_fingerprint([0.8, 0.8, 5.0], [128, 96, 30])
    plans = plan(fp, "cpu", PlansConfig(configuration="2d"))
    assert load_plans(save_plans(plans, tmp_path / "plans.json")) == plans
    old = to_dict(plan(fp, "cpu"))
    for key in ("configuration", "slice_axis"):
        old.pop(key)
    old["network"].pop("slice_axis")
    loaded = plans_from_dict(old)
    assert loaded.configuration == "3d" and loaded.network.slice_axis is None


def test_inconsistent_slice_axis_is_refused() -> None:
    fp = ct_fingerprint([0.8, 0.8, 5.0], [128, 96, 30])
    data = to_dict(plan(fp, "cpu", PlansConfig(configuration="2d")))
    data["network"]["slice_axis"] = 0
    with pytest.raises(MedsegError, match="slice_axis"):
        plans_from_dict(data)
    flat = to_dict(plan(fp, "cpu"))
    flat["patch_size"] = [32, 32, 1]  # 1 voxel is only for the slice axis of a 2d plan
    with pytest.raises(MedsegError, match="patch_size"):
        plans_from_dict(flat)
    assert isinstance(
        plans_from_dict(data | {"network": {**data["network"], "slice_axis": 2}}), Plans
    )


def test_a_few_slices_per_patch_are_kept_and_in_plane_is_rounded() -> None:
    fp = ct_fingerprint([0.8, 0.8, 5.0], [128, 96, 30])
    plans = plan(fp, "cpu", PlansConfig(configuration="2d", patch_size=(60, 64, 3)))
    stride = np.prod(np.asarray(plans.network.strides), axis=0)
    assert plans.patch_size[2] == 3  # three slices, seen as a batch of independent slices
    assert plans.patch_size[0] >= 60 and plans.patch_size[0] % stride[0] == 0
    assert plans.patch_size[1] == 64

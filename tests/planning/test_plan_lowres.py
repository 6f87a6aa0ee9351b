"""The 3d_lowres configuration: a coarser spacing so a patch covers >= 25 % of the median."""

from __future__ import annotations

import numpy as np
from fingerprint_helpers import ct_fingerprint

from medseg.planning.config import PlansConfig
from medseg.planning.configurations import (
    LOWRES_COVERAGE,
    patch_coverage,
    sensible_configurations,
)
from medseg.planning.planner import plan


def test_large_ct_gets_a_coarser_plan_whose_patch_covers_a_quarter() -> None:
    fp = ct_fingerprint([0.8, 0.8, 2.5], [512, 512, 160])
    full = plan(fp, "cpu")
    assert patch_coverage(full) < LOWRES_COVERAGE
    assert "3d_lowres" in sensible_configurations(full)
    low = plan(fp, "cpu", PlansConfig(configuration="3d_lowres"))
    assert low.configuration == "3d_lowres" and low.slice_axis is None
    assert patch_coverage(low) >= LOWRES_COVERAGE
    ratio = np.asarray(low.target_spacing) / np.asarray(full.target_spacing)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)  # every axis scaled alike
    assert ratio[0] > 1.0
    # the rest of the pipeline is the 3D one: same normalisation, labels, channels
    assert low.normalization == full.normalization and low.labels == full.labels


def test_small_images_plan_lowres_as_full_resolution() -> None:
    fp = ct_fingerprint([1.0, 1.0, 1.0], [36, 50, 35])
    full = plan(fp, "cpu")
    assert "3d_lowres" not in sensible_configurations(full)
    low = plan(fp, "cpu", PlansConfig(configuration="3d_lowres"))
    assert low.target_spacing == full.target_spacing
    assert set(sensible_configurations(full)) == {"2d", "3d"}

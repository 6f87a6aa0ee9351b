"""Per-label morphology: component filtering in mm^3, hole filling, closing, config round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from medseg.config import from_dict, to_dict
from medseg.errors import MedsegError
from medseg.postprocessing import (
    CRFConfig,
    LabelPostprocessing,
    PostprocessConfig,
    apply_postprocessing,
    ellipsoid_structure,
    postprocess_config_from_dict,
)


def _config(**steps: LabelPostprocessing) -> PostprocessConfig:
    return PostprocessConfig(per_label={int(k[1:]): v for k, v in steps.items()})


def _two_blobs() -> np.ndarray:
    labels = np.zeros((20, 12, 10), dtype=np.uint8)
    labels[1:5, 1:4, 1:2] = 1  # 12 voxels
    labels[10:13, 6:9, 5:6] = 1  # 9 voxels
    return labels


def test_largest_component_keeps_biggest_blob_on_anisotropic_grid() -> None:
    labels = _two_blobs()
    labels[15:19, 1:3, 7:9] = 2  # another label is left alone
    out = apply_postprocessing(
        labels, (0.7, 1.3, 4.0), _config(l1=LabelPostprocessing(largest_component=True))
    )
    assert (out[1:5, 1:4, 1:2] == 1).all()
    assert (out[10:13, 6:9, 5:6] == 0).all()
    assert (out == 2).sum() == 16


@pytest.mark.parametrize(
    ("connectivity", "expected"),
    [(1, 1), (3, 2)],  # diagonal neighbours join the blobs only with 26-connectivity
)
def test_connectivity_decides_what_touches(connectivity: int, expected: int) -> None:
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels
    labels[3, 3, 3] = 1  # touches the cube corner only diagonally
    step = LabelPostprocessing(largest_component=True, connectivity=connectivity)
    out = apply_postprocessing(labels, (1.0, 1.0, 1.0), _config(l1=step))
    assert (out == 1).sum() == 8 + (expected - 1)


@pytest.mark.parametrize(
    ("spacing", "threshold", "kept"),
    [
        ((1.0, 1.0, 1.0), 10.0, (True, False)),  # 12 and 9 mm^3
        ((2.0, 1.0, 1.0), 10.0, (True, True)),  # 24 and 18 mm^3
        ((0.5, 0.5, 1.0), 2.5, (True, False)),  # 3 and 2.25 mm^3
        ((0.5, 0.5, 1.0), 3.5, (False, False)),
    ],
)
def test_small_object_removal_uses_mm3(
    spacing: tuple[float, float, float], threshold: float, kept: tuple[bool, bool]
) -> None:
    labels = _two_blobs()
    out = apply_postprocessing(
        labels, spacing, _config(l1=LabelPostprocessing(min_size_mm3=threshold))
    )
    assert (out[1:5, 1:4, 1:2] == 1).all() == kept[0]
    assert (out[10:13, 6:9, 5:6] == 1).all() == kept[1]
    assert set(np.unique(out)) <= {0, 1}


def test_fill_holes_only_claims_background() -> None:
    labels = np.zeros((12, 12, 12), dtype=np.int16)
    labels[2:10, 2:10, 2:10] = 1
    labels[4:8, 4:8, 4:8] = 0  # cavity
    labels[5:7, 5:7, 5:7] = 2  # another structure inside the cavity
    out = apply_postprocessing(
        labels, (1.0, 1.0, 2.0), _config(l1=LabelPostprocessing(fill_holes=True))
    )
    assert out.dtype == labels.dtype
    assert (out[5:7, 5:7, 5:7] == 2).all()
    assert (out[4:8, 4:8, 4:8] != 0).all()
    assert (out == 1).sum() == 8**3 - 8


def test_closing_radius_is_in_mm() -> None:
    labels = np.zeros((16, 16, 16), dtype=np.uint8)
    labels[2:6, 4:10, 4:10] = 1
    labels[7:11, 4:10, 4:10] = 1  # a one-voxel gap along axis 0 (1 mm)
    labels[12:14, 6:8, 6:8] = 2
    step = LabelPostprocessing(closing_mm=1.5)
    out = apply_postprocessing(labels, (1.0, 1.0, 1.0), _config(l1=step))
    assert (out[6, 5:9, 5:9] == 1).all()
    # the same gap is 4 mm on a coarse axis: a 1.5 mm closing must not bridge it
    coarse = apply_postprocessing(labels, (4.0, 1.0, 1.0), _config(l1=step))
    assert (coarse[6] == 0).all()
    assert (coarse == 2).sum() == (labels == 2).sum()


def test_closing_does_not_overwrite_other_labels() -> None:
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[2:5, 3:9, 3:9] = 1
    labels[6:9, 3:9, 3:9] = 1
    labels[5, 3:9, 3:9] = 2  # the gap is another label
    out = apply_postprocessing(
        labels, (1.0, 1.0, 1.0), _config(l1=LabelPostprocessing(closing_mm=2.0))
    )
    np.testing.assert_array_equal(out[5, 3:9, 3:9], 2)


def test_ellipsoid_structure_is_anisotropic() -> None:
    se = ellipsoid_structure(2.0, (1.0, 1.0, 2.0))
    assert se.shape == (5, 5, 3)
    assert se[2, 2, 0] and se[0, 2, 1] and not se[0, 0, 0]


def test_empty_map_stays_empty_and_input_is_untouched() -> None:
    step = LabelPostprocessing(
        largest_component=True, min_size_mm3=5, fill_holes=True, closing_mm=2
    )
    config = _config(l1=step, l2=step)
    empty = np.zeros((6, 7, 8), dtype=np.uint8)
    out = apply_postprocessing(empty, (1.0, 1.0, 1.0), config)
    assert out.shape == empty.shape and not out.any()
    labels = _two_blobs()
    labels[4:8, 8:11, 3:8] = 2
    labels[5:7, 9, 5] = 0
    before = labels.copy()
    out = apply_postprocessing(labels, (1.0, 2.0, 1.0), config)
    np.testing.assert_array_equal(labels, before)
    assert out is not labels and not np.array_equal(out, labels)


def test_crf_step_needs_probabilities_and_image() -> None:
    config = PostprocessConfig(crf=CRFConfig())
    with pytest.raises(MedsegError, match="probabilities"):
        apply_postprocessing(np.zeros((4, 4, 4), np.uint8), (1.0, 1.0, 1.0), config)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.float32)])
def test_rejects_non_integer_or_non_3d_maps(bad: np.ndarray) -> None:
    with pytest.raises(MedsegError, match="label map"):
        apply_postprocessing(bad, (1.0, 1.0, 1.0), PostprocessConfig())


def test_config_round_trips_through_yaml_and_json() -> None:
    config = PostprocessConfig(
        per_label={
            1: LabelPostprocessing(largest_component=True),
            3: LabelPostprocessing(min_size_mm3=5.0),
        },
        crf=CRFConfig(iterations=3, device="cpu"),
    )
    data = to_dict(config)
    assert from_dict(PostprocessConfig, yaml.safe_load(yaml.safe_dump(data))) == config
    assert postprocess_config_from_dict(json.loads(json.dumps(data))) == config
    with pytest.raises(MedsegError, match="connectivity"):
        from_dict(PostprocessConfig, {"per_label": {1: {"connectivity": 4}}})
    with pytest.raises(MedsegError, match="did you mean"):
        from_dict(PostprocessConfig, {"per_label": {1: {"fill_hole": True}}})

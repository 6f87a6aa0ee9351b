"""Component filtering counts sizes slab by slab: same result, no int64 copy of the box."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage

import medseg.postprocessing.morphology as morphology
from medseg.postprocessing import LabelPostprocessing, PostprocessConfig, apply_postprocessing


def _reference(labels: np.ndarray, step: LabelPostprocessing) -> np.ndarray:
    """The whole-volume scipy/numpy route (np.bincount of every component label at once)."""
    mask = labels == 1
    components, count = ndimage.label(mask, ndimage.generate_binary_structure(3, 3))
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    keep = np.ones(count + 1, bool)
    keep[0] = False
    if step.min_size_mm3 > 0:
        keep &= sizes >= step.min_size_mm3
    if step.largest_component:
        keep &= np.arange(count + 1) == np.argmax(sizes)
    out = labels.copy()
    out[mask & ~keep[components]] = 0
    return out


@pytest.mark.parametrize(
    "step",
    [LabelPostprocessing(largest_component=True), LabelPostprocessing(min_size_mm3=4.0)],
    ids=["largest", "min_size"],
)
def test_component_filtering_is_unchanged_and_lean(rng, monkeypatch, step) -> None:
    monkeypatch.setattr(morphology, "_SLAB_VOXELS", 20_000)  # many slabs on this small map
    labels = (rng.random((120, 100, 80)) < 0.45).astype(np.uint8)
    labels[labels == 1] += (rng.random(int((labels == 1).sum())) < 0.2).astype(np.uint8)
    config = PostprocessConfig(per_label={1: step})
    tracemalloc.start()
    try:
        out = apply_postprocessing(labels, (1.0, 1.0, 1.0), config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(out, _reference(labels, step))
    assert (out != labels).any()
    # int32 components (4 bytes/voxel) and a few boolean masks; the whole-box np.bincount
    # would add an int64 copy (8 bytes/voxel)
    assert peak < 10 * labels.size, peak / labels.size

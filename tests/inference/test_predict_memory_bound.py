"""``Predictor.predict`` with a decided CRF never holds source-grid probabilities of every class.

The CRF asks for probabilities tile by tile (resampled on demand from the preprocessed map);
numpy's allocations (traced by ``tracemalloc``) from the resampling to the end of the
post-processing stay below one float16 copy of all classes on the source grid, which the
previous route allocated (``resample_to_source(return_probabilities=True)``).
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import torch
from inference_helpers import phantom

import medseg.inference.predictor as predictor_module
import medseg.postprocessing.crf_tiled as crf_tiled
from medseg.inference import Predictor
from medseg.inference.config import InferConfig
from medseg.postprocessing import CRFConfig, PostprocessConfig

SHAPE, SPACING = (64, 60, 48), (0.8, 0.8, 1.0)  # resampled to and from the plans' 1 mm
CRF = CRFConfig(device="cpu", spatial_sigma_mm=1.0, bilateral_sigma_mm=1.5)  # halos of 6 voxels


@pytest.fixture
def predictor(tiny_net, monkeypatch) -> Predictor:
    plans, net = tiny_net
    monkeypatch.setattr(crf_tiled, "TILE_MB", 3.0)  # about 17 kvox: many tiles on this scan
    # slabs of a few thousand voxels: their temporaries scale with the slab, not the scan
    config = InferConfig(device="cpu", slab_mvox=0.002)
    return Predictor([net], plans, config=config, postprocessing=PostprocessConfig(crf=CRF))


def test_crf_gets_float16_tiles_never_the_whole_grid(predictor, monkeypatch) -> None:
    torch.set_num_threads(1)
    scan, _ = phantom(SHAPE, SPACING, seed=3)
    real_box, real_resample = (
        predictor_module.probabilities_in_box,
        predictor_module.resample_to_source,
    )
    boxes, flags = [], []

    def box_spy(*args, **kwargs):
        out = real_box(*args, **kwargs)
        boxes.append((args[3], out.dtype, out.shape))
        return out

    def resample_spy(*args, **kwargs):
        flags.append(kwargs.get("return_probabilities", False))
        return real_resample(*args, **kwargs)

    monkeypatch.setattr(predictor_module, "probabilities_in_box", box_spy)
    monkeypatch.setattr(predictor_module, "resample_to_source", resample_spy)
    pred = predictor.predict(scan)
    assert flags == [False]  # labels only: no probabilities for the whole grid
    tiles = [b for b in boxes if math.prod(s.stop - s.start for s in b[0]) > 1]  # not the probe
    assert len(tiles) > 4
    n = math.prod(SHAPE)
    for box, dtype, shape in tiles:
        assert dtype == np.float16 and shape == (3, *(s.stop - s.start for s in box))
        assert math.prod(s.stop - s.start for s in box) < 0.5 * n
    assert pred.mask.array.shape == SHAPE and pred.postprocessing["crf"] is not None


def test_numpy_peak_stays_below_one_all_class_float16_map(predictor, monkeypatch) -> None:
    torch.set_num_threads(1)
    scan, _ = phantom(SHAPE, SPACING, seed=3)
    real_resample = predictor_module.resample_to_source

    def resample_from_here(*args, **kwargs):
        tracemalloc.reset_peak()  # the window: resampling, CRF, morphology
        return real_resample(*args, **kwargs)

    monkeypatch.setattr(predictor_module, "resample_to_source", resample_from_here)
    tracemalloc.start()
    try:
        predictor.predict(scan)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the previous route allocated this array (plus the labels) in the window: it cannot pass
    all_classes_f16 = 2 * predictor.num_classes * math.prod(SHAPE)
    assert peak < all_classes_f16, (peak, all_classes_f16)


def test_tiled_on_demand_crf_matches_the_full_probability_route(predictor) -> None:
    """The old route (all probabilities on the source grid, one CRF block) gives the same mask
    but for a few voxels at tile seams."""
    torch.set_num_threads(1)
    scan, _ = phantom(SHAPE, SPACING, seed=3)
    tiled = predictor.predict(scan).mask.array
    raw = Predictor(predictor.models, predictor.plans, config=predictor.config)
    full = raw.predict(scan, with_probabilities=True)
    from medseg.postprocessing import crf_refine_labels

    want = crf_refine_labels(
        full.probabilities.array, scan.array, scan.spacing, CRF, labels=full.mask.array,
        tile_mb=1e5,
    )  # fmt: skip
    assert (want != full.mask.array).mean() > 0.002  # the CRF changed something
    assert (tiled != want).mean() < 1e-3


def test_cpu_forward_passes_are_split_to_bound_activations(tiny_net, monkeypatch) -> None:
    import medseg.inference.sliding as sliding

    _, net = tiny_net
    seen: list[int] = []

    class Spy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(int(x.shape[0]))
            return net(x)

    x = torch.randn(5, 1, 16, 16, 16)
    cpu = torch.device("cpu")
    whole = sliding.window_predictor([Spy()], tta=False, device=cpu, out_dtype=torch.float32)(x)
    assert seen == [5]
    monkeypatch.setattr(sliding, "FORWARD_MVOX", 2 * 16**3 / 1e6)  # two windows per pass
    seen.clear()
    split = sliding.window_predictor([Spy()], tta=False, device=cpu, out_dtype=torch.float32)(x)
    assert seen == [2, 2, 1]
    torch.testing.assert_close(split, whole)

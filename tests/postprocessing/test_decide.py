"""nnU-Net's rule: keep a step only where validation Dice improves and no label gets worse."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.postprocessing import (
    CRFConfig,
    DecisionCandidates,
    LabelPostprocessing,
    PostprocessConfig,
    decide_postprocessing,
    load_postprocessing,
    save_postprocessing,
)
from medseg.postprocessing import decide as decide_module
from medseg.postprocessing.decide import _accept

SPACING = (1.0, 1.0, 2.0)
NO_CRF = DecisionCandidates(crf=())


@pytest.fixture
def one_thread():
    """Tiny volumes: extra threads only add overhead on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _case(rng: np.random.Generator):
    """Label 1: a solid block, predicted with a spurious far blob (largest component helps).
    Label 2: a hollow shell whose cavity is real (hole filling hurts), predicted exactly."""
    ref = np.zeros((30, 24, 12), np.uint8)
    ref[3:11, 3:11, 2:8] = 1
    ref[16:26, 12:22, 2:10] = 2
    ref[19:23, 15:19, 4:8] = 0
    pred = ref.copy()
    x, y = rng.integers(14, 22), rng.integers(2, 8)
    pred[x : x + 3, y : y + 3, 9:11] = 1  # 18 voxels = 36 mm^3, away from everything
    return pred, ref, SPACING, None, None


def test_keeps_step_that_helps_and_rejects_step_that_hurts(rng) -> None:
    cases = [_case(rng) for _ in range(3)]
    config, report = decide_postprocessing(cases, [1, 2], NO_CRF)
    assert config.per_label[1].largest_component
    assert not config.per_label.get(2, LabelPostprocessing()).largest_component
    assert not config.per_label.get(2, LabelPostprocessing()).fill_holes
    assert config.crf is None
    assert report["final"]["1"] > report["baseline"]["1"]
    assert report["final"]["2"] == pytest.approx(report["baseline"]["2"])
    fill2 = [c for c in report["candidates"] if c["step"] == "fill_holes" and c["label"] == 2]
    assert fill2 and not fill2[0]["accepted"]
    assert fill2[0]["dice_after"]["2"] < fill2[0]["dice_before"]["2"]
    # min-size removal is skipped for label 1 once only its largest component is kept
    assert not any(c["step"] == "min_size_mm3" and c["label"] == 1 for c in report["candidates"])
    json.dumps(report)  # JSON-ready


def test_small_object_threshold_is_chosen_when_largest_component_is_not_tried(rng) -> None:
    cases = [_case(rng) for _ in range(2)]
    cand = DecisionCandidates(largest_component=False, min_size_mm3=(10.0, 50.0), crf=())
    config, report = decide_postprocessing(cases, [1, 2], cand)
    assert config.per_label[1].min_size_mm3 == 50.0  # 10 mm^3 leaves the 36 mm^3 blob
    tried = [c for c in report["candidates"] if c["step"] == "min_size_mm3" and c["label"] == 1]
    assert [c["params"]["min_size_mm3"] for c in tried] == [10.0, 50.0]
    assert [c["accepted"] for c in tried] == [False, True]


@pytest.mark.parametrize(
    ("after", "target", "expected"),
    [
        ({1: 0.95, 2: 0.90}, [1], True),
        ({1: 0.95, 2: 0.85}, [1], False),  # label 1 better but label 2 worse
        ({1: 0.99, 2: 0.85}, [1, 2], False),  # the mean improves, label 2 still worse
        ({1: 0.80, 2: 0.90}, [1], False),  # no gain
    ],
)
def test_rule_needs_a_gain_and_no_label_worse(after, target, expected) -> None:
    before = {1: 0.80, 2: 0.90}
    assert _accept(before, after, target, gain=0.0, tol=1e-9) is expected


def test_crf_is_kept_when_it_helps(rng, one_thread, caplog) -> None:
    shape = (24, 24, 12)
    ii, jj, kk = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, SPACING, strict=True)], indexing="ij"
    )
    ref = (((ii - 12) ** 2 + (jj - 12) ** 2) / 49 + (kk - 12) ** 2 / 81 < 1).astype(np.uint8)
    cases = []
    for _ in range(2):
        image = (ref + rng.normal(0, 0.3, shape)).astype(np.float32)
        noise = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.5)
        logit = (2.0 * ref - 1.0) + 1.5 * noise / noise.std() + rng.normal(0, 1, shape)
        p1 = 1.0 / (1.0 + np.exp(-logit))
        probs = np.stack([1 - p1, p1]).astype(np.float32)
        cases.append((probs.argmax(0).astype(np.uint8), ref, SPACING, image, probs))
    cand = DecisionCandidates(
        largest_component=False,
        min_size_mm3=(),
        fill_holes=False,
        closing_mm=(),
        crf=(
            CRFConfig(device="cpu", margin_mm=10.0, bilateral_weight=0.0),
            CRFConfig(device="cpu", margin_mm=10.0),
        ),
    )
    with caplog.at_level(logging.INFO, logger="medseg"):
        config, report = decide_postprocessing(cases, [1], cand)
    assert config.crf == cand.crf[1]  # the bilateral kernel helps more than smoothing alone
    # the CRF acts on every label at once; the log says so (it used to say "label None")
    assert "kept crf for all labels" in caplog.text
    first, second = report["candidates"]
    assert first["step"] == second["step"] == "crf"
    assert second["accepted"] and not first["accepted"]
    assert second["dice_after"]["1"] > first["dice_after"]["1"]
    assert second["dice_after"]["1"] > second["dice_before"]["1"] + 0.1


def test_save_and_load_round_trip(tmp_path) -> None:
    config = PostprocessConfig(
        per_label={
            1: LabelPostprocessing(largest_component=True),
            4: LabelPostprocessing(fill_holes=True),
        },
        crf=CRFConfig(iterations=2),
    )
    path = save_postprocessing(
        tmp_path / "run" / "postprocessing.json", config, {"final": {"1": 0.9}}
    )
    assert load_postprocessing(path) == config
    assert json.loads(path.read_text())["report"]["final"]["1"] == 0.9
    assert not list(path.parent.glob("*.part"))


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(MedsegError, match="not found"):
        load_postprocessing(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"config": {"per_label": {"x": {}}}}')
    with pytest.raises(MedsegError, match=r"bad\.json"):
        load_postprocessing(bad)
    with pytest.raises(MedsegError, match="expected cases"):
        decide_postprocessing([], [1])


def test_multi_lesion_labels_are_never_reduced_to_one_component(rng) -> None:
    """Two true lesions per reference: 'largest component' would raise validation Dice here
    (it removes the false positive) but deletes real lesions on new cases: not tried."""
    cases = []
    for _ in range(3):
        ref = np.zeros((30, 24, 12), np.uint8)
        ref[3:9, 3:9, 2:6] = 1
        ref[20:23, 15:18, 6:9] = 1  # a second, smaller lesion
        pred = ref.copy()
        pred[20:23, 15:18, 6:9] = 0  # missed
        pred[12:14, 2:4, 9:11] = 1  # a false positive that largest-component would remove
        cases.append((pred, ref, SPACING, None, None))
    config, report = decide_postprocessing(cases, [1], NO_CRF)
    assert report["multi_instance_labels"] == [1]
    assert not config.per_label.get(1, LabelPostprocessing()).largest_component
    assert not any(c["step"] == "largest_component" for c in report["candidates"])
    # small-object removal is still available for such labels
    assert any(c["step"] == "min_size_mm3" for c in report["candidates"])


def _slit_case() -> tuple:
    """Label 1: a solid block predicted with two one-voxel slits cut right through it (open to
    the outside, so hole filling cannot close them; the halves are large, so component
    filters do not help). Label 2: a hollow shell (its cavity is real) predicted exactly."""
    ref = np.zeros((30, 24, 12), np.uint8)
    ref[3:14, 3:20, 2:10] = 1
    ref[16:27, 6:18, 1:11] = 2
    ref[19:24, 9:15, 4:8] = 0
    pred = ref.copy()
    pred[7, 3:20, 2:10] = 0
    pred[10, 3:20, 2:10] = 0
    return pred, ref, SPACING, None, None


def test_closing_is_tried_by_default_and_kept_where_it_closes_gaps() -> None:
    config, report = decide_postprocessing([_slit_case(), _slit_case()], [1, 2], NO_CRF)
    closing = [c for c in report["candidates"] if c["step"] == "closing_mm"]
    assert {(c["label"], c["params"]["closing_mm"]) for c in closing} == {
        (1, 1.0),
        (1, 2.0),
        (2, 1.0),
        (2, 2.0),
    }
    assert config.per_label[1].closing_mm > 0  # the slits are closed
    assert report["final"]["1"] > report["baseline"]["1"] + 0.05  # 0.90 -> 0.99
    assert any(c["accepted"] for c in closing if c["label"] == 1)
    # the shell's real cavity: closing never helps there, so it is not kept
    assert not any(c["accepted"] for c in closing if c["label"] == 2)
    assert config.per_label.get(2, LabelPostprocessing()).closing_mm == 0


def test_closing_radius_of_one_voxel_at_every_spacing_is_not_evaluated() -> None:
    cand = DecisionCandidates(closing_mm=(0.5, 1.0), crf=())
    _, report = decide_postprocessing([_slit_case()], [1], cand)
    radii = [c["params"]["closing_mm"] for c in report["candidates"] if c["step"] == "closing_mm"]
    assert radii == [1.0]  # 0.5 mm is below every voxel size here: a no-op


def test_deadline_keeps_the_steps_decided_and_says_where_it_stopped(
    rng, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clock that ticks once per case evaluated: the baseline (3 cases) and label 1's
    largest component (3 more) fit before the deadline, nothing after does."""
    ticks = iter(range(10_000))
    monkeypatch.setattr(decide_module.time, "perf_counter", lambda: float(next(ticks)))
    cases = [_case(rng) for _ in range(3)]
    config, report = decide_postprocessing(cases, [1, 2], NO_CRF, deadline=5.5)
    assert config.per_label[1].largest_component  # decided on every case before the deadline
    assert [c["step"] for c in report["candidates"]] == ["largest_component"]
    # min-size removal is skipped once the largest component is kept: it stops at fill holes
    assert report["stopped"].startswith("deadline passed while trying fill_holes")
    assert "for label 1" in report["stopped"]
    assert report["stopped"].endswith("later candidates were not tried")
    assert report["final"]["1"] > report["baseline"]["1"]
    config, report = decide_postprocessing(cases, [1, 2], NO_CRF, deadline=-1.0)
    assert config == PostprocessConfig() and "baseline" not in report
    assert report["stopped"].startswith("deadline passed while scoring")

"""``--time-limit`` bounds the whole command: steps stop mid-epoch, the last epoch is validated,
the post-processing decision fits in what is left, and a stopped run resumes exactly."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

from medseg.networks.loading import load_checkpoint
from medseg.training import run as run_module
from medseg.training.loop import FoldTrainer
from medseg.training.run import train
from medseg.training.validation import window_count
from medseg.workflows.train import train_and_decide

LIMIT_S = 6.0  # the limit: it trained a 69-second first epoch, then decided for 28 s
# final validation, checkpoints, metrics.json and one decision case at most (about 2 s idle);
# generous for a loaded 2-core CI machine, still far below the old 48 s
MARGIN_S = 8.0


def test_limit_far_shorter_than_an_epoch_ends_in_time_with_validated_best(
    make_config, tmp_path: Path
) -> None:
    # 1,000 steps of ~50 ms: one epoch alone would take about a minute
    cfg = make_config(
        **{
            "train.epochs": 5,
            "train.iterations_per_epoch": 1000,
            "train.time_limit_minutes": LIMIT_S / 60.0,
            "train.postprocess_decision": True,
        }
    )
    start = time.perf_counter()
    result = train_and_decide(cfg, tmp_path / "run")["fold_0"]
    wall = time.perf_counter() - start
    assert wall < LIMIT_S + MARGIN_S, f"took {wall:.1f} s for a {LIMIT_S} s limit"
    run = tmp_path / "run"
    ck = load_checkpoint(run / "fold_0" / "checkpoint_last.pt")
    (row,) = ck["history"]  # one epoch, cut short, then validated
    assert 1 <= row["iterations"] < 1000 and row["step"] == row["iterations"]
    assert "val_mean_dice" in row
    best = load_checkpoint(run / "fold_0" / "checkpoint_best.pt")
    assert best["best_epoch"] == 1 and best["best_metric"] >= 0.0
    assert result["epochs"] == 1 and result["curve"]
    # the decision ran inside the budget (decided, or skipped saying so)
    report = json.loads((run / "postprocessing.json").read_text())["report"]
    assert report["folds"] == [0]
    assert "skipped" in report or report["validation_cases"] == 2


def _stop_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """The time budget "ends" once ``step`` steps are done (a clock-free time limit)."""
    monkeypatch.setattr(FoldTrainer, "out_of_time", lambda self: self.state.step >= step)


class KilledError(Exception):
    """Raised in place of an optimisation step: as abrupt as a killed process."""


def test_resume_after_a_mid_epoch_time_stop_is_exact(
    make_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time stop in epoch 1 (3 steps per epoch) after 5 steps counts epoch 1 as done; a
    resumed run starts epoch 2 at its first step, and resuming is exact: killing the resumed
    run midway and resuming again ends with the same weights as resuming once."""
    cfg = make_config(**{"train.deterministic": True, "train.epochs": 4})
    with monkeypatch.context() as m:
        _stop_at_step(m, 5)
        train(cfg, tmp_path / "once")
    stopped = load_checkpoint(tmp_path / "once" / "fold_0" / "checkpoint_last.pt")
    assert stopped["epoch"] == 2 and stopped["schedule"]["step"] == 5
    assert stopped["history"][-1]["iterations"] == 2
    assert "val_mean_dice" in stopped["history"][-1]  # the cut epoch was validated
    shutil.copytree(tmp_path / "once", tmp_path / "twice")
    train(cfg, tmp_path / "once", resume=True)
    step = FoldTrainer.step
    calls = {"n": 0}

    def dying(self: FoldTrainer, batch: dict) -> float:
        if calls["n"] >= 4:  # in the middle of epoch 3
            raise KilledError
        calls["n"] += 1
        return step(self, batch)

    with monkeypatch.context() as m:
        m.setattr(FoldTrainer, "step", dying)
        with pytest.raises(KilledError):
            train(cfg, tmp_path / "twice", resume=True)
    train(cfg, tmp_path / "twice", resume=True)
    a = load_checkpoint(tmp_path / "once" / "fold_0" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "twice" / "fold_0" / "checkpoint_last.pt")
    assert a["epoch"] == b["epoch"] == 4
    assert a["schedule"]["step"] == b["schedule"]["step"] == 5 + 2 * 3
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # the stopped epoch keeps its 2 steps: nothing was repeated or made up
    assert [r.get("iterations", 3) for r in b["history"]] == [3, 2, 3, 3]


def test_folds_share_the_time_left_after_what_earlier_folds_reserved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_module.time, "perf_counter", lambda: 100.0)
    assert run_module._fold_stop_at(160.0, 0.0, 3) == pytest.approx(120.0)
    assert run_module._fold_stop_at(160.0, 15.0, 3) == pytest.approx(115.0)
    assert run_module._fold_stop_at(90.0, 0.0, 1) == pytest.approx(100.0)  # overdrawn: now
    assert run_module._fold_stop_at(math.inf, 5.0, 2) == math.inf


def test_without_a_limit_the_budget_is_never_consulted(make_config, tmp_path: Path) -> None:
    cfg = make_config(**{"train.epochs": 2})
    result = train(cfg, tmp_path / "run")["fold_0"]
    assert result["steps"] == 6
    ck = load_checkpoint(tmp_path / "run" / "fold_0" / "checkpoint_last.pt")
    assert all("iterations" not in row for row in ck["history"])


@pytest.mark.parametrize(
    ("shape", "patch", "overlap", "expected"),
    [
        ((24, 24, 24), (16, 16, 16), 0.25, 8),  # interval 12: two windows per axis
        ((16, 10, 16), (16, 16, 16), 0.5, 1),  # as large or smaller: one (padded)
        ((40, 16, 16), (16, 16, 16), 0.5, 4),  # interval 8: starts 0, 8, 16, 24
    ],
)
def test_window_count_matches_monai(shape, patch, overlap, expected) -> None:
    from monai.inferers import sliding_window_inference

    calls = []

    def net(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x

    sliding_window_inference(torch.zeros(1, 1, *shape), patch, 1, net, overlap=overlap)
    assert len(calls) == expected
    assert window_count(shape, patch, overlap) == expected


def test_the_decision_reserve_is_capped_at_a_share_of_the_fold_budget() -> None:
    """A 41 s validation x 4 asked for 164 s of a 120 s budget: the fold trained one step."""
    from medseg.training.loop import RESERVE_MAX_SHARE

    trainer = FoldTrainer.__new__(FoldTrainer)  # only the timing fields matter here
    trainer.reserve_factor, trainer.val_s = 4.0, 41.0
    trainer._created = time.perf_counter()
    trainer.stop_at = trainer._created + 120.0
    assert trainer.reserve_s() == pytest.approx(RESERVE_MAX_SHARE * 120.0)
    trainer.val_s = 2.0  # a short validation keeps its full reserve
    assert trainer.reserve_s() == pytest.approx(8.0)
    trainer.stop_at = math.inf  # no limit: nothing to cap
    trainer.val_s = 41.0
    assert trainer.reserve_s() == pytest.approx(164.0)

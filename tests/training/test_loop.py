"""Training loop: loss falls, checkpoints reload, resume and determinism repeat exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.networks.loading import load_checkpoint, load_model
from medseg.networks.registry import build_network
from medseg.planning.plans import load_plans
from medseg.training.loop import FoldTrainer
from medseg.training.run import train
from medseg.training.schedule import memory_format, seed_epoch, warmup_ema


def _weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "fold_0" / f"checkpoint_{which}.pt")["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loss_falls_and_run_dir_contract(make_config, tmp_path: Path) -> None:
    cfg = make_config(**{"train.epochs": 6, "train.iterations_per_epoch": 4})
    result = train(cfg, tmp_path / "run")["fold_0"]
    run = tmp_path / "run"
    for name in ("config.yaml", "fingerprint.json", "plans.json", "dataset.json", "splits.json"):
        assert (run / name).is_file(), name
    for name in ("checkpoint_best.pt", "checkpoint_last.pt", "log.csv", "metrics.json"):
        assert (run / "fold_0" / name).is_file(), name
    assert (run / "fold_0" / "tensorboard").is_dir()
    ck = torch.load(run / "fold_0" / "checkpoint_best.pt", weights_only=True)
    assert {"model", "epoch", "best_metric", "plans"} <= ck.keys()
    losses = [
        float(line.split(",")[1])
        for line in (run / "fold_0" / "log.csv").read_text().splitlines()[1:]
    ]
    assert len(losses) == 6
    assert sum(losses[-2:]) < sum(losses[:2])
    assert result["epochs"] == 6 and len(result["curve"]) == 6


def test_checkpoint_reload_gives_same_outputs(make_config, tmp_path: Path) -> None:
    cfg = make_config(**{"train.epochs": 1})
    train(cfg, tmp_path / "run")
    model, plans = load_model(tmp_path / "run", 0, which="last")
    again, _ = load_model(tmp_path / "run" / "fold_0", which="last")
    x = torch.randn(1, 1, *plans.patch_size)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, again(x))
    assert out.shape == (1, plans.num_classes, *plans.patch_size)
    # the state dict in the checkpoint is exactly the model's
    assert _same(model.state_dict(), _weights(tmp_path / "run"))


def test_deterministic_runs_repeat(make_config, tmp_path: Path) -> None:
    cfg = make_config(**{"train.deterministic": True, "train.epochs": 2})
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    other = make_config(**{"train.deterministic": True, "train.epochs": 2, "train.seed": 5})
    train(other, tmp_path / "c")
    assert not _same(_weights(tmp_path / "a"), _weights(tmp_path / "c"))


class KilledError(Exception):
    """Raised in place of the 6th optimisation step: as abrupt as a killed process."""


def _die_after(monkeypatch: pytest.MonkeyPatch, steps: int) -> None:
    step, done = FoldTrainer.step, {"n": 0}

    def dying(self: FoldTrainer, batch: dict) -> float:
        if done["n"] >= steps:
            raise KilledError(f"stopped after {steps} steps")
        done["n"] += 1
        return step(self, batch)

    monkeypatch.setattr(FoldTrainer, "step", dying)


@pytest.mark.parametrize("weight_ema", [0.0, 0.8])
def test_kill_and_resume_matches_uninterrupted(
    make_config, tmp_path: Path, weight_ema: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = {"train.deterministic": True, "train.epochs": 3, "train.weight_ema": weight_ema}
    full = make_config(**common)
    train(full, tmp_path / "full")
    # stop abruptly in the middle of epoch 2 (no checkpoint written for it), as SIGKILL would
    with monkeypatch.context() as m:
        _die_after(m, 5)
        with pytest.raises(KilledError):
            train(full, tmp_path / "resumed")
    at_stop = load_checkpoint(tmp_path / "resumed" / "fold_0" / "checkpoint_last.pt")
    assert at_stop["epoch"] == 1
    train(full, tmp_path / "resumed", resume=True)
    a = load_checkpoint(tmp_path / "full" / "fold_0" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "fold_0" / "checkpoint_last.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert _same(a["model"], b["model"])
    assert a["schedule"]["step"] == b["schedule"]["step"]
    assert a["best_metric"] == pytest.approx(b["best_metric"])
    # it continued rather than started over: epoch 0 is the stopped run's (same timing)
    assert b["history"][0] == at_stop["history"][0] != a["history"][0]
    if weight_ema:
        assert _same(a["train_model"], b["train_model"])
        assert _same(a["averaged"], b["averaged"])


def test_weight_average_is_what_is_saved_and_loaded(make_config, tmp_path: Path) -> None:
    cfg = make_config(**{"train.epochs": 2, "train.weight_ema": 0.8})
    train(cfg, tmp_path / "run")
    ck = load_checkpoint(tmp_path / "run" / "fold_0" / "checkpoint_last.pt")
    steps = ck["schedule"]["step"]
    assert int(ck["averaged"]["n_averaged"]) == steps == 6
    averaged = {k[len("module.") :]: v for k, v in ck["averaged"].items() if k != "n_averaged"}
    assert _same(ck["model"], averaged)  # the averaged weights are the checkpoint's model
    assert not _same(ck["model"], ck["train_model"])
    # predictors load "model": the averaged network
    model, _ = load_model(tmp_path / "run", 0, which="last")
    assert _same(model.state_dict(), ck["model"])


def test_time_limit_stops_with_validated_best(make_config, tmp_path: Path) -> None:
    cfg = make_config(
        **{"train.epochs": 1000, "train.time_limit_minutes": 0.05, "train.val_every": 50}
    )
    result = train(cfg, tmp_path / "run")["fold_0"]
    assert result["epochs"] < 1000
    assert result["curve"], "the final epoch must be validated"
    assert (tmp_path / "run" / "fold_0" / "checkpoint_best.pt").is_file()


@pytest.mark.parametrize(
    ("setting", "network", "device", "layout"),
    [
        ("auto", "unet", "cpu", torch.channels_last_3d),
        ("auto", "basicunet", "cpu", torch.contiguous_format),
        ("auto", "unet", "cuda", torch.contiguous_format),
        ("on", "basicunet", "cuda", torch.channels_last_3d),
        ("off", "unet", "cpu", torch.contiguous_format),
    ],
)
def test_memory_layout_choice(setting: str, network: str, device: str, layout) -> None:
    assert memory_format(setting, network, device) == layout


def test_channels_last_training_matches_contiguous_closely(make_config, tmp_path: Path) -> None:
    """The layout changes speed, not the model: the two runs differ by float rounding only."""
    runs = {}
    for setting in ("on", "off"):
        cfg = make_config(**{"train.epochs": 1, "train.channels_last": setting})
        train(cfg, tmp_path / setting)
        runs[setting] = _weights(tmp_path / setting)
    # the "on" run really trained channels-last (checkpoints keep the strides)
    convs = [k for k, v in runs["on"].items() if v.dim() == 5 and min(v.shape[1:]) > 1]
    assert convs
    for k in convs:
        assert runs["on"][k].is_contiguous(memory_format=torch.channels_last_3d)
        assert not runs["off"][k].is_contiguous(memory_format=torch.channels_last_3d)
    seed_epoch(0, -1, None)  # the initial weights, as FoldTrainer builds them
    plans = load_plans(tmp_path / "off" / "plans.json")
    init = build_network(plans.network, 1, plans.num_classes).state_dict()
    moved = sum(float((runs["off"][k] - init[k]).norm()) for k in init)
    apart = sum(float((runs["on"][k] - runs["off"][k]).norm()) for k in init)
    assert moved > 0 and apart < 0.05 * moved


def test_weight_ema_decay_warms_up() -> None:
    update = warmup_ema(0.999)
    avg, cur = [torch.zeros(3)], [torch.ones(3)]
    update(avg, cur, 1)  # second update: decay 2/11, mostly the current weights
    torch.testing.assert_close(avg[0], torch.full((3,), 9.0 / 11.0))
    avg = [torch.zeros(3)]
    update(avg, cur, 10**6)  # late: the configured decay
    torch.testing.assert_close(avg[0], torch.full((3,), 0.001))

"""Bad configs, manifests and run directories give clear MedsegErrors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_cli import train_cli_args

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.training.config import load_run_config
from medseg.training.run import train


def test_unknown_config_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(MedsegError, match="did you mean 'epochs'") as info:
        load_run_config(path)
    assert str(path) in str(info.value)


def test_bad_plans_override_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("plans:\n  unet_head_channels: -4\n")
    with pytest.raises(MedsegError, match=r"plans\.unet_head_channels.*found -4") as info:
        load_run_config(path)
    assert str(path) in str(info.value)


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: many\n")
    with pytest.raises(MedsegError, match=r"config\.train\.epochs: expected int"):
        load_run_config(path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.fold": 7, "data.folds": 5}, "data.fold"),
        ({"augment.mirror_axes": [3]}, "mirror_axes"),
        ({"train.foreground_ratio": 1.5}, "foreground_ratio"),
        ({"plans.model": "resnet"}, "expected one of"),
        ({"train.weight_ema": 1.0}, "weight_ema"),
        ({"train.channels_last": "yes"}, "channels_last: expected one of"),
        ({"plans.unet_head_channels": -1}, r"plans\.unet_head_channels: expected >= 0"),
        ({"plans.batch_size": -2}, r"plans\.batch_size: expected >= 0"),
        ({"plans.channels": [0, 8]}, r"plans\.channels: expected positive"),
        ({"plans.patch_size": [0, 8, 8]}, r"plans\.patch_size: expected positive"),
        ({"plans.target_spacing": [-1, 1, 1]}, r"plans\.target_spacing: expected positive"),
        ({"plans.anisotropy_threshold": 0.5}, r"plans\.anisotropy_threshold"),
        ({"plans.dropout": 1.0}, r"plans\.dropout: expected a probability"),
        ({"plans.dropout": -0.1}, r"plans\.dropout: expected a probability"),
    ],
)
def test_out_of_range_values(overrides: dict, message: str) -> None:
    with pytest.raises(MedsegError, match=message):
        load_run_config(None, overrides)


def test_missing_image_file_is_reported(make_config, tiny_cohort: Path, tmp_path: Path) -> None:
    data = json.loads(tiny_cohort.read_text())
    data["training"][0]["image"] = "./imagesTr/does_not_exist.nii.gz"
    bad = tiny_cohort.parent / "bad.json"
    bad.write_text(json.dumps(data))
    cfg = make_config(**{"data.manifest": str(bad)})
    with pytest.raises(MedsegError, match="does_not_exist"):
        train(cfg, tmp_path / "run")


def test_non_empty_run_dir_is_refused(make_config, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(MedsegError, match="--resume"):
        train(make_config(), out)
    with pytest.raises(MedsegError, match="not a medseg run directory"):
        train(make_config(), out, resume=True)


def test_cli_reports_errors_with_exit_code(tiny_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "x").write_text("x")
    args = train_cli_args(tiny_cohort, tmp_path, out, epochs=1)
    assert main(args) == 1  # the output folder holds files and --resume was not given
    fresh = train_cli_args(tiny_cohort, tmp_path, tmp_path / "fresh", epochs=1)
    assert main([*fresh, "--fold", "nine"]) == 1  # not an integer or "all"
    assert not (tmp_path / "fresh" / "fold_0").exists()


def test_cli_trains_a_fold(tiny_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [*train_cli_args(tiny_cohort, tmp_path, out, epochs=1), "--fold", "1", "--folds", "3"]
    assert main(args) == 0
    assert (out / "fold_1" / "checkpoint_best.pt").is_file()
    assert "iterations_per_epoch: 2" in (out / "config.yaml").read_text()
    assert main([*args, "--resume", "--epochs", "2"]) == 0
    assert json.loads((out / "fold_1" / "metrics.json").read_text())["epochs"] == 2

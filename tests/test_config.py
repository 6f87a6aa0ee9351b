"""The config machinery: dataclass trees from YAML, validated, with helpful errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml
from atomic_helpers import DiskFullError, break_write, folder_state

from medseg.config import apply_overrides, dump_yaml, from_dict, load_yaml, to_dict
from medseg.errors import MedsegError
from medseg.training.config import load_run_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Inner:
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    mode: Literal["a", "b"] = "a"
    limit: int | None = None


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    names: dict[int, str] = field(default_factory=dict)
    channels: tuple[int, ...] = (1, 2)


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    cfg = Outer(name="run", inner=Inner((0.5, 0.5, 3), "b", 7), names={1: "liver"}, channels=(4,))
    path = dump_yaml(cfg, tmp_path / "c.yaml")
    assert from_dict(Outer, load_yaml(path)) == cfg
    assert to_dict(cfg)["inner"]["spacing"] == [0.5, 0.5, 3.0]


def test_ints_are_accepted_as_floats_and_json_keys_as_ints() -> None:
    cfg = from_dict(Outer, {"inner": {"spacing": [1, 2, 3]}, "names": {"1": "a", 2: "b"}})
    assert cfg.inner.spacing == (1.0, 2.0, 3.0)
    assert cfg.names == {1: "a", 2: "b"}


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"nmae": "x"}, r"unknown key 'nmae' \(did you mean 'name'\?\)"),
        ({"inner": {"spacing": [1, 2]}}, r"config.inner.spacing: expected 3 values, found 2"),
        ({"inner": {"mode": "c"}}, r"config.inner.mode: expected one of \['a', 'b'\]"),
        ({"inner": {"limit": "3"}}, r"config.inner.limit"),
        ({"name": 3}, r"config.name: expected str, found 3"),
        ({"inner": 5}, r"config.inner: expected a mapping"),
        ({"channels": [1, True]}, r"config.channels\[1\]: expected int, found True"),
    ],
)
def test_errors_name_the_key(data: dict, pattern: str) -> None:
    with pytest.raises(MedsegError, match=pattern):
        from_dict(Outer, data)


def test_overrides_set_dotted_keys_and_skip_none() -> None:
    data = apply_overrides({"inner": {"mode": "a"}}, {"inner.limit": 4, "name": None})
    assert data == {"inner": {"mode": "a", "limit": 4}}
    assert from_dict(Outer, data).inner.limit == 4


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(MedsegError, match=r"bad\.yaml: invalid YAML"):
        load_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(MedsegError, match="expected a YAML mapping"):
        load_yaml(listing)
    with pytest.raises(MedsegError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    assert load_yaml(_empty(tmp_path)) == {}


def _empty(tmp_path: Path) -> Path:
    p = tmp_path / "empty.yaml"
    p.write_text("")
    return p


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(ROOT).as_posix()
        for p in [*ROOT.glob("benchmarks/configs/*.yaml"), *ROOT.glob("bundles/*.yaml")]
    ),
)
def test_shipped_training_configs_load_and_validate(path: str) -> None:
    cfg = load_run_config(ROOT / path, {})
    assert cfg != load_run_config(None, {}), f"{path} changes nothing from the defaults"


def test_hippocampus_recipe_is_what_the_readme_measured() -> None:
    """The README's table row names this file; its settings must stay the measured ones."""
    name = "benchmarks/configs/hippocampus_ema_noblur.yaml"
    assert f"--config {name}`" in (ROOT / "README.md").read_text(encoding="utf-8")
    cfg = load_run_config(ROOT / name, {})
    assert cfg.train.weight_ema == 0.999
    assert (cfg.augment.rotate_prob, cfg.augment.scale_prob) == (0.4, 0.4)
    assert (cfg.augment.blur_prob, cfg.augment.lowres_prob) == (0.0, 0.0)
    assert cfg.plans == load_run_config(None, {}).plans  # the default network and plan


@pytest.mark.parametrize("existing", [True, False], ids=["old-file", "no-file"])
@pytest.mark.parametrize("how", ["torn-write", "serializer-raises"])
def test_failed_yaml_dump_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool, how: str
) -> None:
    path = tmp_path / "config.yaml"
    if existing:
        dump_yaml(Outer(name="old"), path)
    before = folder_state(tmp_path)
    break_write(monkeypatch, yaml, "safe_dump", how)
    with pytest.raises(DiskFullError):
        dump_yaml(Outer(name="new"), path)
    assert folder_state(tmp_path) == before
    if existing:
        assert load_yaml(path)["name"] == "old"


TRAIN_FLAGS = {
    "train.time_limit_minutes": "--time-limit",
    "train.epochs": "--epochs",
    "data.fold": "--fold",
    "plans.model": "--model",
}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.time_limit_minutes": -1.0}, "--time-limit: expected >= 0, found -1.0"),
        ({"data.fold": 7}, "--fold: expected 0..4 or 'all', found 7"),
        ({"train.epochs": 0}, "--epochs: expected epochs >= 1 and iterations_per_epoch >= 1"),
        ({"plans.model": "resnet"}, "--model: expected one of ['auto', 'unet'"),
    ],
)
def test_bad_flag_value_names_the_flag_not_the_file(
    tmp_path: Path, overrides: dict, message: str
) -> None:
    # used to be "run.yaml: train.time_limit_minutes: ..." (the file blamed for a flag)
    from medseg.config import load_config
    from medseg.training.config import RunConfig

    path = tmp_path / "run.yaml"
    path.write_text("train: {seed: 3}\n")
    with pytest.raises(MedsegError) as err:
        load_config(RunConfig, path, overrides, "config", flags=TRAIN_FLAGS)
    assert str(err.value).startswith(message), str(err.value)
    assert err.value.path is None and str(path) not in str(err.value)


def test_bad_value_in_the_file_still_names_the_file(tmp_path: Path) -> None:
    from medseg.config import load_config
    from medseg.training.config import RunConfig

    path = tmp_path / "run.yaml"
    path.write_text("train: {time_limit_minutes: -2, iterations_per_epoch: 0}\n")
    flags = TRAIN_FLAGS
    with pytest.raises(MedsegError, match=r"run\.yaml: train: expected epochs >= 1") as err:
        # --epochs is fine; the file's iterations_per_epoch is not: the file is blamed
        load_config(RunConfig, path, {"train.epochs": 3}, "config", flags=flags)
    assert "--epochs" not in str(err.value)
    path.write_text("train: {time_limit_minutes: -2}\n")
    with pytest.raises(MedsegError, match=r"run\.yaml: train\.time_limit_minutes: expected >= 0"):
        load_config(RunConfig, path, {"train.epochs": 3}, "config", flags=flags)
    with pytest.raises(MedsegError, match=r"^train\.time_limit_minutes: expected >= 0"):
        load_config(RunConfig, None, {"train.time_limit_minutes": -1.0}, "config")  # no flags


def test_data_section_checks_the_cache_cap() -> None:
    from medseg.training.config import load_run_config

    assert load_run_config(None, {"data.cache_max_gb": 0}).data.cache_max_gb == 0.0
    with pytest.raises(MedsegError, match=r"data.cache_max_gb: expected >= 0"):
        load_run_config(None, {"data.cache_max_gb": -1})

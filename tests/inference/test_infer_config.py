"""``InferConfig`` from YAML: fields, overrides, errors naming the file and key, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from medseg.errors import MedsegError
from medseg.inference.config import (
    RESOLVED_NAME,
    InferConfig,
    load_infer_config,
    save_infer_config,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "infer.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_sets_fields_that_had_no_flag(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "folds: [0, 2]\ncheckpoint: last\nsigma_scale: 0.25\naccumulation: float16\n"
        "fp16_threshold_mvox: 8\nslab_mvox: 1\nprefetch: false\ncrf: true\n",
    )
    cfg = load_infer_config(path)
    assert cfg == InferConfig(
        folds=(0, 2),
        checkpoint="last",
        sigma_scale=0.25,
        accumulation="float16",
        fp16_threshold_mvox=8.0,
        slab_mvox=1.0,
        prefetch=False,
        crf=True,
    )
    assert load_infer_config(None) == InferConfig()
    assert load_infer_config(write(tmp_path, "")) == InferConfig()


def test_given_overrides_beat_the_yaml_and_none_is_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, "overlap: 0.25\nsw_batch_size: 2\nfolds: [1]\ntta: true\n")
    cfg = load_infer_config(
        path, {"sw_batch_size": 8, "folds": (), "tta": False, "overlap": None, "series": None}
    )
    assert (cfg.overlap, cfg.sw_batch_size, cfg.folds, cfg.tta) == (0.25, 8, (), False)


def test_unknown_key_gets_did_you_mean_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "overlapp: 0.3\n")
    with pytest.raises(MedsegError) as info:
        load_infer_config(path)
    assert str(info.value).startswith(f"{path}: infer: unknown key 'overlapp'")
    assert "(did you mean 'overlap'?)" in str(info.value)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("sw_batch_size: four\n", r"infer\.sw_batch_size: expected int, found 'four'"),
        ("folds: [0, x]\n", r"infer\.folds\[1\]: expected int, found 'x'"),
        ("postprocess: maybe\n", r"infer\.postprocess: expected one of \['auto', 'none'\]"),
        ("tta: 1\n", r"infer\.tta: expected bool, found 1"),
    ],
)
def test_wrong_type_names_the_key_and_the_file(tmp_path: Path, text: str, pattern: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MedsegError, match=pattern) as info:
        load_infer_config(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("overlap: 1.0\n", "overlap"),
        ("sw_batch_size: 0\n", "sw_batch_size"),
        ("slab_mvox: 0\n", "slab_mvox"),
        ("device: gpu\n", "device"),
        ("folds: [-1]\n", "folds"),
    ],
)
def test_out_of_range_value_fails_on_load(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MedsegError, match=rf"^{path}: infer\.{key}: expected"):
        load_infer_config(path)


def test_a_bad_override_is_not_blamed_on_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "overlap: 0.25\n")
    with pytest.raises(MedsegError, match=r"^infer\.overlap: expected 0 <= overlap < 1") as info:
        load_infer_config(path, {"overlap": 1.5})
    assert info.value.path is None


def test_resolved_config_is_written_and_reloads_equal(tmp_path: Path) -> None:
    cfg = InferConfig(folds=(0, 1), checkpoint="last", crf=False, series="2", prefetch=False)
    path = save_infer_config(cfg, tmp_path / "out")
    assert path == tmp_path / "out" / RESOLVED_NAME
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(data) == [f.name for f in dataclasses.fields(InferConfig)]  # top-level fields
    assert data["folds"] == [0, 1]
    assert load_infer_config(path) == cfg
    assert not [p for p in path.parent.iterdir() if p.name != RESOLVED_NAME]  # no temp files


def test_python_construction_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MedsegError, match=r"infer\.overlap"):
        InferConfig(overlap=1.0)
    with pytest.raises(MedsegError, match=r"infer\.postprocess"):
        InferConfig(postprocess="maybe")  # type: ignore[arg-type]
    with pytest.raises(MedsegError, match=r"infer\.sw_batch_size"):
        dataclasses.replace(InferConfig(), sw_batch_size=0)
    calls = []
    original = InferConfig.__post_init__

    def counting(self: InferConfig) -> None:
        calls.append(self)
        original(self)

    monkeypatch.setattr(InferConfig, "__post_init__", counting)
    load_infer_config(None, {"overlap": 0.25})
    assert len(calls) == 1  # from_dict does not check a second time


def test_predictor_does_not_revalidate(tiny_net, monkeypatch: pytest.MonkeyPatch) -> None:
    from medseg.inference.predictor import Predictor

    plans, net = tiny_net
    cfg = InferConfig(device="cpu", overlap=0.25)
    calls = []
    original = InferConfig.__post_init__
    monkeypatch.setattr(InferConfig, "__post_init__", lambda self: calls.append(original(self)))
    predictor = Predictor([net], plans, config=cfg)
    assert predictor.config is cfg and calls == []

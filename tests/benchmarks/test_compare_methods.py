"""The pure logic of ``benchmarks/compare_methods.py``: split agreement, row selection,
the reuse of the ``configuration/3d`` run, sidecar-free mask links and the table."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cm() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "compare_methods", ROOT / "benchmarks" / "compare_methods.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)
    return module


def test_split_agreement(cm: ModuleType) -> None:
    splits = [{"train": ["c", "d"], "val": ["b", "a"]}, {"train": ["a", "b"], "val": ["c", "d"]}]
    assert cm.split_agreement(["a", "b"], splits) is None  # order does not matter
    problem = cm.split_agreement(["a", "c"], splits)
    assert "extra ['b']" in problem and "missing ['c']" in problem
    assert "expected fold 0" in cm.split_agreement(["a"], [])


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (None, True),
        (["classic"], False),
        (["network"], True),
        (["unet"], True),
        (["network/unet"], True),
        (["sts_ct/*"], False),
        (["hippocampus/network/*"], True),
        (["segresnet", "2d"], False),
    ],
)
def test_selected(cm: ModuleType, patterns: list[str] | None, expected: bool) -> None:
    assert cm.selected("hippocampus/network/unet", patterns) is expected


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(
        train_minutes=3.0, auto_minutes=9.0, threads=2, smoke=False, work=tmp_path
    )


def test_default_network_row_reuses_the_3d_run(cm: ModuleType, tmp_path: Path) -> None:
    ctx = cm.Context(
        "hippocampus", tmp_path / "m.json", tmp_path, (1, 2), tmp_path, _args(tmp_path)
    )
    done = {
        "hippocampus/configuration/3d": {
            "id": "hippocampus/configuration/3d", "kind": "configuration", "name": "3d",
            "status": "ok", "error": "", "network": ["unet"], "dice": {"1": 0.8, "2": 0.7},
        }
    }  # fmt: skip
    row = cm.run_row(ctx, "network", "unet", ["--model", "unet"], done)
    assert row["id"] == "hippocampus/network/unet" and row["kind"] == "network"
    assert row["same_run_as"] == "hippocampus/configuration/3d"
    assert row["dice"] == {"1": 0.8, "2": 0.7}


def test_seeded_classic_methods_are_skipped_without_running(cm: ModuleType, tmp_path: Path) -> None:
    ctx = cm.Context("sts_ct", tmp_path / "m.json", tmp_path, (1,), tmp_path, _args(tmp_path))
    row = cm.run_row(ctx, "classic", "region-grow", [], {})
    assert row["status"] == "skipped" and "cheating" in row["error"]
    assert not (tmp_path / "logs").exists()  # no command was run


def test_masks_only_links_masks_without_sidecars(cm: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "classic_otsu"
    out.mkdir()
    for name in ("a.nii.gz", "a.json", "summary.json", "b.nii.gz"):
        (out / name).write_text(name)
    links = cm.masks_only(out)
    assert sorted(p.name for p in links.iterdir()) == ["a.nii.gz", "b.nii.gz"]
    assert (links / "b.nii.gz").read_text() == "b.nii.gz"


def test_markdown_table(cm: ModuleType) -> None:
    rows = [
        {"dataset": "hippocampus", "kind": "classic", "name": "otsu", "status": "ok",
         "error": "", "dice": {"1": 0.5, "2": 0.0}, "dice_mean": 0.25,
         "hd95_median_mm": {"1": 4.26, "2": None}, "hd95_n_inf": {"1": 0, "2": 3},
         "predict_seconds": 12.0},
        {"dataset": "sts_ct", "kind": "network", "name": "vnet", "status": "failed",
         "error": "train exit 1: a | b", "train_minutes": 3.5},
    ]  # fmt: skip
    lines = cm.markdown_table(rows).splitlines()
    assert len(lines) == 4 and lines[1].count("|") == lines[0].count("|")
    assert "| 0.500 / 0.000 | 0.250 | 4.3 / inf (3 inf) | - | 12.0 | ok |" in lines[2]
    assert lines[3].endswith("| 3.5 | - | failed: train exit 1: a / b |")
    assert lines[3].count("|") == lines[0].count("|")  # a "|" in an error cannot add a column

"""K-fold splits: deterministic, disjoint, covering, stored as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.data.splits import kfold_splits, read_splits, write_splits
from medseg.errors import MedsegError

IDS = [f"case_{i:03d}" for i in range(23)]


@pytest.mark.parametrize("n_folds", [2, 5, 23])
def test_each_case_validated_exactly_once(n_folds: int) -> None:
    splits = kfold_splits(IDS, n_folds=n_folds, seed=1)
    assert len(splits) == n_folds
    vals = [c for s in splits for c in s["val"]]
    assert sorted(vals) == sorted(IDS)
    sizes = [len(s["val"]) for s in splits]
    assert max(sizes) - min(sizes) <= 1
    for s in splits:
        assert set(s["train"]).isdisjoint(s["val"])
        assert sorted(s["train"] + s["val"]) == sorted(IDS)


def test_deterministic_and_independent_of_input_order() -> None:
    a = kfold_splits(IDS, n_folds=5, seed=3)
    b = kfold_splits(list(reversed(IDS)), n_folds=5, seed=3)
    assert a == b
    assert kfold_splits(IDS, n_folds=5, seed=4) != a
    assert kfold_splits(IDS, n_folds=5) == kfold_splits(IDS, n_folds=5)


@pytest.mark.parametrize("n_folds", [1, 0, 24])
def test_bad_fold_counts_raise(n_folds: int) -> None:
    with pytest.raises(MedsegError, match="n_folds"):
        kfold_splits(IDS, n_folds=n_folds)


def test_duplicate_ids_raise() -> None:
    with pytest.raises(MedsegError, match="case_001"):
        kfold_splits([*IDS, "case_001"], n_folds=3)


def test_round_trip(tmp_path: Path) -> None:
    splits = kfold_splits(IDS, n_folds=4, seed=9)
    path = write_splits(tmp_path / "run" / "splits.json", splits)
    assert read_splits(path) == splits
    assert [p.name for p in path.parent.iterdir()] == ["splits.json"]  # no temp file left


@pytest.mark.parametrize(
    "content",
    ["not json", json.dumps({"train": []}), json.dumps([{"train": ["a"], "val": ["a"]}])],
)
def test_read_malformed_raises_naming_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "splits.json"
    path.write_text(content)
    with pytest.raises(MedsegError) as err:
        read_splits(path)
    assert err.value.path == str(path)

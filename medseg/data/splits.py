"""Deterministic, seeded k-fold cross-validation splits, stored as JSON next to a run.

The JSON file is a list with one ``{"train": [...], "val": [...]}`` object per fold, the
format of nnU-Net's ``splits_final.json``, so splits can be exchanged with it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.io.atomic import atomic_write_text
from medseg.io.jsonfile import read_json

Split = dict[str, list[str]]


def kfold_splits(case_ids: Iterable[str], n_folds: int = 5, seed: int = 12345) -> list[Split]:
    """Split case ids into ``n_folds`` folds; each case is validated in exactly one fold.

    The ids are sorted first, so the result does not depend on their input order, then
    shuffled with ``numpy.random.default_rng(seed)`` and cut into folds whose sizes differ
    by at most one.

    Parameters
    ----------
    case_ids
        Unique case identifiers.
    n_folds
        Number of folds, at least 2 and at most the number of cases.
    seed
        Shuffle seed; the same ids and seed always give the same splits.

    Returns
    -------
    list of dict
        ``[{"train": [...], "val": [...]}, ...]``, one per fold, ids sorted inside each list.

    Raises
    ------
    MedsegError
        For duplicate ids, fewer than 2 folds, or more folds than cases.
    """
    ids = sorted(str(c) for c in case_ids)
    dupes = sorted(c for c, n in Counter(ids).items() if n > 1)
    if dupes:
        raise MedsegError(f"expected unique case ids for k-fold splits, found duplicates {dupes}")
    if n_folds < 2:
        raise MedsegError(f"expected n_folds >= 2 for cross-validation, found {n_folds}")
    if n_folds > len(ids):
        raise MedsegError(
            f"expected n_folds <= number of cases ({len(ids)}), found n_folds={n_folds}"
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = np.array_split(order, n_folds)
    splits = []
    for fold in folds:
        val = {ids[i] for i in fold}
        splits.append({"train": [c for c in ids if c not in val], "val": sorted(val)})
    return splits


def write_splits(path: str | os.PathLike[str], splits: list[Split]) -> Path:
    """Write splits as JSON (atomically) after checking their structure."""
    path = Path(path)
    _check(splits, path)
    return atomic_write_text(path, json.dumps(splits, indent=1) + "\n")


def read_splits(path: str | os.PathLike[str]) -> list[Split]:
    """Read splits written by :func:`write_splits` (or nnU-Net's ``splits_final.json``).

    Raises
    ------
    MedsegError
        If the file is missing, not JSON, or not a list of ``{"train", "val"}`` objects
        with disjoint train and validation ids.
    """
    path = Path(path)
    if not path.is_file():
        raise MedsegError("splits file not found", path)
    splits = read_json(path, what="a JSON splits file")
    _check(splits, path)
    return [{"train": list(s["train"]), "val": list(s["val"])} for s in splits]


def _check(splits: object, path: Path) -> None:
    if not isinstance(splits, list) or not splits:
        raise MedsegError("expected a non-empty list of folds", path)
    for n, fold in enumerate(splits):
        if not isinstance(fold, dict) or set(fold) < {"train", "val"}:
            raise MedsegError(f"fold {n}: expected an object with 'train' and 'val' lists", path)
        for key in ("train", "val"):
            if not isinstance(fold[key], list) or not all(isinstance(c, str) for c in fold[key]):
                raise MedsegError(f"fold {n}.{key}: expected a list of case id strings", path)
        both = sorted(set(fold["train"]) & set(fold["val"]))
        if both:
            raise MedsegError(f"fold {n}: cases in both train and val: {both}", path)

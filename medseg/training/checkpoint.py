"""Checkpoints: atomic writes, full training state, ``weights_only`` loading.

A checkpoint is a ``torch.save`` dict holding only tensors, numbers, strings, lists and
dicts, so ``torch.load(path, weights_only=True)`` reads it: ``model`` (state dict),
``optimizer``, ``scaler``, ``schedule`` (step and elapsed seconds that drive the
learning rate), ``epoch`` (epochs completed), ``best_metric``, ``ema_metric``, ``rng``
(python, numpy, torch, cuda states as tensors/lists) and ``plans`` (a plain dict).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.networks.registry import build_network
from medseg.training.plans import Plans, load_plans, plans_from_dict


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch (and CUDA) RNG states in ``weights_only``-safe types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(pystate), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    version, pystate, gauss = state["python"]
    random.setstate((version, tuple(pystate), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file, then rename it into place.

    A run killed mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    Raises
    ------
    MedsegError
        If the file is missing or not a medseg checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise MedsegError("checkpoint not found (was this fold trained?)", p)
    try:
        state = torch.load(p, map_location=device, weights_only=True)
    except (RuntimeError, OSError, EOFError) as exc:
        raise MedsegError(f"unreadable checkpoint: {exc}", p) from exc
    if not isinstance(state, dict) or "model" not in state:
        raise MedsegError("expected a medseg checkpoint with a 'model' entry", p)
    return state


def fold_dir(run_or_fold_dir: str | Path, fold: int | None = None) -> Path:
    """``RUN_DIR/fold_<k>`` (or the folder itself when it already is a fold folder)."""
    p = Path(run_or_fold_dir)
    if p.name.startswith("fold_") or fold is None:
        return p
    return p / f"fold_{fold}"


def load_model(
    run_or_fold_dir: str | Path,
    fold: int = 0,
    which: str = "best",
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, Plans]:
    """Rebuild a trained network for inference.

    Parameters
    ----------
    run_or_fold_dir
        A run directory (``fold`` selects ``fold_<k>``) or a ``fold_<k>`` directory.
    fold
        Fold index when a run directory is given.
    which
        ``"best"`` or ``"last"``.
    device
        Where to put the model.

    Returns
    -------
    (torch.nn.Module, Plans)
        The network in ``eval`` mode (deep supervision off) and the plans it was trained with.
    """
    if which not in ("best", "last"):
        raise MedsegError(f"checkpoint: expected 'best' or 'last', found {which!r}")
    fdir = fold_dir(run_or_fold_dir, fold)
    state = load_checkpoint(fdir / f"checkpoint_{which}.pt", device)
    if "plans" in state:
        plans = plans_from_dict(state["plans"])
    else:
        plans = load_plans(fdir.parent / "plans.json")
    model = build_network(plans.network, 1, plans.num_classes)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise MedsegError(f"checkpoint does not match its plans: {exc}", fdir) from exc
    model.to(device).eval()
    return model, plans

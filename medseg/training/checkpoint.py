"""Checkpoints: atomic writes, full training state, ``weights_only`` loading.

A checkpoint is a ``torch.save`` dict holding only tensors, numbers, strings, lists and
dicts, so ``torch.load(path, weights_only=True)`` reads it: ``model`` (state dict),
``optimizer``, ``scaler``, ``schedule`` (step and elapsed seconds that drive the
learning rate), ``epoch`` (epochs completed), ``best_metric``, ``ema_metric``, ``rng``
(python, numpy, torch, cuda states as tensors/lists) and ``plans`` (a plain dict).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.io.atomic import atomic_path


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

    A run killed mid-write leaves the previous checkpoint intact. The file gets the mode a
    plain ``open`` gives (``0o666`` minus the umask); see :func:`medseg.io.atomic.atomic_path`.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path

"""Loading networks for prediction from a run directory or a MONAI bundle directory.

Run directory (written by training)::

    RUN_DIR/plans.json  RUN_DIR/dataset.json  RUN_DIR/postprocessing.json (optional)
    RUN_DIR/fold_<k>/checkpoint_best.pt

Bundle directory (written by ``medseg bundle export``)::

    BUNDLE/configs/metadata.json  BUNDLE/configs/inference.json  BUNDLE/configs/plans.json
    BUNDLE/configs/postprocessing.json (optional)  BUNDLE/models/model.pt
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.networks.registry import build_network
from medseg.planning.plans import Plans, load_plans, plans_from_dict

logger = logging.getLogger(__name__)

_FOLD_RE = re.compile(r"^fold_(\d+)$")


@dataclass
class LoadedModels:
    """Networks (eval mode), their plans, the decided post-processing and an identity record."""

    models: list[nn.Module]
    plans: Plans
    postprocessing: Any | None = None
    identity: dict[str, Any] = field(default_factory=dict)


def is_bundle(path: Path) -> bool:
    """True for a MONAI bundle folder (``configs/metadata.json`` and ``models/``)."""
    return (path / "configs" / "metadata.json").is_file() and (path / "models").is_dir()


def is_run(path: Path) -> bool:
    """True for a medseg run folder (``plans.json`` and at least one ``fold_<k>``)."""
    return (path / "plans.json").is_file()


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (identifies the weights in sidecars)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def available_folds(run_dir: Path, which: str = "best") -> list[int]:
    """Fold numbers of ``run_dir`` that have ``fold_<k>/checkpoint_<which>.pt``, sorted."""
    folds = []
    for p in run_dir.iterdir() if run_dir.is_dir() else []:
        m = _FOLD_RE.match(p.name)
        if m and (p / f"checkpoint_{which}.pt").is_file():
            folds.append(int(m.group(1)))
    return sorted(folds)


def _read_weights_file(path: Path, what: str, device: str | torch.device) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never code."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, OSError, EOFError) as exc:
        raise MedsegError(f"unreadable {what}: {exc}", path) from exc


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
    state = _read_weights_file(p, "checkpoint", device)
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


def _load_fold(run_dir: Path, fold: int, which: str, device: torch.device) -> nn.Module:
    """One fold's network (see :func:`load_model`)."""
    model, _ = load_model(run_dir, fold=fold, which=which, device=device)
    return model


def load_postprocessing_file(path: Path) -> Any | None:
    """The post-processing decided after training, or ``None`` when ``path`` is absent."""
    if not path.is_file():
        return None
    from medseg.postprocessing import load_postprocessing

    return load_postprocessing(path)


def load_run(run_dir: Path, folds: Sequence[int], which: str, device: torch.device) -> LoadedModels:
    """Load folds of a run directory (``folds=()``: every trained fold)."""
    plans = load_plans(run_dir / "plans.json")
    present = available_folds(run_dir, which)
    chosen = list(folds) or present
    missing = [f for f in chosen if f not in present]
    if not chosen or missing:
        raise MedsegError(
            f"expected trained folds {missing or 'any'} (fold_<k>/checkpoint_{which}.pt), "
            f"found folds {present}",
            run_dir,
        )
    models = [_load_fold(run_dir, f, which, device) for f in chosen]
    identity = {
        "kind": "run",
        "path": str(run_dir.resolve()),
        "folds": chosen,
        "checkpoint": which,
        "weights_sha256": {
            str(f): file_digest(run_dir / f"fold_{f}" / f"checkpoint_{which}.pt") for f in chosen
        },
        "network": plans.network.name,
    }
    post = load_postprocessing_file(run_dir / "postprocessing.json")
    return LoadedModels(models, plans, post, identity)


def load_bundle(bundle: Path, device: torch.device) -> LoadedModels:
    """Load ``models/model.pt`` of a medseg-exported MONAI bundle with ``configs/plans.json``."""
    plans = load_plans(bundle / "configs" / "plans.json")
    weights = bundle / "models" / "model.pt"
    if not weights.is_file():
        raise MedsegError("expected the bundle weights models/model.pt, found none", bundle)
    state = _read_weights_file(weights, "weights", device)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model = build_network(plans.network, 1, plans.num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise MedsegError(f"weights do not match configs/plans.json: {exc}", weights) from exc
    meta = _read_json(bundle / "configs" / "metadata.json")
    identity = {
        "kind": "bundle",
        "path": str(bundle.resolve()),
        "name": meta.get("name", bundle.name),
        "version": meta.get("version", ""),
        "weights_sha256": {"model": file_digest(weights)},
        "network": plans.network.name,
    }
    post = load_postprocessing_file(bundle / "configs" / "postprocessing.json")
    return LoadedModels([model.to(device).eval()], plans, post, identity)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MedsegError(f"expected a JSON file: {exc}", path) from exc
    return data if isinstance(data, dict) else {}


def load_models(
    path: str | Path,
    *,
    folds: Sequence[int] = (),
    which: str = "best",
    device: torch.device | None = None,
    kind: str | None = None,
) -> LoadedModels:
    """Load a run directory or a bundle directory (dispatch on the folder's layout).

    Raises
    ------
    MedsegError
        When ``path`` is neither (the message says what each layout needs).
    """
    p = Path(path)
    device = device or torch.device("cpu")
    if kind in (None, "bundle") and is_bundle(p):
        if folds:
            logger.warning("%s: a bundle holds one model; ignoring folds %s", p, list(folds))
        return load_bundle(p, device)
    if kind in (None, "run") and is_run(p):
        return load_run(p, folds, which, device)
    raise MedsegError(
        "expected a run directory (plans.json, fold_<k>/checkpoint_best.pt) or a MONAI bundle "
        "(configs/metadata.json, configs/plans.json, models/model.pt)",
        p,
    )

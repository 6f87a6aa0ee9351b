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
import logging
import pickle
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.io.jsonfile import read_json
from medseg.networks.registry import build_network
from medseg.planning.configurations import is_auto_run, single_configuration_dir
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


_WEIGHTS = (
    "expected a PyTorch weights file (torch.save of tensors and plain containers, "
    "read with weights_only=True)"
)
# What ``torch.load(weights_only=True)`` raises, by torch version and kind of file: a pickle
# that needs a Python object (UnpicklingError), garbage or a foreign pickle (KeyError,
# UnpicklingError), an empty file (EOFError), a truncated archive (RuntimeError,
# zipfile.BadZipFile), a folder or unreadable file (OSError), odd payloads (ValueError,
# AttributeError, TypeError, ImportError, IndexError, MemoryError, OverflowError).
_LOAD_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    OSError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    AttributeError,
    TypeError,
    KeyError,
    ImportError,
    IndexError,
    MemoryError,
    OverflowError,
)


def _describe_load_error(path: Path, exc: BaseException) -> str:
    """What was found instead of a weights file, in a few words (no torch boilerplate)."""
    text = str(exc)
    blocked = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if blocked:
        return (
            f"a pickle that needs the Python object {blocked.group(1)} (refused: loading it "
            "could run code; re-save the weights with torch.save(model.state_dict()))"
        )
    if isinstance(exc, OSError):
        return f"a file that cannot be read ({exc.strerror or exc})"
    if isinstance(exc, EOFError) or (path.is_file() and path.stat().st_size == 0):
        return "an empty or truncated file"
    if isinstance(exc, pickle.UnpicklingError):
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\n\n", text, re.S)
        reason = f" ({detail.group(1).strip()})" if detail else ""
        return f"a pickle that is not a weights file{reason}"
    if isinstance(exc, KeyError):  # the first byte read as a pickle opcode
        return "a file that is neither a torch.save archive nor a pickle"
    first = text.strip().split(". ")[0][:160] if text.strip() else ""
    if isinstance(exc, zipfile.BadZipFile) or "zip archive" in text:
        return f"a damaged or truncated torch.save archive ({first})"
    return f"data torch cannot read ({type(exc).__name__}{': ' + first if first else ''})"


def _read_weights_file(path: Path, what: str, device: str | torch.device) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never code.

    Raises
    ------
    MedsegError
        Naming ``path`` for every way the load can fail (garbage, an empty or truncated
        file, a plain pickle, a pickle of Python objects, a folder, an unreadable file).
    """
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except _LOAD_ERRORS as exc:
        raise MedsegError(
            f"{what}: {_WEIGHTS}, found {_describe_load_error(path, exc)}", path
        ) from exc


def _state_dict_problem(exc: BaseException) -> str:
    """The first few lines of a ``load_state_dict`` error (missing keys, shape mismatches)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    details = [ln[:240] for ln in lines[1:4]] or [lines[0][:240] if lines else type(exc).__name__]
    more = f" (+{len(lines) - 4} more)" if len(lines) > 4 else ""
    return "; ".join(details) + more


def _load_weights(model: nn.Module, state: Any, path: Path, against: str) -> None:
    """``model.load_state_dict(state)``; a mismatch is a :class:`MedsegError` naming ``path``."""
    if not isinstance(state, dict):
        raise MedsegError(
            f"expected a state dict (parameter name -> tensor), found {type(state).__name__}", path
        )
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, ValueError) as exc:
        raise MedsegError(
            f"expected weights matching {against}, found: {_state_dict_problem(exc)}", path
        ) from exc


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
        found = (
            f"a dict with keys {sorted(map(str, state))[:8]}"
            if isinstance(state, dict)
            else f"a {type(state).__name__}"
        )
        raise MedsegError(
            f"expected a medseg checkpoint (a dict with a 'model' entry), found {found}", p
        )
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
        The network in ``eval`` mode (deep supervision off), built with
        ``plans.in_channels`` input channels, and the plans it was trained with.
    """
    if which not in ("best", "last"):
        raise MedsegError(f"checkpoint: expected 'best' or 'last', found {which!r}")
    fdir = fold_dir(run_or_fold_dir, fold)
    ckpt = fdir / f"checkpoint_{which}.pt"
    state = load_checkpoint(ckpt, device)
    if "plans" in state:
        plans = _checkpoint_plans(state["plans"], ckpt)
        against = "the plans stored in the checkpoint"
    else:
        plans = _read_plans(fdir.parent / "plans.json")
        against = str(fdir.parent / "plans.json")
    model = build_network(plans.network, plans.in_channels, plans.num_classes)
    _load_weights(model, state["model"], ckpt, f"{against}{_channels_note(plans)}")
    model.to(device).eval()
    return model, plans


def _channels_note(plans: Plans) -> str:
    """`` (2 input channels: CT, PET)`` for a multi-channel model, ``""`` for one channel."""
    if plans.in_channels == 1:
        return ""
    return f" ({plans.in_channels} input channels: {', '.join(plans.channel_names)})"


def _read_plans(path: Path) -> Plans:
    """:func:`load_plans`, its error saying what the file should have been."""
    try:
        return load_plans(path)
    except MedsegError as exc:
        raise MedsegError(
            f"expected the plans medseg train writes (a JSON object), found: {exc.message}",
            exc.path or path,
        ) from exc


def _checkpoint_plans(data: Any, ckpt: Path) -> Plans:
    """The plans a checkpoint carries; malformed ones are a :class:`MedsegError` naming it."""
    if not isinstance(data, dict):
        raise MedsegError(
            f"expected the checkpoint's 'plans' entry to be a mapping, found {type(data).__name__}",
            ckpt,
        )
    try:
        return plans_from_dict(data)
    except MedsegError as exc:
        raise MedsegError(f"checkpoint plans: {exc.message}", ckpt) from exc


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
    plans = _read_plans(run_dir / "plans.json")
    present = available_folds(run_dir, which)
    chosen = list(folds) or present
    missing = [f for f in chosen if f not in present]
    if not chosen or missing:
        wanted = f"folds {missing} (--folds)" if missing else "at least one trained fold"
        raise MedsegError(
            f"expected {wanted} with fold_<k>/checkpoint_{which}.pt, found "
            + (f"trained folds {present}" if present else "none")
            + _other_checkpoint_hint(run_dir, which, missing or None),
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


def _other_checkpoint_hint(run_dir: Path, which: str, folds: Sequence[int] | None) -> str:
    """`` (fold 0 has checkpoint_last.pt: use --checkpoint last)`` when that would help."""
    other = "last" if which == "best" else "best"
    have = [f for f in available_folds(run_dir, other) if folds is None or f in folds]
    if not have:
        return ""
    return f" (folds {have} have checkpoint_{other}.pt: use --checkpoint {other})"


def load_bundle(bundle: Path, device: torch.device) -> LoadedModels:
    """Load ``models/model.pt`` of a medseg-exported MONAI bundle with ``configs/plans.json``."""
    plans = _read_plans(bundle / "configs" / "plans.json")
    weights = bundle / "models" / "model.pt"
    if not weights.is_file():
        raise MedsegError("expected the bundle weights models/model.pt, found none", bundle)
    state = _read_weights_file(weights, "weights", device)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model = build_network(plans.network, plans.in_channels, plans.num_classes)
    _load_weights(model, state, weights, f"configs/plans.json{_channels_note(plans)}")
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
    data = read_json(path)
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
    if kind in (None, "bundle") and (p / "configs" / "metadata.json").is_file():
        if not (p / "models").is_dir():
            raise MedsegError(
                "expected a MONAI bundle with the weights models/model.pt, found no models/ "
                "folder (was the bundle copied without it?)",
                p,
            )
        if folds:
            logger.warning("%s: a bundle holds one model; ignoring folds %s", p, list(folds))
        return load_bundle(p, device)
    if kind in (None, "run") and is_run(p):
        return load_run(p, folds, which, device)
    if kind in (None, "run") and is_auto_run(p):
        return load_run(single_configuration_dir(p), folds, which, device)
    raise MedsegError(
        "expected a run directory (plans.json, fold_<k>/checkpoint_best.pt) or a MONAI "
        f"bundle (configs/metadata.json, configs/plans.json, models/model.pt), found {_found(p)}",
        p,
    )


def _found(p: Path) -> str:
    """What lies at ``p``, for the message of :func:`load_models`."""
    if not p.exists():
        return "nothing (no such file or folder)"
    if not p.is_dir():
        return "a file"
    try:
        names = sorted(c.name for c in p.iterdir() if not c.name.startswith("."))
    except OSError as exc:
        return f"a folder that cannot be listed ({exc.strerror or exc})"
    if not names:
        return "an empty folder"
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"a folder holding {shown}"

"""Where the ONNX export of a run's fold or a bundle's network lives, exported once.

Run directory: ``RUN_DIR/fold_<k>/model.onnx`` (``model_last.onnx`` for ``checkpoint_last.pt``),
written on first use and reused while its metadata ``medseg.weights_sha256`` matches the
checkpoint's digest (a retrained fold is exported again). Bundle: ``BUNDLE/models/model.onnx``
(written by ``medseg export-bundle``), never rewritten: predicting leaves its inputs as they
are. Where the file is missing or stale and the folder cannot be written (or is a bundle),
the export goes to ``$TMPDIR/medseg-onnx/<weights digest>.onnx`` instead.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from medseg.errors import MedsegError
from medseg.io.atomic import atomic_copy
from medseg.networks.loading import (
    LoadedModels,
    available_folds,
    file_digest,
    fold_dir,
    is_bundle,
    is_run,
    load_model,
    load_models,
)
from medseg.networks.onnx_export import export_onnx, is_current, plans_json, read_onnx_metadata
from medseg.planning.plans import Plans

logger = logging.getLogger(__name__)

BUNDLE_ONNX = Path("models") / "model.onnx"


def fold_onnx_path(run_dir: str | Path, fold: int, which: str = "best") -> Path:
    """``RUN_DIR/fold_<k>/model.onnx`` (``model_last.onnx`` for the last checkpoint)."""
    name = "model.onnx" if which == "best" else f"model_{which}.onnx"
    return fold_dir(run_dir, fold) / name


def temp_onnx_path(weights_sha256: str) -> Path:
    """The fallback cache file for weights ``weights_sha256`` (a folder that is not writable)."""
    return Path(tempfile.gettempdir()) / "medseg-onnx" / f"{weights_sha256}.onnx"


def _plans_match(path: Path, plans: Plans) -> bool:
    """True when the plans stored in ``path`` are ``plans`` (as JSON: tuples read as lists)."""
    stored = read_onnx_metadata(path).get("medseg.plans")
    return bool(stored == json.loads(json.dumps(plans_json(plans))))


def _current(path: Path, sha: str, plans: Plans) -> bool:
    return is_current(path, sha) and _plans_match(path, plans)


def _export_or_fallback(model: nn.Module, plans: Plans, path: Path, sha: str) -> Path:
    """Export to ``path``; to :func:`temp_onnx_path` when ``path``'s folder is read-only."""
    try:
        return export_onnx(model, plans, path, weights_sha256=sha)
    except PermissionError as exc:
        tmp = temp_onnx_path(sha)
        logger.warning("%s: cannot write the ONNX cache (%s); using %s", path, exc.strerror, tmp)
        if _current(tmp, sha, plans):
            return tmp
        return export_onnx(model, plans, tmp, weights_sha256=sha)


def cached_run_onnx(
    run_dir: str | Path,
    fold: int,
    which: str = "best",
    *,
    model: nn.Module | None = None,
    plans: Plans | None = None,
    weights_sha256: str | None = None,
) -> Path:
    """The ONNX export of one fold's checkpoint, exported now unless the cached one matches.

    Parameters
    ----------
    run_dir, fold, which
        The checkpoint ``RUN_DIR/fold_<k>/checkpoint_<which>.pt``.
    model, plans
        That checkpoint's network and plans when already loaded (else they are loaded).
    weights_sha256
        The checkpoint's :func:`~medseg.networks.loading.file_digest` when already known.

    Returns
    -------
    pathlib.Path
        :func:`fold_onnx_path` (or :func:`temp_onnx_path` for a read-only run folder).
    """
    ckpt = fold_dir(run_dir, fold) / f"checkpoint_{which}.pt"
    if not ckpt.is_file():
        raise MedsegError("expected a checkpoint to export to ONNX, found no file", ckpt)
    sha = weights_sha256 or file_digest(ckpt)
    if model is None or plans is None:
        model, plans = load_model(run_dir, fold=fold, which=which)
    path = fold_onnx_path(run_dir, fold, which)
    for candidate in (path, temp_onnx_path(sha)):
        if _current(candidate, sha, plans):
            logger.debug("%s: cached ONNX export of %s", candidate, ckpt)
            return candidate
    return _export_or_fallback(model, plans, path, sha)


def bundle_onnx(bundle: str | Path, model: nn.Module, plans: Plans, weights_sha256: str) -> Path:
    """``BUNDLE/models/model.onnx`` when it is the export of ``models/model.pt``; else an export
    into :func:`temp_onnx_path` (the bundle itself is never written)."""
    path = Path(bundle) / BUNDLE_ONNX
    if _current(path, weights_sha256, plans):
        return path
    found = "none" if not path.is_file() else "one of other weights or plans"
    logger.info(
        "%s: expected models/model.onnx of models/model.pt, found %s; exporting", bundle, found
    )
    tmp = temp_onnx_path(weights_sha256)
    if _current(tmp, weights_sha256, plans):
        return tmp
    return export_onnx(model, plans, tmp, weights_sha256=weights_sha256)


def onnx_files(loaded: LoadedModels) -> list[Path]:
    """One ONNX file per network of ``loaded`` (same order), exported where not cached.

    Raises
    ------
    MedsegError
        When ``loaded`` was not made by :func:`~medseg.networks.loading.load_models`.
    """
    ident = loaded.identity
    shas = ident.get("weights_sha256", {})
    if ident.get("kind") == "bundle":
        return [bundle_onnx(ident["path"], loaded.models[0], loaded.plans, shas["model"])]
    if ident.get("kind") != "run":
        raise MedsegError(
            "ONNX backends: expected models loaded from a run directory or a bundle, found "
            f"identity kind {ident.get('kind')!r}"
        )
    folds: Sequence[int] = ident["folds"]
    return [
        cached_run_onnx(
            ident["path"],
            f,
            ident["checkpoint"],
            model=model,
            plans=loaded.plans,
            weights_sha256=shas.get(str(f)),
        )
        for f, model in zip(folds, loaded.models, strict=True)
    ]


def export_model_onnx(
    model_dir: str | Path, out: str | Path, *, fold: int | None = None, force: bool = False
) -> Path:
    """``medseg export-onnx``: copy one fold's (cached) ONNX export to ``out``.

    Parameters
    ----------
    model_dir
        A run directory or a bundle.
    out
        The ``.onnx`` file to write; an existing file needs ``force``.
    fold
        The fold of a run (default: the lowest trained fold); ignored for a bundle.

    Raises
    ------
    MedsegError
        For an existing ``out`` without ``force``, a folder at ``out`` or an unknown fold.
    """
    dest = Path(out)
    if dest.is_dir():
        raise MedsegError("OUT: expected an .onnx file to write, found a folder", dest)
    if dest.exists() and not force:
        raise MedsegError("OUT: expected a new file, found one (use --force to replace it)", dest)
    if dest.suffix.lower() != ".onnx":
        raise MedsegError(f"OUT: expected a file name ending in .onnx, found {dest.name!r}", dest)
    folds: tuple[int, ...] = () if fold is None else (fold,)
    if not is_bundle(Path(model_dir)) and is_run(Path(model_dir)):
        trained = available_folds(Path(model_dir))
        if fold is not None and fold not in trained:
            raise MedsegError(
                f"--fold {fold}: expected one of the trained folds {trained} "
                "(fold_<k>/checkpoint_best.pt)",
                model_dir,
            )
        folds = (fold,) if fold is not None else tuple(trained[:1])  # the lowest trained fold
    loaded = load_models(model_dir, folds=folds, which="best")
    source = onnx_files(loaded)[0]
    if source.resolve() != dest.resolve():
        atomic_copy(source, dest)
    return dest

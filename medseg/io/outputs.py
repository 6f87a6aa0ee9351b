"""Where a command may write: one check of an output folder, run before any work starts.

``medseg predict --output``, ``medseg evaluate --out`` and ``medseg export-bundle OUT_DIR``
call :func:`check_output_dir` first, so a bad output location is refused with one message
naming the flag and the path, before a model is loaded or a case is read, instead of a
traceback after the work (or, for a read-only folder, a traceback from the summary writer).

Rules
-----
* The output must be a folder or not exist yet; an existing *file* is refused.
* The output must not be an input, nor lie inside one: masks written into a scan folder mix
  with the scans (a second run would find them as cases) and every input must stay
  byte-identical. Write next to the inputs instead (``--input scans/ --output masks/``).
* The output must not be the folder that holds an input *file*: ``--input ct.nii.gz
  --output .`` would write the mask ``ct.nii.gz`` over the scan.
* A command that *replaces* the whole output folder (``export-bundle --force``) also refuses
  an output that holds an input, which the replacement would delete.
* The folder (or, when it does not exist yet, its nearest existing parent, where it will be
  created) must be a writable folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from medseg.errors import MedsegError

PathLike = str | os.PathLike[str]


def _inside(child: Path, parent: Path) -> bool:
    """True when ``child`` is ``parent`` or lies below it (both resolved)."""
    return child == parent or parent in child.parents


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def _check_inputs(
    given: Path, flag: str, inputs: Iterable[tuple[str, PathLike | None]], replace: bool
) -> None:
    out = given.resolve()
    for in_flag, in_path in inputs:
        if in_path is None:
            continue
        src = Path(in_path).resolve()
        if src.is_file() and out == src.parent:
            raise MedsegError(
                f"{flag}: expected a folder other than the one holding {in_flag} ({src}), "
                f"found that folder: outputs there can overwrite the input (a scan "
                f"{src.name} gets the mask {src.name.split('.')[0]}.nii.gz); choose a "
                "separate folder",
                given,
            )
        if _inside(out, src):
            found = f"{in_flag} itself" if out == src else f"a folder inside {in_flag} ({src})"
            raise MedsegError(
                f"{flag}: expected a folder separate from {in_flag}, found {found}: outputs "
                "would mix with the inputs; choose a separate folder",
                given,
            )
        if replace and _inside(src, out):
            raise MedsegError(
                f"{flag}: expected a folder that does not hold {in_flag} ({src}), found "
                f"{in_flag} inside it: replacing it would delete that input; choose a separate "
                "folder",
                given,
            )


def check_output_dir(
    path: PathLike,
    *,
    flag: str,
    inputs: Iterable[tuple[str, PathLike | None]] = (),
    replace: bool = False,
) -> Path:
    """Refuse an output folder that cannot or must not be written; create nothing.

    Parameters
    ----------
    path
        The output folder (it may not exist yet).
    flag
        The option or argument that named it (``--output``, ``--out``, ``OUT_DIR``); every
        message starts with it.
    inputs
        ``(flag, path)`` of the command's inputs (``None`` paths are skipped); the output
        may be neither one of them nor inside one.
    replace
        The command replaces the whole folder: an output holding an input is refused too.

    Returns
    -------
    pathlib.Path
        ``path`` as given.

    Raises
    ------
    MedsegError
        Naming ``flag`` and the path: an existing file, a folder that is or lies inside an
        input (or holds one, with ``replace``), a parent that is a file, or a folder that
        is not writable.
    """
    given = Path(path)
    out = given.resolve()
    if out.exists() and not out.is_dir():
        raise MedsegError(f"{flag}: expected a folder, found an existing file", given)
    _check_inputs(given, flag, inputs, replace)
    base = _nearest_existing(out)
    if not base.is_dir():
        raise MedsegError(
            f"{flag}: expected a folder path, found that {base} is a file, not a folder", given
        )
    if not os.access(base, os.W_OK | os.X_OK):
        what = "the folder" if base == out else f"its parent {base}"
        raise MedsegError(
            f"{flag}: expected a writable folder, found that {what} is not writable "
            "(read-only, or owned by another user)",
            given,
        )
    return given

"""Atomic file writing: a hidden temporary file in the destination folder, then a rename.

Every file medseg writes (masks, checkpoints, cache entries, reports, summaries, bundles)
goes through :func:`atomic_path` or :func:`atomic_write`, so a reader never sees a
half-written file and a write that fails (an exception, ``KeyboardInterrupt``, a full disk)
leaves the previous file, if any, byte-identical and no temporary file behind. A process
killed with SIGKILL mid-write can leave a hidden ``.<name>.<token>.part<suffix>`` file; the
destination is still intact.

The temporary file is created with ``os.open(..., 0o666)``, so the kernel applies the
process umask (and any default ACL) exactly as it does for a plain ``open(path, "w")``; the
umask is never read or changed (changing it is process-wide and races with other threads).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TextIO, overload

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Suffixes that qualify the one before them (``.nii.gz``): the temporary name keeps both.
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_ATTEMPTS = 100


def temp_suffix(path: Path) -> str:
    """The suffix a temporary file for ``path`` must keep (``.nii.gz``, ``.npz``, ``.png``).

    Writers such as nibabel, ``np.savez`` and matplotlib choose the format (or append an
    extension) from the file name, so the temporary name ends with the destination's suffix.
    """
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() in COMPRESSION_SUFFIXES:
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.part{temp_suffix(path)}")


def _create_temp_file(path: Path) -> Path:
    """Create an empty hidden file next to ``path`` with the mode a plain ``open`` gives."""
    for _ in range(_ATTEMPTS):
        tmp = _temp_name(path)
        try:
            fd = os.open(tmp, _FILE_FLAGS, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file next to {path}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """``fsync`` a folder so a rename in it is durable; skipped where the OS cannot."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path, mode: int) -> None:
    """Make ``tmp`` durable, give it its creation mode back and rename it onto ``path``."""
    _fsync_file(tmp)
    if tmp.stat().st_mode & 0o7777 != mode:
        os.chmod(tmp, mode)  # a writer that replaced the file may have changed its mode
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` when the block succeeds.

    For writers that need a file name (``torch.save``, ``np.savez``, ``nib.save``,
    ``Figure.savefig``, ``Dataset.save_as``). The temporary file exists (empty) when the
    block starts, is hidden (``.<name>.<token>.part<suffix>``), lives in the destination
    folder (created if missing) so the rename is atomic, and ends with the destination's
    suffix (:func:`temp_suffix`).

    Parameters
    ----------
    path
        The destination file.

    Yields
    ------
    pathlib.Path
        The temporary file to write.

    Notes
    -----
    On success the file is fsynced, keeps the mode a plain ``open`` would have given it
    (``0o666`` minus the umask) and replaces ``path``. On any exception (including
    ``KeyboardInterrupt``) the temporary file is removed and ``path`` is left untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_file(dest)
    try:
        mode = tmp.stat().st_mode & 0o7777
        yield tmp
        _commit(tmp, dest, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _atomic_file(path: PathLike, mode: str, encoding: str) -> Iterator[IO[Any]]:
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports mode 'w' or 'wb', found {mode!r}")
    with atomic_path(path) as tmp:
        if mode == "w":
            with open(tmp, "w", encoding=encoding) as text:
                yield text
        else:
            with open(tmp, "wb") as binary:
                yield binary


@overload
def atomic_write(
    path: PathLike, mode: Literal["wb"] = "wb", *, encoding: str = "utf-8"
) -> contextlib.AbstractContextManager[BinaryIO]: ...
@overload
def atomic_write(
    path: PathLike, mode: Literal["w"], *, encoding: str = "utf-8"
) -> contextlib.AbstractContextManager[TextIO]: ...
def atomic_write(
    path: PathLike, mode: Literal["w", "wb"] = "wb", *, encoding: str = "utf-8"
) -> contextlib.AbstractContextManager[IO[Any]]:
    """Open a temporary file for writing; it replaces ``path`` when the block succeeds.

    Parameters
    ----------
    path
        The destination file (its folder is created).
    mode
        ``"wb"`` (binary) or ``"w"`` (text).
    encoding
        Text encoding for ``mode="w"``.

    Returns
    -------
    contextlib.AbstractContextManager
        Yields the open file object. See :func:`atomic_path` for what happens on success
        (fsync, umask-respecting mode, rename) and on failure (temporary file removed,
        ``path`` untouched).

    Examples
    --------
    >>> with atomic_write(out / "summary.json", "w") as fh:  # doctest: +SKIP
    ...     json.dump(summary, fh)
    """
    return _atomic_file(path, mode, encoding)


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; return ``path`` as a :class:`~pathlib.Path`."""
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path`` as a :class:`~pathlib.Path`."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_copy(src: PathLike, dst: PathLike) -> Path:
    """Copy the contents of ``src`` to ``dst`` atomically (mode from the umask, not ``src``)."""
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    return Path(dst)


def _create_temp_dir(path: Path) -> Path:
    for _ in range(_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            tmp.mkdir(0o777)  # the umask applies, as for a plain mkdir
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temporary folder next to {path}")


def _swap_in(tmp: Path, dest: Path) -> Path | None:
    """Rename ``tmp`` onto ``dest``; an existing ``dest`` is moved aside first (returned)."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.old")
        dest.rename(old)
    try:
        tmp.rename(dest)
    except BaseException:
        if old is not None:
            old.rename(dest)
        raise
    _fsync_dir(dest.parent)
    return old


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder to fill; it replaces the folder ``path`` on success.

    The temporary folder sits next to ``path`` and gets the mode a plain ``mkdir`` gives.
    An existing ``path`` is renamed aside, deleted once the new folder is in place, and
    restored if that rename fails. On any exception the temporary folder is deleted and
    ``path`` is left as it was.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_dir(dest)
    try:
        yield tmp
        old = _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is None:
        return
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)

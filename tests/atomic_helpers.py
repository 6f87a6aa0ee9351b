"""Helpers for testing that writers are atomic: break a write midway, compare folders.

``raise_after(real)`` wraps a serializer (``torch.save``, ``np.savez``, ``nib.save``,
``Figure.savefig``) so it writes its whole output to the temporary file and then raises;
``tear_text_writes(monkeypatch)`` makes every text write of :mod:`medseg.io.atomic` (all
JSON/CSV/YAML/Markdown/HTML outputs) write half of its text and then raise.
``folder_state`` snapshots a folder tree (names and bytes) so a test can assert that a
failed write left the old files byte-identical and no temporary file behind.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import medseg.io.atomic


class DiskFullError(OSError):
    """The error injected into writes."""

    def __init__(self) -> None:
        super().__init__(28, "No space left on device (injected by the test)")


def raise_after(real: Callable[..., Any]) -> Callable[..., Any]:
    """``real`` wrapped to run fully (writing the temporary file) and then raise."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise DiskFullError()

    return broken


def write_half_and_raise(file_arg: int = 0) -> Callable[..., Any]:
    """A serializer stand-in writing a few bytes to its ``file_arg``-th argument, then raising."""

    def broken(*args: Any, **_: Any) -> Any:
        with open(args[file_arg], "wb") as fh:
            fh.write(b"half a file")
        raise DiskFullError()

    return broken


class _TornFile:
    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def write(self, data: Any) -> int:
        self._fh.write(data[: max(1, len(data) // 2)])
        self._fh.flush()
        raise DiskFullError()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _TornFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def tear_text_writes(monkeypatch: pytest.MonkeyPatch, *, skip: int = 0) -> list[Path]:
    """Make text files opened by :mod:`medseg.io.atomic` fail halfway through a write.

    The first ``skip`` text files are written normally. Returns the list of temporary files
    opened so far (the last one is the torn file).
    """
    real_open = builtins.open
    opened: list[Path] = []

    def torn_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(file, mode, *args, **kwargs)
        if mode != "w":
            return fh
        opened.append(Path(file))
        return _TornFile(fh) if len(opened) > skip else fh

    monkeypatch.setattr(medseg.io.atomic, "open", torn_open, raising=False)
    return opened


def always_raise(*args: Any, **kwargs: Any) -> Any:
    """A serializer stand-in that raises before writing anything."""
    raise DiskFullError()


def break_write(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, how: str, *, file_arg: int = 0
) -> None:
    """Make ``owner.name`` (a serializer) fail in one of the ways a real write fails.

    ``how``: ``after-full-write`` (runs, then raises), ``half-written`` (writes a few bytes to
    its ``file_arg``-th argument, then raises), ``serializer-raises`` (raises at once) or
    ``torn-write`` (the serializer runs; the text write of :mod:`medseg.io.atomic` tears).
    """
    if how == "torn-write":
        tear_text_writes(monkeypatch)
        return
    broken = {
        "after-full-write": lambda: raise_after(getattr(owner, name)),
        "half-written": lambda: write_half_and_raise(file_arg),
        "serializer-raises": lambda: always_raise,
    }[how]()
    monkeypatch.setattr(owner, name, broken)


def folder_state(root: Path) -> dict[str, bytes | None]:
    """``{relative path: bytes}`` of every file under ``root`` (folders map to ``None``)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def temp_leftovers(root: Path) -> list[Path]:
    """Hidden ``.part``/``.old`` files or folders left under ``root`` by atomic writes."""
    return [p for p in root.rglob(".*") if ".part" in p.name or p.name.endswith(".old")]

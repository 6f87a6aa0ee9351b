"""The one atomic writer: content lands, modes follow the umask, failures leave no trace."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from atomic_helpers import DiskFullError, folder_state

from medseg.io.atomic import (
    atomic_copy,
    atomic_directory,
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    temp_suffix,
)


@pytest.fixture
def set_umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask inside a test; the original one is restored afterwards."""
    original = os.umask(0o022)
    os.umask(original)
    yield os.umask
    os.umask(original)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_text(path: Path) -> None:
    with atomic_write(path, "w") as fh:
        fh.write("text ü\n")


def _write_binary(path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(b"\x00binary")


def _write_by_name(path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"by name")


WRITERS = {"text": _write_text, "binary": _write_binary, "path": _write_by_name}


def test_content_lands_and_parent_is_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    _write_text(out / "t.txt")
    _write_binary(out / "b.bin")
    _write_by_name(out / "p.bin")
    assert atomic_write_text(out / "w.json", '{"x": 1}') == out / "w.json"
    assert atomic_write_bytes(str(out / "w.bin"), b"\x01\x02") == out / "w.bin"
    assert atomic_copy(out / "w.bin", out / "c.bin") == out / "c.bin"
    assert (out / "t.txt").read_text(encoding="utf-8") == "text ü\n"
    assert (out / "b.bin").read_bytes() == b"\x00binary"
    assert (out / "p.bin").read_bytes() == b"by name"
    assert (out / "w.json").read_text() == '{"x": 1}'
    assert (out / "c.bin").read_bytes() == b"\x01\x02"
    assert sorted(p.name for p in out.iterdir()) == [
        "b.bin",
        "c.bin",
        "p.bin",
        "t.txt",
        "w.bin",
        "w.json",
    ]


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    atomic_write_text(path, "old, and longer than the new text")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask(
    tmp_path: Path, set_umask: Callable[[int], None], kind: str, umask: int, expected: int
) -> None:
    set_umask(umask)
    path = tmp_path / "out.bin"
    WRITERS[kind](path)
    assert _mode(path) == expected
    with open(tmp_path / "plain", "w"):  # what a plain open() gives
        pass
    assert _mode(tmp_path / "plain") == expected


def test_replacing_a_private_file_gives_the_umask_mode(
    tmp_path: Path, set_umask: Callable[[int], None]
) -> None:
    set_umask(0o022)
    path = tmp_path / "x.txt"
    path.write_text("old")
    path.chmod(0o600)
    atomic_write_text(path, "new")
    assert _mode(path) == 0o644


def test_the_umask_is_never_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_umask(mask: int) -> int:
        raise AssertionError("os.umask must not be called by a write")

    monkeypatch.setattr(os, "umask", no_umask)
    atomic_write_text(tmp_path / "x.txt", "x")
    with atomic_directory(tmp_path / "folder") as tmp:
        (tmp / "f").write_text("f")
    assert (tmp_path / "folder" / "f").is_file()


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("existing", [True, False], ids=["old-file", "no-file"])
@pytest.mark.parametrize("error", [DiskFullError, KeyboardInterrupt])
def test_a_failed_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, kind: str, existing: bool, error: type[BaseException]
) -> None:
    path = tmp_path / "case.nii.gz"
    if existing:
        path.write_bytes(b"old content \x00\xff")
    before = folder_state(tmp_path)

    def partial(fh_or_path: object) -> None:
        if isinstance(fh_or_path, Path):
            fh_or_path.write_bytes(b"partial")
        elif kind == "text":
            fh_or_path.write("partial")  # type: ignore[attr-defined]
            fh_or_path.flush()  # type: ignore[attr-defined]
        else:
            fh_or_path.write(b"partial")  # type: ignore[attr-defined]
            fh_or_path.flush()  # type: ignore[attr-defined]
        raise error()

    with pytest.raises(error):
        if kind == "path":
            with atomic_path(path) as tmp:
                partial(tmp)
        else:
            with atomic_write(path, "w" if kind == "text" else "wb") as fh:
                partial(fh)
    assert folder_state(tmp_path) == before  # old bytes intact (or absent), no temp file


def test_a_failed_rename_leaves_no_temp(tmp_path: Path) -> None:
    (tmp_path / "dir.txt").mkdir()  # a folder where the file should go: os.replace fails
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "dir.txt", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["dir.txt"]


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("case.nii.gz", ".nii.gz"),
        ("case.nii", ".nii"),
        ("entry_1.2.npz", ".npz"),
        ("fig.png", ".png"),
        ("model.ts", ".ts"),
        ("arch.tar.xz", ".tar.xz"),
        ("LICENSE", ""),
    ],
)
def test_temp_file_is_hidden_beside_the_target_with_its_suffix(
    tmp_path: Path, name: str, suffix: str
) -> None:
    assert temp_suffix(Path(name)) == suffix
    with atomic_path(tmp_path / name) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(f".{name}.") and tmp.name.endswith(".part" + suffix)
        assert tmp.is_file() and tmp.stat().st_size == 0
        tmp.write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_rejects_other_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):  # type: ignore[call-overload]
        pass
    assert list(tmp_path.iterdir()) == []


def test_directory_replaces_old_folder(tmp_path: Path, set_umask: Callable[[int], None]) -> None:
    set_umask(0o022)
    out = tmp_path / "bundle"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "old.txt").write_text("old")
    with atomic_directory(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".bundle.")
        (tmp / "new.txt").write_text("new")
    assert folder_state(tmp_path) == {"bundle": None, "bundle/new.txt": b"new"}
    assert _mode(out) == 0o755


@pytest.mark.parametrize("existing", [True, False], ids=["old-folder", "no-folder"])
def test_directory_failure_keeps_old_folder(tmp_path: Path, existing: bool) -> None:
    out = tmp_path / "bundle"
    if existing:
        out.mkdir()
        (out / "model.pt").write_bytes(b"old weights")
    before = folder_state(tmp_path)
    with pytest.raises(KeyboardInterrupt), atomic_directory(out) as tmp:
        (tmp / "model.pt").write_bytes(b"half")
        raise KeyboardInterrupt
    assert folder_state(tmp_path) == before

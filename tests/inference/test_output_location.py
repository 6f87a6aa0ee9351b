"""``check_output_dir``: the one check of an output folder that predict, evaluate and
export-bundle run before any work (issue #21)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medseg.errors import MedsegError
from medseg.io.outputs import check_output_dir


def test_a_new_or_existing_folder_is_accepted_and_nothing_is_created(tmp_path: Path) -> None:
    inp = tmp_path / "scans"
    inp.mkdir()
    new = tmp_path / "a" / "b" / "masks"
    assert check_output_dir(new, flag="--output", inputs=[("--input", inp)]) == new
    assert not (tmp_path / "a").exists()
    assert check_output_dir(tmp_path, flag="--output", inputs=[("--input", inp)]) == tmp_path
    # an output that holds an input is fine unless the command replaces the whole folder
    with pytest.raises(MedsegError, match=r"OUT_DIR: expected a folder that does not hold"):
        check_output_dir(tmp_path, flag="OUT_DIR", inputs=[("RUN_DIR", inp)], replace=True)


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("file", "expected a folder, found an existing file"),
        ("same", "found --input itself"),
        ("inside", "found a folder inside --input"),
        ("symlink-to-input", "found --input itself"),
        ("under-a-file", "is a file, not a folder"),
        ("folder-of-an-input-file", "other than the one holding --model"),
    ],
)
def test_bad_locations_name_the_flag_and_the_path(tmp_path: Path, where: str, says: str) -> None:
    inp = tmp_path / "scans"
    inp.mkdir()
    (tmp_path / "f.txt").write_text("x")
    out = {
        "file": tmp_path / "f.txt",
        "same": inp,
        "inside": inp / "masks",
        "symlink-to-input": tmp_path / "link",
        "under-a-file": tmp_path / "f.txt" / "masks",
        "folder-of-an-input-file": inp,
    }[where]
    model = None
    if where == "folder-of-an-input-file":
        model, inp = inp / "model.pt", tmp_path / "elsewhere"
        model.write_bytes(b"")
    if where == "symlink-to-input":
        out.symlink_to(inp, target_is_directory=True)
    with pytest.raises(MedsegError, match=says) as info:
        check_output_dir(out, flag="--output", inputs=[("--input", inp), ("--model", model)])
    assert str(info.value).startswith(f"{out}: --output: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(MedsegError, match="--out: expected a writable folder"):
            check_output_dir(ro, flag="--out")
        with pytest.raises(MedsegError, match=r"its parent .* is not writable"):
            check_output_dir(ro / "report", flag="--out")
    finally:
        ro.chmod(0o755)


def test_not_writable_as_reported_by_the_os(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a read-only mount reports, even for root."""
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False)
    with pytest.raises(MedsegError, match="--output: expected a writable folder"):
        check_output_dir(tmp_path, flag="--output")

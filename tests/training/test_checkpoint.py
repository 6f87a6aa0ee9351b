"""Checkpoints are written atomically and get the mode a plain ``open`` gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from atomic_helpers import DiskFullError, break_write, folder_state

from medseg.training.checkpoint import save_checkpoint


def _state(value: float) -> dict[str, object]:
    return {"model": {"w": torch.full((2, 2), value)}, "epoch": int(value)}


@pytest.mark.parametrize("existing", [True, False], ids=["old-file", "no-file"])
@pytest.mark.parametrize("how", ["after-full-write", "half-written"])
def test_failed_save_keeps_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool, how: str
) -> None:
    path = tmp_path / "fold_0" / "checkpoint_last.pt"
    path.parent.mkdir()
    if existing:
        save_checkpoint(_state(1.0), path)
    before = folder_state(tmp_path)
    break_write(monkeypatch, torch, "save", how, file_arg=1)
    with pytest.raises(DiskFullError):
        save_checkpoint(_state(2.0), path)
    assert folder_state(tmp_path) == before  # byte-identical (or absent), no temp file
    if existing:
        assert torch.load(path, weights_only=True)["epoch"] == 1


def test_interrupted_save_keeps_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(_state(1.0), tmp_path / "checkpoint_best.pt")
    before = folder_state(tmp_path)

    def interrupted(obj: object, f: object, *args: object, **kwargs: object) -> None:
        Path(str(f)).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(2.0), path)
    assert folder_state(tmp_path) == before


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoint_mode_follows_umask(tmp_path: Path, umask: int, expected: int) -> None:
    # checkpoints used to be created 0o600 (the tempfile.mkstemp default) whatever the umask
    original = os.umask(umask)
    try:
        path = save_checkpoint(_state(1.0), tmp_path / "checkpoint_last.pt")
    finally:
        os.umask(original)
    assert stat.S_IMODE(path.stat().st_mode) == expected
    assert torch.load(path, weights_only=True)["epoch"] == 1

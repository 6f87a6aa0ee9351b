"""Every weights file is read by ``torch.load(weights_only=True)``, and every way that can fail
is a ``MedsegError`` naming the file (issue #21)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from medseg.errors import MedsegError
from medseg.networks import loading
from medseg.networks.loading import load_checkpoint, load_models


class Opaque:
    """A class a weights file must not need."""


def _write(path: Path, kind: str) -> None:
    if kind == "garbage":
        path.write_bytes(b"\x80\x02\x03garbage" * 7)
    elif kind == "text":
        path.write_text("checkpoint_best.pt\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "plain-pickle":
        path.write_bytes(pickle.dumps({"model": {}}))
    elif kind == "custom-class":
        torch.save({"model": {}, "x": Opaque()}, path)
    elif kind == "truncated":
        torch.save({"model": {"w": torch.zeros(64, 64)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "folder":
        path.mkdir()


KINDS = ["garbage", "text", "empty", "plain-pickle", "custom-class", "truncated", "folder"]


@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_checkpoints_are_medseg_errors(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "checkpoint_best.pt"
    _write(path, kind)
    if kind == "folder":  # load_checkpoint wants a file; the reader itself names it too
        with pytest.raises(MedsegError, match="checkpoint not found"):
            load_checkpoint(path)
        with pytest.raises(MedsegError, match="expected a PyTorch weights file") as info:
            loading._read_weights_file(path, "checkpoint", "cpu")
    else:
        with pytest.raises(MedsegError, match="expected a PyTorch weights file") as info:
            load_checkpoint(path)
    assert info.value.path == str(path)
    assert "Traceback" not in str(info.value) and len(str(info.value)) < 600


def test_weights_only_is_always_on(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medseg.bundle import export_bundle

    bundle = export_bundle(run_dir, tmp_path / "bundle")
    calls: list[dict[str, Any]] = []
    real = torch.load

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording)
    load_models(run_dir)
    load_models(bundle)
    assert len(calls) == 2 and all(c.get("weights_only") is True for c in calls)


def test_checkpoint_contents_that_do_not_fit(run_dir: Path) -> None:
    ckpt = run_dir / "fold_0" / "checkpoint_best.pt"
    state = torch.load(ckpt, weights_only=True)
    torch.save([1, 2, 3], ckpt)
    with pytest.raises(MedsegError, match=r"a dict with a 'model' entry\), found a list"):
        load_models(run_dir)
    torch.save({**state, "plans": "unet"}, ckpt)
    with pytest.raises(MedsegError, match="'plans' entry to be a mapping") as info:
        load_models(run_dir)
    assert info.value.path == str(ckpt)
    torch.save({**state, "model": [1.0]}, ckpt)
    with pytest.raises(MedsegError, match="expected a state dict"):
        load_models(run_dir)
    many = {f"extra.{i}": torch.zeros(1) for i in range(50)}
    torch.save({**state, "model": {**state["model"], **many}}, ckpt)
    with pytest.raises(MedsegError, match="Unexpected key") as info:
        load_models(run_dir)
    assert info.value.path == str(ckpt) and len(str(info.value)) < 1200


def test_only_last_checkpoints_hint_at_the_flag(run_dir: Path) -> None:
    fold = run_dir / "fold_0"
    (fold / "checkpoint_best.pt").rename(fold / "checkpoint_last.pt")
    with pytest.raises(MedsegError, match="use --checkpoint last"):
        load_models(run_dir)
    assert load_models(run_dir, which="last").identity["folds"] == [0]

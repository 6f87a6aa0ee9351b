"""A real ``medseg train`` process killed with SIGKILL mid-epoch resumes to the same weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_cli import train_cli_args

from medseg.networks.loading import load_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

EPOCHS = 4


def _command(tiny_cohort: Path, tmp_path: Path, out: Path, *extra: str) -> list[str]:
    args = train_cli_args(tiny_cohort, tmp_path, out, epochs=EPOCHS, iterations=12)
    return [sys.executable, "-m", "medseg", *args, "--deterministic", *extra]


def _epochs_logged(run: Path) -> int:
    log = run / "fold_0" / "log.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.is_file() else 0


def _kill_during_second_epoch(cmd: list[str], run: Path, timeout: float = 120.0) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while _epochs_logged(run) < 1:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.02)
        time.sleep(0.15)  # into the steps of the next epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(
    tiny_cohort: Path, tmp_path: Path
) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = subprocess.run(
        _command(tiny_cohort, tmp_path, full), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr

    _kill_during_second_epoch(_command(tiny_cohort, tmp_path, killed), killed)
    at_kill = _epochs_logged(killed)
    assert 1 <= at_kill < EPOCHS
    # whatever the kill interrupted, no temporary or half-written checkpoint is left behind
    ck = load_checkpoint(killed / "fold_0" / "checkpoint_last.pt")
    assert 1 <= ck["epoch"] <= at_kill + 1
    before = ck["history"]

    resumed = subprocess.run(
        _command(tiny_cohort, tmp_path, killed, "--resume"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    a = load_checkpoint(full / "fold_0" / "checkpoint_last.pt")
    b = load_checkpoint(killed / "fold_0" / "checkpoint_last.pt")
    assert a["epoch"] == b["epoch"] == EPOCHS
    assert a["schedule"]["step"] == b["schedule"]["step"]
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["best_metric"] == pytest.approx(b["best_metric"])
    # it continued rather than started over: the killed process's epochs (with their own
    # timings) are kept, only the rest was trained again
    assert b["history"][: len(before)] == before
    assert before[0] != a["history"][0]
    assert len((killed / "fold_0" / "log.csv").read_text().splitlines()) == EPOCHS + 1

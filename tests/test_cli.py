"""The CLI shell: commands registered, user errors exit 1 without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.cli import app, main

COMMANDS = {
    "convert", "info", "validate-manifest", "synth-ct", "train", "predict", "evaluate",
    "export-bundle", "verify-bundle",
}  # fmt: skip


def test_every_stage_registers_its_commands() -> None:
    import typer.main

    names = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert names >= COMMANDS


def test_user_error_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.nii.gz"
    assert main(["info", str(missing)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_usage_error_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["convert"]) == 2
    assert main(["no-such-command"]) == 2


def test_help_exits_0() -> None:
    assert main(["--help"]) == 0

"""The one assertion every bad-input test makes: the CLI refused cleanly.

A refusal is clean when the exit code is non-zero, the message names the offending file or
flag and says what was expected, no Python traceback is shown, no partial output is left,
and every input is byte-identical afterwards (issue: bad input and correctness sweep).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from medseg.cli import main


def digest(path: Path) -> str:
    """SHA-256 over every file below ``path`` (names, bytes and modes), or of the file itself."""
    h = hashlib.sha256()
    if not path.exists():
        return "absent"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def assert_clean_refusal(
    args: Sequence[str],
    capsys: pytest.CaptureFixture[str],
    *,
    names: Sequence[str | Path],
    inputs: Sequence[Path] = (),
    absent: Sequence[Path] = (),
    expected: bool = True,
    exit_codes: Sequence[int] = (1,),
) -> str:
    """Run ``medseg ARGS`` and assert that it refused cleanly; return what it printed.

    Parameters
    ----------
    names
        Strings (file paths, flag names, case ids) the message must contain.
    inputs
        Files or folders that must be byte-identical afterwards.
    absent
        Outputs that must not exist afterwards (no partial output).
    expected
        Also require the word "expected" (the message says what was expected and found).
    exit_codes
        Acceptable exit codes (1: user error; 2: usage error).
    """
    before = {p: digest(p) for p in inputs}
    rc = main(list(args))
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert rc in exit_codes, f"exit code {rc}, output:\n{text}"
    assert "Traceback" not in text, text
    for name in names:
        assert str(name) in text, f"{name!r} not named in:\n{text}"
    if expected:
        assert "expected" in text.lower(), f"no 'expected' in:\n{text}"
    for p in inputs:
        assert digest(p) == before[p], f"input {p} was modified"
    for p in absent:
        assert not p.exists(), f"partial output left: {p}"
    return text

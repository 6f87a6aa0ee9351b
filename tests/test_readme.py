"""Every ``medseg`` command line in README.md names a real command and real options.

The demo runs the main commands for real (synth-ct, validate-manifest, train, predict,
evaluate, export-bundle, info, convert); this test keeps the documented flags from drifting.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from medseg.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _command_lines() -> list[str]:
    text = README.read_text(encoding="utf-8")
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("medseg ") or re.match(r"torchrun .* -m medseg ", line):
                lines.append(line)
    return lines


LINES = _command_lines()


def test_readme_has_commands() -> None:
    assert len(LINES) >= 10


@pytest.mark.parametrize("line", LINES)
def test_readme_command_is_valid(line: str) -> None:
    words = shlex.split(line)
    words = words[words.index("medseg") + 1 :]
    group = typer.main.get_command(app)
    name = words[0]
    assert name in group.commands, f"unknown command in README: {line}"  # type: ignore[attr-defined]
    command = group.commands[name]  # type: ignore[attr-defined]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for word in words[1:]:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in known, f"{word} is not an option of '{name}': {line}"

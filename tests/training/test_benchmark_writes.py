"""Benchmark scripts write their result files through ``medseg.io.atomic`` (a benchmark killed
mid-write must not leave half a JSON file for the README's tables to quote)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py"))


def _plain_writes(path: Path) -> list[str]:
    """``x.write_text(...)``/``x.write_bytes(...)`` calls and ``open(..., "w"...)`` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("write_text", "write_bytes"):
            found.append(f"line {node.lineno}: .{func.attr}()")
        builtin = isinstance(func, ast.Name) and func.id == "open"  # open(path, mode)
        method = isinstance(func, ast.Attribute) and func.attr == "open"  # path.open(mode)
        if not (builtin or method):
            continue
        given = node.args[1:2] if builtin else node.args[:1]
        given += [k.value for k in node.keywords if k.arg == "mode"]
        modes = [a.value for a in given if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if any(set(m) & set("wax+") for m in modes):
            found.append(f"line {node.lineno}: open(..., {modes[0]!r})")
    return found


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_results_are_written_atomically(path: Path) -> None:
    assert BENCHMARKS
    assert _plain_writes(path) == [], f"{path.name}: use medseg.io.atomic.atomic_write_text"

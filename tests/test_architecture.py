"""ARCHITECTURE.md stays true: every path and ``file:function`` it names exists, every package
is listed, and the import contract it describes is the one ``lint-imports`` enforces."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")


def _names(path: Path) -> set[str]:
    """Top-level functions/classes and methods (``Class.method``) defined in a module."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add(f"{node.name}.{item.name}")
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_every_named_file_and_function_exists() -> None:
    refs = re.findall(r"`(medseg/[\w/]+\.py)(?::([\w.]+))?`", DOC)
    assert len(refs) > 40, "the chains and 'where to add' name files and functions"
    for file, func in refs:
        path = ROOT / file
        assert path.is_file(), f"ARCHITECTURE.md names {file}, which does not exist"
        if func:
            assert func in _names(path), f"ARCHITECTURE.md names {file}:{func}, not defined there"


def test_every_package_is_listed() -> None:
    packages = sorted(p.parent.name for p in (ROOT / "medseg").glob("*/__init__.py"))
    for name in packages:
        assert f"`medseg/{name}/`" in DOC, f"package medseg/{name}/ missing from ARCHITECTURE.md"


def test_documented_layers_match_the_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    documented = re.search(r"```\ndemo > (.*?)```", DOC, re.S)
    assert documented is not None
    order = ["demo", *re.findall(r"[a-z]+", documented.group(1))]
    assert order == [n for layer in layers for n in re.findall(r"medseg\.(\w+)", layer)]
    independence = next(c for c in contracts if c["type"] == "independence")
    assert set(independence["modules"]) == {"medseg.training", "medseg.inference"}


@pytest.mark.skipif(
    shutil.which("lint-imports") is None
    and not (Path(sys.executable).parent / "lint-imports").exists(),
    reason="import-linter not installed",
)
def test_import_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 kept, 0 broken" in done.stdout

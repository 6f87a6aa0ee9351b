"""Tests that read the real data folder (``../shared/data``) carry ``@pytest.mark.realdata``.

Checked two ways: statically over every test file (whatever this run collected), and over the
tests collected in this session, which also sees ``shared_data`` used through other fixtures.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _mark_names(nodes: list[ast.expr]) -> set[str]:
    """Names ``X`` of ``pytest.mark.X`` / ``pytest.mark.X(...)`` among decorators or values."""
    names = set()
    for node in nodes:
        target = node.func if isinstance(node, ast.Call) else node
        if (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Attribute)
            and target.value.attr == "mark"
        ):
            names.add(target.attr)
    return names


def _module_marks(tree: ast.Module) -> set[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            value = node.value
            return _mark_names(
                list(value.elts) if isinstance(value, ast.List | ast.Tuple) else [value]
            )
    return set()


def _reads_real_data(func: ast.FunctionDef) -> bool:
    if any(a.arg == "shared_data" for a in func.args.args):
        return True
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and node.id == "SHARED_DATA":
            return True
        text = node.value if isinstance(node, ast.Constant) else None
        if isinstance(text, str) and ("../shared" in text or "shared/data" in text):
            return True
    return False


def _unmarked_real_data_tests(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = _module_marks(tree)
        scopes: list[tuple[set[str], ast.stmt]] = [(module, n) for n in tree.body]
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                marks = module | _mark_names(node.decorator_list)
                scopes += [(marks, n) for n in node.body]
        for marks, node in scopes:
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("test"):
                continue
            if _reads_real_data(node) and "realdata" not in marks | _mark_names(
                node.decorator_list
            ):
                found.append(f"{path.relative_to(root)}::{node.name}")
    return found


def test_every_test_reading_real_data_is_marked_realdata() -> None:
    found = _unmarked_real_data_tests(TESTS)
    # this file's own self-check below writes such tests as text, which would count here
    assert [
        f for f in found if f != "test_markers.py::test_the_static_check_finds_an_unmarked_test"
    ] == []


def test_the_static_check_finds_an_unmarked_test(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text(
        "import pytest\n\n"
        "def test_bad(shared_data):\n    pass\n\n"
        "def test_bad_path():\n    p = '../shared/data/x'\n\n"
        "@pytest.mark.realdata\ndef test_good(shared_data):\n    pass\n\n"
        "class TestC:\n    def test_method(self, shared_data):\n        pass\n"
    )
    (tmp_path / "test_b.py").write_text(
        "import pytest\n\npytestmark = [pytest.mark.realdata]\n\n"
        "def test_fine(shared_data):\n    pass\n"
    )
    assert _unmarked_real_data_tests(tmp_path) == [
        "test_a.py::test_bad",
        "test_a.py::test_bad_path",
        "test_a.py::test_method",
    ]


def test_collected_tests_using_shared_data_are_marked_realdata(
    request: pytest.FixtureRequest,
) -> None:
    """Sees ``shared_data`` requested through other fixtures too (only what this run collected)."""
    unmarked = [
        item.nodeid
        for item in request.session.items
        if "shared_data" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("realdata") is None
    ]
    assert unmarked == []

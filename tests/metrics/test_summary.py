"""``metrics.csv`` and ``summary.json`` are written atomically."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from atomic_helpers import DiskFullError, break_write, folder_state

from medseg.metrics import summary as summary_mod
from medseg.metrics.summary import write_metrics_csv, write_summary_json

ROWS = [{"case": "a", "label": 1, "dice": 0.5}, {"case": "b", "label": 1, "dice": float("inf")}]


def _csv(path: Path) -> Path:
    return write_metrics_csv(ROWS, path)


def _json(path: Path) -> Path:
    return write_summary_json({"n_cases": 2, "dice": float("nan")}, path)


WRITERS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "metrics.csv": (_csv, "rows_to_csv"),
    "summary.json": (_json, "_json_safe"),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
@pytest.mark.parametrize("existing", [True, False], ids=["old-file", "no-file"])
@pytest.mark.parametrize("how", ["torn-write", "serializer-raises"])
def test_failed_summary_write_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, existing: bool, how: str
) -> None:
    write, serializer = WRITERS[name]
    path = tmp_path / name
    if existing:
        write(path)
    before = folder_state(tmp_path)
    break_write(monkeypatch, summary_mod, serializer, how)
    with pytest.raises(DiskFullError):
        write(path)
    assert folder_state(tmp_path) == before


def test_summary_files_land(tmp_path: Path) -> None:
    assert json.loads(_json(tmp_path / "summary.json").read_text())["dice"] == "nan"
    assert _csv(tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("case")

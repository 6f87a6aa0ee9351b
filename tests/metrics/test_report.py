"""Report files (overlay PNGs, Markdown, HTML) are written atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from atomic_helpers import DiskFullError, folder_state, raise_after, tear_text_writes
from matplotlib.figure import Figure

from medseg.metrics.evaluate import Evaluation
from medseg.metrics.report import TABLE_KEYS, overlay_figure, write_report


def _figure(path: Path) -> Path:
    ref = np.zeros((6, 5, 4), bool)
    ref[2:4, 1:4, 1:3] = True
    return overlay_figure(None, ref, np.roll(ref, 1, axis=0), (1.0, 1.0, 2.0), "case", path)


@pytest.mark.parametrize("existing", [True, False], ids=["old-file", "no-file"])
def test_failed_figure_write_keeps_old_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    path = tmp_path / "figures" / "case_label1.png"
    path.parent.mkdir()
    if existing:
        _figure(path)
        assert path.read_bytes().startswith(b"\x89PNG")
    before = folder_state(tmp_path)
    monkeypatch.setattr(Figure, "savefig", raise_after(Figure.savefig))
    with pytest.raises(DiskFullError):
        _figure(path)
    assert folder_state(tmp_path) == before


def test_figure_mode_follows_umask(tmp_path: Path) -> None:
    original = os.umask(0o022)
    try:
        path = _figure(tmp_path / "f.png")
    finally:
        os.umask(original)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def _report(out: Path) -> tuple[Path, Path]:
    ev = Evaluation(rows=[], labels=[1], cases=[], label_names={1: "liver"})
    stats = {k: {"mean": None, "n_inf": 0} for k in TABLE_KEYS}
    return write_report(ev, {"n_cases": 0, "labels": {"1": stats}}, out)


@pytest.mark.parametrize("torn", ["report.md", "report.html"])
def test_failed_report_page_write_keeps_old_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torn: str
) -> None:
    (tmp_path / "report.md").write_text("old markdown")
    (tmp_path / "report.html").write_text("old html")
    opened = tear_text_writes(monkeypatch, skip=0 if torn == "report.md" else 1)
    with pytest.raises(DiskFullError):
        _report(tmp_path)
    assert opened[-1].name.startswith(f".{torn}.")
    assert (tmp_path / torn).read_text() == ("old markdown" if torn == "report.md" else "old html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]


def test_report_pages_land(tmp_path: Path) -> None:
    md, page = _report(tmp_path / "report")
    assert md.read_text().startswith("# Segmentation evaluation")
    assert "<table" in page.read_text()

"""The shared batch-run result/summary base classes (medseg.io.run_summary)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from medseg.io.run_summary import CaseOutcome, RunSummary


@dataclass
class _Result(CaseOutcome):
    extra: list[int] = field(default_factory=list)


def test_counts_and_failures_over_the_results() -> None:
    results = [
        _Result("a", "in/a", "done", 1.0, "a.nii.gz"),
        _Result("b", "in/b", "failed", error="boom"),
        _Result("c", "in/c", "skipped"),
        _Result("d", "in/d", "failed", error="bad"),
    ]
    summary = RunSummary(results, Path("out"), 2.0)
    assert summary.counts() == {"done": 1, "skipped": 1, "failed": 2}
    assert [r.name for r in summary.failed] == ["b", "d"]
    assert RunSummary([], Path("out"), 0.0).counts() == {"done": 0, "skipped": 0, "failed": 0}


def test_subclass_fields_follow_the_shared_ones() -> None:
    row = asdict(_Result("a", "in/a", "done", extra=[1]))
    assert list(row) == ["name", "input", "status", "seconds", "mask", "error", "extra"]

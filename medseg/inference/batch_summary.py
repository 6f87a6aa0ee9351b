"""The outcome of a prediction batch: one :class:`CaseResult` per case, the
:class:`BatchSummary`, and its ``summary.json`` / ``summary.csv``."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from medseg.io.atomic import atomic_write_text
from medseg.io.run_summary import CaseOutcome, RunSummary


@dataclass
class CaseResult(CaseOutcome):
    """Outcome of one case (:class:`~medseg.io.run_summary.CaseOutcome`) and its own fields."""

    volumes_ml: dict[str, float] = field(default_factory=dict)
    volumes_mm3: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class BatchSummary(RunSummary[CaseResult]):
    """Every case's result plus totals; ``failed`` lists the failures."""


def write_summary(summary: BatchSummary, predictor: Any | None = None) -> None:
    """Write ``summary.json`` and ``summary.csv`` into the output folder (atomically).

    ``predictor``: the :class:`~medseg.inference.predictor.Predictor` whose ``identity`` the
    JSON records (``{}`` without one).
    """
    rows = [asdict(r) for r in summary.results]
    payload = {
        "output": str(summary.output),
        "seconds": round(summary.seconds, 3),
        "counts": summary.counts(),
        "failures": [{"case": r.name, "input": r.input, "error": r.error} for r in summary.failed],
        "model": predictor.identity if predictor else {},
        "cases": rows,
    }
    atomic_write_text(summary.output / "summary.json", json.dumps(payload, indent=2))
    names: list[str] = []
    for r in summary.results:
        names.extend(n for n in r.volumes_ml if n not in names)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "case",
            "status",
            "seconds",
            "input",
            "mask",
            "error",
            *[f"{n}_ml" for n in names],
            *[f"{n}_mm3" for n in names],
        ]
    )
    for r in summary.results:
        vols = [r.volumes_ml.get(n, "") for n in names]
        vols_mm3 = [r.volumes_mm3.get(n, "") for n in names]
        writer.writerow(
            [r.name, r.status, f"{r.seconds:.3f}", r.input, r.mask, r.error, *vols, *vols_mm3]
        )
    atomic_write_text(summary.output / "summary.csv", buf.getvalue())

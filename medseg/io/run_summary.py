"""The per-case results of a batch run over an output folder (``predict``, ``classic``).

Both batch runners (:mod:`medseg.inference.batch` and :mod:`medseg.classic.run`) report one
result per case with a ``status`` of ``"done"``, ``"skipped"`` or ``"failed"``. The two base
classes here hold what their results and summaries share: the common per-case fields, the
failures and the per-status counts that ``summary.json`` records. They live in ``io``
because ``inference`` and ``classic`` may not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar


@dataclass
class CaseOutcome:
    """Outcome of one case (``status``: ``done``, ``skipped`` or ``failed``); the batch
    runners extend it with their own fields (after these, so ``asdict`` keeps this order).

    ``seconds`` is the case's wall time; ``mask`` the written mask's path; ``error`` the
    failure's message.
    """

    name: str
    input: str
    status: str
    seconds: float = 0.0
    mask: str = ""
    error: str = ""


R = TypeVar("R", bound=CaseOutcome)


@dataclass
class RunSummary(Generic[R]):
    """Every case's result, the output folder and the wall time in seconds."""

    results: list[R]
    output: Path
    seconds: float

    @property
    def failed(self) -> list[R]:
        """Cases that raised an error."""
        return [r for r in self.results if r.status == "failed"]

    def counts(self) -> dict[str, int]:
        """Number of cases per status (``done``, ``skipped`` and ``failed`` always present)."""
        out = {"done": 0, "skipped": 0, "failed": 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

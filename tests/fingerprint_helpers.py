"""A hand-made CT :class:`Fingerprint` for planner tests (no files read)."""

from __future__ import annotations

from medseg.planning.fingerprint import Fingerprint


def ct_fingerprint(spacing: list[float], shape: list[int], n: int = 5) -> Fingerprint:
    """``n`` identical CT cases of ``shape`` voxels at ``spacing`` mm, one organ label."""
    return Fingerprint(
        modality="CT",
        labels={"0": "background", "1": "organ"},
        case_ids=[f"c{i}" for i in range(n)],
        spacings=[spacing] * n,
        shapes=[shape] * n,
        intensity={"mean": 40.0, "std": 20.0, "p00_5": -100.0, "p99_5": 200.0},
        class_fractions={"0": 0.9, "1": 0.1},
    )

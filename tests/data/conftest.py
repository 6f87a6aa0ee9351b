"""Fixtures for the data tests: a tiny seeded synthetic CT cohort in ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.data.cohorts import write_ct_cohort

SMALL_SHAPE = (24, 24, 12)
SMALL_SPACING = (3.0, 3.0, 5.0)


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    """Four small CT phantoms in MSD layout; returns the cohort root (holds dataset.json)."""
    root = tmp_path / "cohort"
    write_ct_cohort(root, 4, seed=7, shape=SMALL_SHAPE, spacing=SMALL_SPACING)
    return root

"""Fixtures shared by the DICOM-SEG / RTSTRUCT export tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_export_helpers import synthetic_series


@pytest.fixture
def series(tmp_path: Path, rng: np.random.Generator) -> Path:
    """A synthetic CT series folder (:func:`dicom_export_helpers.synthetic_series`)."""
    return synthetic_series(tmp_path / "series", rng)

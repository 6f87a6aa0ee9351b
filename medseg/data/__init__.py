"""Datasets: manifests (read, validate, split) and seeded synthetic phantoms."""

from medseg.data.manifest import (
    Case,
    Manifest,
    Problem,
    ValidationReport,
    load_manifest,
    validate_manifest,
)
from medseg.data.splits import kfold_splits, read_splits, write_splits

__all__ = [
    "Case",
    "Manifest",
    "Problem",
    "ValidationReport",
    "kfold_splits",
    "load_manifest",
    "read_splits",
    "validate_manifest",
    "write_splits",
]

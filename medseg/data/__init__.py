"""Datasets: manifests (read, validate, split) and seeded synthetic phantoms."""

from medseg.data.manifest import Case, Manifest, load_manifest
from medseg.data.splits import kfold_splits, read_splits, write_splits
from medseg.data.validation import Problem, ValidationReport, validate_manifest

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

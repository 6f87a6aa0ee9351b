"""MONAI bundle export (``configs/``, ``models/``, ``docs/``) and offline verification."""

from medseg.bundle.export import export_bundle, inference_config
from medseg.bundle.metadata import build_metadata, verify_metadata

__all__ = ["build_metadata", "export_bundle", "inference_config", "verify_metadata"]

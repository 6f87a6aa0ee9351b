"""Preprocessing and augmentation pipelines, built from MONAI transforms."""

from medseg.transforms.preprocessing import LoadVolumed, preprocessing_transforms

__all__ = ["LoadVolumed", "preprocessing_transforms"]

"""Preprocessing: load, reorient to RAS, crop, resample and normalise as the plans say
(:func:`preprocessing_transforms`), and the on-disk cache of preprocessed training cases."""

from medseg.preprocessing.pipeline import LoadVolumed, preprocessing_transforms

__all__ = ["LoadVolumed", "preprocessing_transforms"]

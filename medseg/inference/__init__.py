"""Prediction: a :class:`Predictor` (trained run or bundle -> masks on the scans' own grids) and
folder-level batch prediction (:func:`predict_batch`)."""

from medseg.inference.batch import BatchSummary, CaseResult, predict_batch
from medseg.inference.config import InferConfig, load_infer_config
from medseg.inference.predictor import Prediction, Predictor

__all__ = [
    "BatchSummary",
    "CaseResult",
    "InferConfig",
    "Prediction",
    "Predictor",
    "load_infer_config",
    "predict_batch",
]

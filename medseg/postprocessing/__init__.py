"""Refinement of predicted label maps: dense 3D CRF, per-label morphology, and the choice of
which steps to apply (nnU-Net's rule on validation Dice).

- :func:`apply_postprocessing` - CRF (optional) then morphology, per
  :class:`PostprocessConfig`.
- :func:`dense_crf` / :func:`crf_refine_labels` - fully connected CRF in torch (CPU and CUDA).
- :func:`decide_postprocessing` - keep a step only where validation Dice improves and no label
  gets worse; :func:`save_postprocessing` / :func:`load_postprocessing` store the choice as JSON.
"""

from medseg.postprocessing.crf import CRFConfig, dense_crf
from medseg.postprocessing.crf_tiled import crf_refine_labels
from medseg.postprocessing.decide import (
    DecisionCandidates,
    decide_postprocessing,
    load_postprocessing,
    postprocess_config_from_dict,
    save_postprocessing,
)
from medseg.postprocessing.morphology import (
    LabelPostprocessing,
    PostprocessConfig,
    apply_postprocessing,
    ellipsoid_structure,
)

__all__ = [
    "CRFConfig",
    "DecisionCandidates",
    "LabelPostprocessing",
    "PostprocessConfig",
    "apply_postprocessing",
    "crf_refine_labels",
    "decide_postprocessing",
    "dense_crf",
    "ellipsoid_structure",
    "load_postprocessing",
    "postprocess_config_from_dict",
    "save_postprocessing",
]

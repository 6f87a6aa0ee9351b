"""Segmentation metrics in millimetres: overlap, surface distances, lesion-wise detection.

The public API that training validation, post-processing and ``medseg evaluate`` share:

- :func:`compute_case_metrics` - every measure of one case, one row per label.
- :func:`dice_per_label` - Dice only (voxel counts, no distances), cheap enough for every
  validation step.

Empty-mask rule (everywhere): both masks empty -> Dice 1 and distances 0; one empty -> Dice 0
and distances ``inf``. Summaries report ``inf`` values as a count (``n_inf``) and average only the
finite ones, so they are never silently averaged. See ``medseg/metrics/README.md``.
"""

from medseg.metrics.case import compute_case_metrics
from medseg.metrics.lesion import lesion_metrics
from medseg.metrics.overlap import dice_per_label
from medseg.metrics.surface import SurfaceDistances, surface_distances, surface_metrics

__all__ = [
    "SurfaceDistances",
    "compute_case_metrics",
    "dice_per_label",
    "lesion_metrics",
    "surface_distances",
    "surface_metrics",
]

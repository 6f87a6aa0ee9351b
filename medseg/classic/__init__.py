"""Classic (non-learned) segmentation baselines: thresholds, clustering, region growing, watershed.

- :class:`ClassicConfig` - one method and its parameters, validated (``config.py``).
- :data:`METHODS` / :func:`segment_array` - the array-level methods and the registry
  ``name -> method(image, spacing, config, seeds) -> mask``, then morphology (``methods.py``).
- :func:`resolve_seeds` - world (RAS mm) and voxel seeds, seed masks on the image's grid
  (``seeds.py``).
- :func:`segment_cases` - a batch written like ``medseg predict``'s output (``run.py``).
"""

from medseg.classic.config import METHOD_NAMES, ClassicConfig, load_classic_config
from medseg.classic.methods import METHODS, Seeds, segment_array
from medseg.classic.run import ClassicCaseResult, ClassicSummary, segment_case, segment_cases
from medseg.classic.seeds import ras_to_voxel, resolve_seeds

__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "ClassicCaseResult",
    "ClassicConfig",
    "ClassicSummary",
    "Seeds",
    "load_classic_config",
    "ras_to_voxel",
    "resolve_seeds",
    "segment_array",
    "segment_case",
    "segment_cases",
]

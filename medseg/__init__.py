"""medseg: volumetric medical image segmentation built on MONAI and PyTorch.

The package follows the flow of data: ``io`` -> ``transforms`` -> ``networks`` /
``training`` -> ``inference`` -> ``postprocessing`` -> ``metrics`` -> ``bundle``,
with a thin ``cli`` on top.
"""

from medseg.errors import MedsegError

__version__ = "0.1.0"
__all__ = ["MedsegError", "__version__"]

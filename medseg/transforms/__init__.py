"""Training augmentation pipelines built from MONAI transforms, and their configuration."""

from medseg.transforms.augmentation import training_transforms
from medseg.transforms.config import AugmentConfig

__all__ = ["AugmentConfig", "training_transforms"]

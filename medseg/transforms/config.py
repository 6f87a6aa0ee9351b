"""``AugmentConfig``: the ``augment`` section of a run config, beside the augmentation code."""

from __future__ import annotations

from dataclasses import dataclass

from medseg.errors import MedsegError


@dataclass(frozen=True)
class AugmentConfig:
    """Data augmentation (MONAI transforms), probabilities in the spirit of nnU-Net's.

    ``mirror_axes`` are RAS axes (0 = left-right); ``None`` takes ``Plans.mirror_axes``,
    which planning derives from the label layout (an axis along which labels always lie in
    the same order, such as left/right organs, is not mirrored). Set a probability to 0 to
    switch a transform off.
    """

    mirror_axes: tuple[int, ...] | None = None
    mirror_prob: float = 0.5
    rotate_prob: float = 0.2
    rotate_degrees: float = 30.0
    scale_prob: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    noise_prob: float = 0.1
    blur_prob: float = 0.2
    brightness_prob: float = 0.15
    contrast_prob: float = 0.15
    gamma_prob: float = 0.3
    lowres_prob: float = 0.25

    def validate(self) -> None:
        """Check axes and probabilities."""
        if self.mirror_axes is not None and any(a not in (0, 1, 2) for a in self.mirror_axes):
            raise MedsegError(
                f"augment.mirror_axes: expected axes in 0..2, found {self.mirror_axes}"
            )
        for name, value in vars(self).items():
            if name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise MedsegError(f"augment.{name}: expected a probability 0..1, found {value}")

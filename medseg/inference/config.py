"""``InferConfig``: every option of prediction, as data (CLI flags override its fields)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medseg.errors import MedsegError

Accumulation = Literal["auto", "float16", "float32"]
PostprocessMode = Literal["auto", "none"]


@dataclass(frozen=True)
class InferConfig:
    """Options of sliding-window prediction and of batch prediction.

    Parameters
    ----------
    folds
        Folds of a run directory to ensemble (probabilities averaged); ``()`` = every
        ``fold_<k>`` with a checkpoint.
    checkpoint
        ``"best"`` (``checkpoint_best.pt``) or ``"last"`` (``checkpoint_last.pt``).
    tta
        Mirror test-time augmentation: average over the flips of the axes the model was
        trained to mirror (``Plans.mirror_axes``; all three axes: 8 flips, 8x compute).
    overlap
        Fraction of overlap between neighbouring windows (nnU-Net: 0.5).
    sw_batch_size
        Windows per forward pass.
    sigma_scale
        Gaussian blending weight, sigma as a fraction of the window size (nnU-Net: 1/8).
    device
        ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    accumulation
        dtype of the blended probability map on the preprocessed grid; ``auto`` uses
        float16 when the map would exceed ``fp16_threshold_mvox`` million values.
    fp16_threshold_mvox
        Size (classes x voxels, millions) above which ``auto`` accumulates in float16.
    slab_mvox
        Output voxels (millions) resampled per slab when mapping back to the source grid.
    postprocess
        ``auto``: apply the run's ``postprocessing.json`` (decided on validation data);
        ``none``: raw argmax.
    crf
        Force the dense CRF on (``True``) or off (``False``); ``None`` follows the run's
        decision.
    save_probabilities
        Also write ``<case>_probabilities.nii.gz`` (4D, classes last, on the source grid).
    overwrite
        Recompute cases whose outputs already exist.
    series
        DICOM SeriesInstanceUID (or 1-based number) when a folder holds several series.
    prefetch
        Load and preprocess the next case in a background thread during compute.
    """

    folds: tuple[int, ...] = ()
    checkpoint: Literal["best", "last"] = "best"
    tta: bool = False
    overlap: float = 0.5
    sw_batch_size: int = 4
    sigma_scale: float = 0.125
    device: str = "auto"
    accumulation: Accumulation = "auto"
    fp16_threshold_mvox: float = 64.0
    slab_mvox: float = 4.0
    postprocess: PostprocessMode = "auto"
    crf: bool | None = None
    save_probabilities: bool = False
    overwrite: bool = False
    series: str | None = None
    prefetch: bool = True

    def validate(self) -> None:
        """Raise :class:`MedsegError` naming the first out-of-range field."""
        if not 0.0 <= self.overlap < 1.0:
            raise MedsegError(f"infer.overlap: expected 0 <= overlap < 1, found {self.overlap}")
        if self.sw_batch_size < 1:
            raise MedsegError(f"infer.sw_batch_size: expected >= 1, found {self.sw_batch_size}")
        if self.sigma_scale <= 0:
            raise MedsegError(f"infer.sigma_scale: expected > 0, found {self.sigma_scale}")
        if self.slab_mvox <= 0:
            raise MedsegError(f"infer.slab_mvox: expected > 0, found {self.slab_mvox}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise MedsegError(f"infer.device: expected auto, cpu or cuda, found {self.device!r}")
        if any(f < 0 for f in self.folds):
            raise MedsegError(f"infer.folds: expected fold numbers >= 0, found {self.folds}")


def parse_folds(text: str) -> tuple[int, ...]:
    """``"0,1"`` -> ``(0, 1)``; ``"all"`` or ``""`` -> ``()`` (every fold of the run)."""
    text = text.strip().lower()
    if text in ("", "all"):
        return ()
    try:
        folds = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise MedsegError(f"--folds: expected 'all' or numbers like '0,1', found '{text}'") from exc
    if any(f < 0 for f in folds):
        raise MedsegError(f"--folds: expected fold numbers >= 0, found '{text}'")
    return folds

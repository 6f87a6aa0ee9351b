"""Per-channel intensity normalisation of the plans: the default scheme per modality and one
:class:`ChannelPlan` per input channel from the fingerprint's statistics."""

from __future__ import annotations

from medseg.planning.config import PlansConfig
from medseg.planning.fingerprint import Fingerprint
from medseg.planning.plans import ChannelPlan, Normalization


def default_normalization(modality: str) -> Normalization:
    """The normalisation planned for a channel of ``modality`` (``plans.normalization: auto``).

    CT: clip to the dataset's foreground 0.5-99.5 percentiles, z-score with its foreground
    mean/std (nnU-Net's CT scheme: Hounsfield units mean the same in every scan). PET: per-image
    z-score over all voxels. Measured with ``benchmarks/pet_normalisation.py`` on the 36
    sarcoma PETs resampled to their CTs: one threshold shared by all cases reaches a mean
    tumour Dice of 0.617 after per-image z-score and 0.588 after the dataset (CT-style)
    scheme, i.e. SUV kept; the dataset scheme's worst case is better (0.18 vs 0.02), its mean
    and median (0.624 vs 0.650) are not. Other modalities (MR, ...): per-image z-score over
    non-zero voxels (nnU-Net's default).
    """
    name = modality.upper()
    if name == "CT":
        return "ct"
    if name in ("PET", "PT", "FDG-PET", "FDG"):
        return "zscore"
    return "zscore_nonzero"


def channel_plans(fp: Fingerprint, cfg: PlansConfig) -> tuple[ChannelPlan, ...]:
    """One :class:`ChannelPlan` per input channel (``plans.normalization`` for channel 0 and
    ``plans.channel_normalization`` per channel override ``auto``)."""
    names = fp.channel_modalities
    overrides = list(cfg.channel_normalization) or [cfg.normalization]
    out = []
    for n, (name, stats) in enumerate(zip(names, fp.channel_stats, strict=True)):
        norm = overrides[n] if n < len(overrides) else "auto"
        norm = default_normalization(name) if norm == "auto" else norm
        ct = norm == "ct"
        out.append(
            ChannelPlan(
                modality=name,
                normalization=norm,  # type: ignore[arg-type]
                intensity_clip=(stats["p00_5"], stats["p99_5"]) if ct else None,
                intensity_mean=stats["mean"] if ct else None,
                intensity_std=max(stats["std"], 1e-6) if ct else None,
            )
        )
    return tuple(out)

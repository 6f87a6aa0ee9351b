"""Dataset fingerprint: what planning needs to know about the training cases.

Spacings and shapes are given in RAS axis order (after reorientation, as preprocessing
sees them); shapes are those of the crop to non-zero image voxels. Intensity statistics
are over foreground voxels (label > 0), sub-sampled per case with a seeded generator.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medseg.data.loading import load_case
from medseg.data.manifest import Case
from medseg.errors import MedsegError
from medseg.io.atomic import atomic_write_text
from medseg.io.channels import DEFAULT_MIN_OVERLAP

logger = logging.getLogger(__name__)

_SAMPLES_PER_CASE = 10_000


@dataclass(frozen=True)
class Fingerprint:
    """Summary of a cohort (RAS axis order, mm).

    Parameters
    ----------
    modality
        Modality name of channel 0 from the manifest (``"CT"``, ``"MRI"``, ...).
    labels
        ``{value: name}`` from the manifest.
    spacings
        Per case voxel size (mm) along R, A, S.
    shapes
        Per case shape (voxels, RAS order) of the crop to non-zero image voxels.
    intensity
        Foreground statistics: ``mean``, ``std``, ``p00_5``, ``p99_5``, ``min``, ``max``.
    class_fractions
        Mean fraction of voxels of each label value (keys as strings for JSON).
    label_centroids
        Per case, centroid (mm, RAS axes, from the grid origin) of each label present.
    modalities
        Name of every input channel (empty in fingerprints written before multi-channel
        input: one channel, ``modality``).
    channel_intensity
        ``intensity`` for every channel, channel 0 first (``intensity`` is channel 0's).
    """

    modality: str
    labels: dict[str, str]
    case_ids: list[str]
    spacings: list[list[float]]
    shapes: list[list[int]]
    intensity: dict[str, float]
    class_fractions: dict[str, float]
    label_centroids: list[dict[str, list[float]]] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    channel_intensity: list[dict[str, float]] = field(default_factory=list)

    @property
    def channel_modalities(self) -> list[str]:
        """Every channel's modality name, channel 0 first."""
        return list(self.modalities) or [self.modality]

    @property
    def channel_stats(self) -> list[dict[str, float]]:
        """Every channel's foreground intensity statistics, channel 0 first."""
        return list(self.channel_intensity) or [self.intensity]


def _ras_case(
    case: Case, n_channels: int, min_overlap: float
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Image ``(C, X, Y, Z)`` and label ``(X, Y, Z)`` reoriented to RAS, and the RAS spacing."""
    image, label = load_case(case, n_channels, min_overlap=min_overlap)
    ornt = nib.orientations.io_orientation(image.affine)
    arr = np.asarray(image.array)
    arr = arr[None] if arr.ndim == 3 else arr
    img = np.stack([nib.orientations.apply_orientation(a, ornt) for a in arr])
    spacing = np.asarray(image.spacing)[np.argsort(ornt[:, 0])]
    lab = None
    if label is not None:
        lab = nib.orientations.apply_orientation(np.asarray(label.array), ornt)
        if lab.shape != img.shape[1:]:
            raise MedsegError(
                f"expected the label grid {img.shape[1:]} of its image, found {lab.shape}",
                case.label,
            )
    return img, lab, spacing


def _stats(samples: list[np.ndarray]) -> dict[str, float]:
    allv = np.concatenate(samples) if samples else np.zeros(1)
    return {
        "mean": float(allv.mean()),
        "std": float(allv.std()),
        "p00_5": float(np.percentile(allv, 0.5)),
        "p99_5": float(np.percentile(allv, 99.5)),
        "min": float(allv.min()),
        "max": float(allv.max()),
    }


def compute_fingerprint(
    cases: Sequence[Case],
    labels: dict[int, str],
    modality: str | Sequence[str],
    *,
    seed: int = 0,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> Fingerprint:
    """Read every case once and summarise it.

    Parameters
    ----------
    cases
        Training cases (with labels).
    labels
        From the manifest.
    modality
        The manifest's channel names (one name: a single channel).
    seed
        Seed of the foreground-voxel sub-sampling (the same voxels in every channel).
    min_overlap
        See :func:`medseg.io.channels.load_channels`.
    """
    names = [modality] if isinstance(modality, str) else list(modality)
    rng = np.random.default_rng(seed)
    spacings, shapes, centroids = [], [], []
    samples: list[list[np.ndarray]] = [[] for _ in names]
    counts = np.zeros(max(labels) + 1, dtype=np.float64)
    for case in cases:
        img, lab, spacing = _ras_case(case, len(names), min_overlap)
        nz = np.nonzero(np.any(img != 0, axis=0))
        shape = [int(a.max() - a.min() + 1) for a in nz] if nz[0].size else list(img.shape[1:])
        spacings.append([round(float(s), 6) for s in spacing])
        shapes.append(shape)
        if lab is None:
            continue
        lab_i = lab.astype(np.int64)
        valid = (lab_i >= 0) & (lab_i < counts.size)
        counts += np.bincount(lab_i[valid].ravel(), minlength=counts.size) / lab_i.size
        centroids.append(_centroids(lab_i, spacing))
        fg = np.flatnonzero(lab_i > 0)
        if fg.size:
            take = rng.choice(fg, min(_SAMPLES_PER_CASE, fg.size), replace=False)
            for c in range(len(names)):
                samples[c].append(img[c].ravel()[take].astype(np.float64))
    per_channel = [_stats(s) for s in samples]
    fractions = counts / max(len(cases), 1)
    return Fingerprint(
        modality=names[0],
        labels={str(k): v for k, v in labels.items()},
        case_ids=[c.case_id for c in cases],
        spacings=spacings,
        shapes=shapes,
        intensity=per_channel[0],
        class_fractions={str(k): float(f) for k, f in enumerate(fractions) if k in labels},
        label_centroids=centroids,
        modalities=names if len(names) > 1 else [],
        channel_intensity=per_channel if len(names) > 1 else [],
    )


def _centroids(label: np.ndarray, spacing: np.ndarray) -> dict[str, list[float]]:
    """Centroid (mm along R, A, S from voxel 0) of each foreground label of a RAS array."""
    values = [int(v) for v in np.unique(label) if v > 0]
    if not values:
        return {}
    coms = ndimage.center_of_mass(np.ones(label.shape), label, values)
    return {
        str(v): [round(float(c) * float(s), 3) for c, s in zip(com, spacing, strict=True)]
        for v, com in zip(values, coms, strict=True)
    }


def save_fingerprint(fp: Fingerprint, path: str | Path) -> Path:
    """Write ``fingerprint.json`` atomically."""
    return atomic_write_text(Path(path), json.dumps(asdict(fp), indent=1))

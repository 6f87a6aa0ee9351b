"""Folder-level evaluation: pair predictions with references, align grids, score every case.

Pairing
-------
Cases are paired by name: the file name without ``.nii.gz``/``.nii``/``.nrrd``/``.mha``/``.mhd``
(``case_001.nii.gz`` in ``--pred`` pairs with ``case_001.nii.gz`` in ``--ref``). With a manifest,
references and images come from its training cases and predictions are looked up by
``case_id``.

Missing predictions
-------------------
A reference case without a prediction is scored as if the prediction were empty (as challenge
rankings and nnU-Net-style evaluations treat a missing output as a failure): Dice 0 and
distances ``inf`` for every label present in the reference. Its rows carry ``missing=1`` and
the summary lists it under ``missing_predictions``. Predictions without a reference are ignored
with a warning and listed under ``unmatched_predictions``.

Grids
-----
Metrics are computed on the reference's grid, in mm from the reference's spacing. A prediction
on another grid is resampled onto it by world coordinates (nearest neighbour) with a warning; a
prediction whose grid does not overlap the reference's is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.io import Volume, affines_match, load_volume
from medseg.metrics.case import as_label_map, compute_case_metrics, empty_label_row

logger = logging.getLogger(__name__)

SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class CasePair:
    """One case to score: reference label map, prediction (``None`` if missing), image."""

    case_id: str
    ref: Path
    pred: Path | None
    image: Path | None = None


@dataclass
class Evaluation:
    """Result of :func:`evaluate_cases`: one row per case and label, plus bookkeeping."""

    rows: list[dict[str, Any]]
    labels: list[int]
    cases: list[CasePair]
    missing: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    label_names: dict[int, str] = field(default_factory=dict)


def case_name(path: Path) -> str | None:
    """Case id of a label file (name without its suffix), ``None`` if not a supported file."""
    low = path.name.lower()
    for suf in SUFFIXES:
        if low.endswith(suf) and not path.name.startswith("."):
            return path.name[: -len(suf)]
    return None


def list_cases(folder: Path, what: str) -> dict[str, Path]:
    """``{case_id: file}`` of the label files directly inside ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError(f"{what} folder not found (expected a folder of label files)", folder)
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = case_name(path) if path.is_file() else None
        if name is None:
            continue
        if name in found:
            raise MedsegError(
                f"two {what} files for case {name!r}: {found[name].name} and {path.name}", folder
            )
        found[name] = path
    return found


def pair_folders(pred_dir: Path, ref_dir: Path) -> tuple[list[CasePair], list[str]]:
    """Pair reference and prediction files by case name.

    Returns
    -------
    tuple
        The pairs (one per reference, ``pred=None`` when missing) and the ids of predictions
        that have no reference.
    """
    refs = list_cases(ref_dir, "reference")
    if not refs:
        raise MedsegError(f"no label files found (expected {', '.join(SUFFIXES)})", ref_dir)
    preds = list_cases(pred_dir, "prediction")
    pairs = [CasePair(cid, path, preds.get(cid)) for cid, path in refs.items()]
    return pairs, sorted(set(preds) - set(refs))


def pair_manifest(
    manifest: Path, data_root: Path, pred_dir: Path
) -> tuple[list[CasePair], list[str], dict[int, str]]:
    """Pair the manifest's labelled training cases with predictions named ``<case_id>.*``."""
    from medseg.data.manifest import load_manifest

    man = load_manifest(manifest, data_root)
    preds = list_cases(pred_dir, "prediction")
    pairs = [
        CasePair(c.case_id, c.label, preds.get(c.case_id), c.image)
        for c in man.training
        if c.label is not None
    ]
    if not pairs:
        raise MedsegError("the manifest has no labelled training cases to evaluate", manifest)
    names = {int(k): v for k, v in man.labels.items() if int(k) != 0}
    return pairs, sorted(set(preds) - {p.case_id for p in pairs}), names


def resample_to_reference(pred: Volume, ref: Volume) -> np.ndarray:
    """Prediction label map on the reference's voxel grid (nearest neighbour, world coords).

    Parameters
    ----------
    pred, ref
        Label volumes with RAS affines (mm).

    Returns
    -------
    numpy.ndarray
        Shape ``ref.spatial_shape``; voxels outside the prediction's grid are 0.

    Raises
    ------
    MedsegError
        If the two grids do not overlap at all.
    """
    if same_grid(pred, ref):
        return pred.array
    ref_to_pred = np.linalg.inv(pred.affine) @ ref.affine
    shape = np.array(ref.spatial_shape)
    corners = np.array([[i, j, k, 1] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)
    corners[:, :3] = corners[:, :3] * (shape - 1)
    pos = (ref_to_pred @ corners.T)[:3].T
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    if np.any(hi < -0.5) or np.any(lo > np.array(pred.spatial_shape) - 0.5):
        raise MedsegError(
            f"prediction grid (shape {pred.spatial_shape}, axes {''.join(pred.axcodes)}) does not "
            f"overlap the reference grid of {ref.path} (shape {ref.spatial_shape}): expected "
            "both in the same world space",
            pred.path,
        )
    logger.warning(
        "%s: prediction grid differs from the reference's (shape %s vs %s, spacing %s vs %s mm); "
        "resampling it onto the reference by world coordinates (nearest neighbour)",
        pred.path,
        pred.spatial_shape,
        ref.spatial_shape,
        tuple(round(s, 4) for s in pred.spacing),
        tuple(round(s, 4) for s in ref.spacing),
    )
    out = ndimage.affine_transform(
        as_label_map(pred.array, str(pred.path)),
        ref_to_pred[:3, :3],
        offset=ref_to_pred[:3, 3],
        output_shape=tuple(ref.spatial_shape),
        order=0,
        mode="constant",
        cval=0,
    )
    return np.asarray(out)


def present_labels(a: np.ndarray) -> set[int]:
    """Non-zero label values present in a non-negative integer map."""
    flat = a.ravel()
    if flat.size and int(flat.max()) < 1 << 16:
        return {int(v) for v in np.flatnonzero(np.bincount(flat)) if v != 0}
    return {int(v) for v in np.unique(flat) if v != 0}


def load_label_volume(path: Path) -> Volume:
    """Read a label map (any supported format) as a non-negative integer volume."""
    vol = load_volume(path, allow_empty=True)
    try:
        return vol.with_array(as_label_map(vol.array, path.name))
    except ValueError as exc:
        raise MedsegError(f"expected a label map: {exc}", path) from exc


def same_grid(a: Volume, b: Volume) -> bool:
    """True when two volumes share shape and affine (within 1e-3 mm)."""
    return a.spatial_shape == b.spatial_shape and affines_match(a.affine, b.affine)


def score_pair(
    pair: CasePair, labels: Sequence[int] | None, **options: Any
) -> tuple[list[dict], bool]:
    """Load one case, align the prediction and compute its rows (labels present if ``None``).

    Returns the rows and whether the prediction had to be resampled.
    """
    ref = load_label_volume(pair.ref)
    resampled = False
    if pair.pred is None:
        pred_arr = np.zeros(ref.spatial_shape, dtype=np.uint8)
    else:
        pred = load_label_volume(pair.pred)
        resampled = not same_grid(pred, ref)
        pred_arr = resample_to_reference(pred, ref)
    if labels is None:
        labels = sorted(present_labels(ref.array) | present_labels(pred_arr))
    rows = compute_case_metrics(pred_arr, ref.array, ref.spacing, labels, **options)
    for row in rows:
        row["case"] = pair.case_id
        row["missing"] = int(pair.pred is None)
    return rows, resampled


def evaluate_cases(
    pairs: Sequence[CasePair],
    *,
    labels: Sequence[int] | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> Evaluation:
    """Score every pair; with ``labels=None`` every label found in any case is scored.

    ``options`` go to :func:`medseg.metrics.case.compute_case_metrics` (``tolerance_mm``,
    ``lesion_labels``, ``connectivity``, ...). Labels absent from both maps of a case get the
    both-empty row (Dice 1, distances 0), so every case has a row for every label.
    """
    by_case: dict[str, dict[int, dict]] = {}
    resampled: list[str] = []
    for pair in pairs:
        rows, was_resampled = score_pair(pair, labels, **options)
        if was_resampled:
            resampled.append(pair.case_id)
        by_case[pair.case_id] = {r["label"]: r for r in rows}
        if progress is not None:
            progress(pair.case_id)
    all_labels = (
        sorted({lab for rows in by_case.values() for lab in rows})
        if labels is None
        else [int(v) for v in labels]
    )
    lesion = set(options.get("lesion_labels", ()))
    out_rows = []
    for pair in pairs:
        case_rows = by_case[pair.case_id]
        for lab in all_labels:
            row = case_rows.get(lab)
            if row is None:
                row = empty_label_row(lab, lesion=lab in lesion)
                row.update(case=pair.case_id, missing=int(pair.pred is None))
            out_rows.append(row)
    missing = [p.case_id for p in pairs if p.pred is None]
    for cid in missing:
        logger.warning("no prediction for reference case %s: scored as an empty prediction", cid)
    return Evaluation(out_rows, all_labels, list(pairs), missing, [], resampled)

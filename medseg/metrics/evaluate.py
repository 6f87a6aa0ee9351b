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
the summary lists it under ``missing_predictions``. Predictions without a reference cannot be
scored: they are listed under ``unmatched_predictions`` and ``medseg evaluate`` exits 1 after
writing the report of the others. A prediction folder without any label file is an error.

Failed cases
------------
A case whose files cannot be scored (unreadable, not a label map, grids that do not overlap,
label values outside the known labels of the case) is left out, listed with its error under
``failed_cases``, and the other cases are scored; ``medseg evaluate`` then exits 1.

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
from medseg.io.file_names import IMAGE_SUFFIXES, image_stem
from medseg.metrics.case import as_label_map, compute_case_metrics, empty_label_row

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CasePair:
    """One case to score: reference label map, prediction (``None`` if missing), image.

    ``known_labels`` (background included), when known, are the label values the case may
    hold (the manifest's labels, or the model's from the prediction's sidecar), described by
    ``known_from``; a scored value outside them fails the case.
    """

    case_id: str
    ref: Path
    pred: Path | None
    image: Path | None = None
    known_labels: tuple[int, ...] | None = None
    known_from: str = ""


@dataclass
class Evaluation:
    """Result of :func:`evaluate_cases`: one row per case and label, plus bookkeeping.

    ``cases`` are the scored pairs; ``failed`` the others, as ``{"case", "error"}``.
    """

    rows: list[dict[str, Any]]
    labels: list[int]
    cases: list[CasePair]
    missing: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    label_names: dict[int, str] = field(default_factory=dict)
    failed: list[dict[str, str]] = field(default_factory=list)


def list_cases(folder: Path, what: str) -> dict[str, Path]:
    """``{case_id: file}`` of the label files directly inside ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError(f"{what} folder not found (expected a folder of label files)", folder)
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        hidden = path.name.startswith(".")
        name = image_stem(path) if path.is_file() and not hidden else None
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
        raise MedsegError(f"no label files found (expected {', '.join(IMAGE_SUFFIXES)})", ref_dir)
    preds = _predictions(pred_dir)
    pairs = [CasePair(cid, path, preds.get(cid)) for cid, path in refs.items()]
    return pairs, sorted(set(preds) - set(refs))


def _predictions(pred_dir: Path) -> dict[str, Path]:
    """``{case_id: file}`` of the prediction folder; a folder without label files is an error."""
    preds = list_cases(pred_dir, "prediction")
    if not preds:
        raise MedsegError(
            f"expected predicted label maps ({', '.join(IMAGE_SUFFIXES)}) in the prediction "
            "folder, found none",
            pred_dir,
        )
    return preds


def pair_manifest(
    manifest: Path, data_root: Path, pred_dir: Path, *, allow_outside_root: bool = False
) -> tuple[list[CasePair], list[str], dict[int, str]]:
    """Pair the manifest's labelled training cases with predictions named ``<case_id>.*``.

    ``allow_outside_root`` accepts manifest paths that leave ``data_root`` (refused by default).
    """
    from medseg.data.manifest import load_manifest

    man = load_manifest(manifest, data_root, allow_outside_root=allow_outside_root)
    preds = _predictions(pred_dir)
    known = tuple(sorted({0, *(int(k) for k in man.labels)}))
    source = f"the labels of {Path(manifest).name}"
    pairs = [
        CasePair(c.case_id, c.label, preds.get(c.case_id), c.image, known, source)
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


def check_known_labels(
    pair: CasePair, maps: Sequence[tuple[Path, np.ndarray]], requested: Sequence[int] | None
) -> None:
    """Raise :class:`MedsegError` if a label value is not among ``pair.known_labels``.

    Checked are the labels the user ``requested`` (``--labels``; other values in the maps
    are then simply not scored) or, when ``None``, every value present in ``maps``
    (``(file, array)`` of the reference and the prediction). The error names the file
    holding the unknown value (``--labels`` when no file holds it).
    """
    if pair.known_labels is None:
        return
    known = set(pair.known_labels) | {0}
    present = {path: present_labels(arr) for path, arr in maps}
    scored = set(requested) if requested is not None else set().union(*present.values())
    unknown = sorted(scored - known)
    if not unknown:
        return
    holder = next((path for path, vals in present.items() if vals & set(unknown)), None)
    where = f"label values {unknown}" + ("" if holder is not None else " requested by --labels")
    raise MedsegError(
        f"case {pair.case_id}: expected label values {sorted(known)} ({pair.known_from}), "
        f"found {where}",
        holder,
    )


def score_pair(
    pair: CasePair,
    labels: Sequence[int] | None,
    *,
    requested: Sequence[int] | None = None,
    **options: Any,
) -> tuple[list[dict], bool]:
    """Load one case, align the prediction and compute its rows (labels present if ``None``).

    ``requested`` are the labels the user asked for (see :func:`check_known_labels`).
    Returns the rows and whether the prediction had to be resampled.

    Raises
    ------
    MedsegError
        For an unreadable file, a map that is not a label map, grids that do not overlap, or
        a label value outside ``pair.known_labels``.
    """
    ref = load_label_volume(pair.ref)
    pred = None if pair.pred is None else load_label_volume(pair.pred)
    maps = [(pair.ref, ref.array)]
    if pair.pred is not None and pred is not None:
        maps.append((pair.pred, pred.array))
    check_known_labels(pair, maps, requested)
    resampled = False
    if pred is None:
        pred_arr = np.zeros(ref.spatial_shape, dtype=np.uint8)
    else:
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
    requested: Sequence[int] | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> Evaluation:
    """Score every pair; with ``labels=None`` every label found in any case is scored.

    ``options`` go to :func:`medseg.metrics.case.compute_case_metrics` (``tolerance_mm``,
    ``lesion_labels``, ``instance_labels``, ``connectivity``, ...). Labels absent from both
    maps of a case get the both-empty row (Dice 1, distances 0), so every case has a row for
    every label.
    ``requested``: the labels the user asked for, checked against each pair's known labels
    (:func:`check_known_labels`). A pair that raises :class:`MedsegError` is not scored: it
    goes to ``Evaluation.failed`` and the others are scored.
    """
    by_case: dict[str, dict[int, dict]] = {}
    resampled: list[str] = []
    failed: list[dict[str, str]] = []
    for pair in pairs:
        try:
            rows, was_resampled = score_pair(pair, labels, requested=requested, **options)
        except MedsegError as exc:  # one bad case must not stop the others
            logger.error("case %s failed: %s", pair.case_id, exc)
            failed.append({"case": pair.case_id, "error": str(exc)})
            if progress is not None:
                progress(pair.case_id)
            continue
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
    instance = set(options.get("instance_labels", ()))
    scored = [p for p in pairs if p.case_id in by_case]
    out_rows = []
    for pair in scored:
        case_rows = by_case[pair.case_id]
        for lab in all_labels:
            row = case_rows.get(lab)
            if row is None:
                row = empty_label_row(lab, lesion=lab in lesion, instances=lab in instance)
                row.update(case=pair.case_id, missing=int(pair.pred is None))
            out_rows.append(row)
    missing = [p.case_id for p in scored if p.pred is None]
    for cid in missing:
        logger.warning("no prediction for reference case %s: scored as an empty prediction", cid)
    return Evaluation(out_rows, all_labels, scored, missing, [], resampled, failed=failed)

"""Reading an RTSTRUCT (RT Structure Set) as a label map on the grid of the image it contours.

Each closed planar contour (patient LPS mm) is mapped through the inverse of the reference
volume's voxel-to-LPS affine into voxel coordinates ``(i, j, k)``; ``k`` must be a slice of the
reference (within :data:`SLICE_TOLERANCE`), and the polygon is filled on that slice. Contours of
one ROI on one slice are combined with XOR (even-odd rule), so a contour inside another is a
hole, as MIRP and most treatment planning systems do.

Rasteriser: :func:`skimage.draw.polygon`, chosen on evidence. It fills the voxels whose
*centres* (integer voxel indices) lie inside the polygon; on the four real sarcoma cases of
``../shared/data/sts_ct_pet`` (STS_019, 033, 036, 038) it reproduces MIRP's ``CT_mask.nii.gz``
voxel for voxel (Dice 1.0 each, 0 voxels differ). rt-utils 1.2.7, the common alternative, fills
with OpenCV's ``fillPoly`` on vertices rounded to whole pixels, which includes boundary pixels
and moves the outline by up to half a voxel: on the same contours (their image references
re-pointed to the cropped series, which rt-utils needs) its fill reaches Dice 0.946 / 0.982 /
0.980 / 0.980 against MIRP (4-12 % more voxels), on the axes it fills; as returned, its
masks are allocated (columns, rows) but filled (rows, columns), so on the three non-square
cases they are transposed and Dice falls to 0.81-0.87. It would also pull in OpenCV.

Contours are placed by patient coordinates, not by their ContourImageSequence: the real cases'
contours reference the SOP instances of the uncropped original series, which the cropped CT
folders no longer hold (:func:`medseg.io.label_common.check_referenced_images`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from pydicom.dataset import Dataset
from skimage.draw import polygon

from medseg.errors import MedsegError
from medseg.io.dicom_scan import read_dicom
from medseg.io.geometry import ras_to_lps
from medseg.io.label_common import (
    RTSTRUCT_SOP_CLASS,
    LabelMap,
    ReferenceUids,
    check_referenced_images,
    label_volume,
    reference_uids,
    resolve_label_map,
    warn_unchecked,
)
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

#: A contour's ``k`` may differ from a whole slice index by this fraction of a slice step.
SLICE_TOLERANCE = 0.05
#: Vertices may lie this far (in voxels) beyond the grid's outer voxel faces (-0.5, n - 0.5).
EDGE_TOLERANCE = 0.01
OPEN_TYPES = ("OPEN_PLANAR", "OPEN_NONPLANAR")


@dataclass(frozen=True)
class RoiInfo:
    """One ROI of a structure set.

    Attributes
    ----------
    number, name
        ROINumber and ROIName.
    n_contours
        Number of contour items (all geometric types).
    geometric_types
        The distinct ContourGeometricType values (``"CLOSED_PLANAR"``, ``"POINT"``, ...).
    frame_of_reference_uid
        ReferencedFrameOfReferenceUID of the ROI (``""`` when absent).
    """

    number: int
    name: str
    n_contours: int
    geometric_types: tuple[str, ...] = ()
    frame_of_reference_uid: str = ""
    contours: tuple[Dataset, ...] = field(default=(), repr=False, compare=False)


def _open(path: Path) -> Dataset:
    if not path.is_file():
        raise MedsegError("expected an RTSTRUCT file, found no such file", path)
    ds = read_dicom(path, expected="an RTSTRUCT", pixels=True)
    modality = str(ds.get("Modality", "") or "")
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP_CLASS and modality != "RTSTRUCT":
        raise MedsegError(
            f"expected an RTSTRUCT (SOP class {RTSTRUCT_SOP_CLASS}), found modality "
            f"'{modality or '?'}', SOP class {ds.get('SOPClassUID', '?')}",
            path,
        )
    return ds


def _number(item: Dataset, keyword: str, where: str, path: Path) -> int:
    """An integer (IS) attribute of a sequence item; missing or not a number is refused."""
    value = item.get(keyword, None)
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        found = "none" if value in (None, "") else repr(str(value))
        raise MedsegError(
            f"{where}: expected an integer {keyword}, found {found} (a truncated or corrupt "
            "RTSTRUCT?)",
            path,
        ) from exc


def _rois(ds: Dataset, path: Path) -> list[RoiInfo]:
    contours: dict[int, tuple[Dataset, ...]] = {}
    for n, rc in enumerate(ds.get("ROIContourSequence", []), start=1):
        number = _number(rc, "ReferencedROINumber", f"ROIContourSequence item {n}", path)
        # several items for one ROI: their contours together, none dropped
        contours[number] = contours.get(number, ()) + tuple(rc.get("ContourSequence", []))
    out = []
    for n, roi in enumerate(ds.get("StructureSetROISequence", []), start=1):
        number = _number(roi, "ROINumber", f"StructureSetROISequence item {n}", path)
        items = contours.get(number, ())
        kinds = tuple(sorted({str(c.get("ContourGeometricType", "")) for c in items}))
        out.append(
            RoiInfo(
                number,
                str(roi.get("ROIName", "") or ""),
                len(items),
                kinds,
                str(roi.get("ReferencedFrameOfReferenceUID", "") or ""),
                items,
            )
        )
    return out


def list_rois(path: str | os.PathLike[str]) -> list[RoiInfo]:
    """The ROIs of an RTSTRUCT file, in file order.

    Raises
    ------
    MedsegError
        The file is missing, unreadable or not an RTSTRUCT, or an ROI item has no valid
        ROINumber / ReferencedROINumber (a truncated or corrupt file).
    """
    path = Path(path)
    return _rois(_open(path), path)


def _referenced_series(ds: Dataset) -> tuple[dict[str, str], str]:
    """Image SOPInstanceUID -> SeriesInstanceUID from ReferencedFrameOfReferenceSequence, and
    the one series it names (``""`` unless exactly one), for images it does not list."""
    series = [
        se
        for frame in ds.get("ReferencedFrameOfReferenceSequence", [])
        for study in frame.get("RTReferencedStudySequence", [])
        for se in study.get("RTReferencedSeriesSequence", [])
    ]
    uids = {str(se.get("SeriesInstanceUID", "")) for se in series}
    listed = {
        str(img.get("ReferencedSOPInstanceUID", "")): str(se.get("SeriesInstanceUID", ""))
        for se in series
        for img in se.get("ContourImageSequence", [])
    }
    return listed, uids.pop() if len(uids) == 1 else ""


def _check_uids(ds: Dataset, rois: Sequence[RoiInfo], refs: ReferenceUids, path: Path) -> None:
    frames = [
        str(f.get("FrameOfReferenceUID", ""))
        for f in ds.get("ReferencedFrameOfReferenceSequence", [])
    ]
    listed, only = _referenced_series(ds)
    for roi in rois:
        uid = roi.frame_of_reference_uid or (frames[0] if len(frames) == 1 else "")
        if uid and uid != refs.frame_of_reference_uid:
            raise MedsegError(
                f"ROI '{roi.name}': the RTSTRUCT's FrameOfReferenceUID {uid} differs from the "
                f"reference's {refs.frame_of_reference_uid} ({refs.source}): expected contours "
                "drawn on the reference series",
                path,
            )
        images = {
            str(img.get("ReferencedSOPInstanceUID", ""))
            for c in roi.contours
            for img in c.get("ContourImageSequence", [])
        }
        referenced = {u: listed.get(u, only) for u in images}
        check_referenced_images(referenced, refs, path, f"ROI '{roi.name}'")


def _distinct_points(points: np.ndarray) -> np.ndarray:
    """Drop repeated consecutive vertices and a closing vertex equal to the first."""
    keep = np.any(np.abs(np.diff(points, axis=0)) > 1e-9, axis=1)
    points = points[np.concatenate([[True], keep])]
    if len(points) > 1 and np.abs(points[-1] - points[0]).max() <= 1e-9:
        points = points[:-1]
    return points


def polygon_problem(poly: np.ndarray) -> str | None:
    """Why a closed polygon ``(N, 2)`` is not simple (e.g. ``"Self-intersection[3.5 7]"``,
    in its own coordinates), or ``None`` for a simple one; GEOS through shapely."""
    reason = str(shapely.is_valid_reason(shapely.polygons(poly)))
    return None if reason == "Valid Geometry" else reason


def _slice_of(k: np.ndarray, roi: str, index: int, spacing_k: float, path: Path) -> int:
    """The reference slice index of a contour's points ``k`` (voxel units)."""
    slices = np.rint(k)
    off = float(np.abs(k - slices).max())
    if off > SLICE_TOLERANCE or slices.min() != slices.max():
        raise MedsegError(
            f"ROI '{roi}', contour {index}: not on a slice of the reference: its points lie "
            f"{off * spacing_k:.3f} mm off the nearest slice plane and span slices "
            f"{int(slices.min())}..{int(slices.max())} (expected all points on one slice, within "
            f"{SLICE_TOLERANCE * spacing_k:.3f} mm): contours drawn on another series or grid?",
            path,
        )
    return int(slices[0])


def _check_inside(
    ijk: np.ndarray, shape: tuple[int, int, int], spacing: np.ndarray, where: str, path: Path
) -> None:
    lo = -0.5 - EDGE_TOLERANCE
    hi = np.asarray(shape, dtype=float) - 0.5 + EDGE_TOLERANCE
    k = int(np.rint(ijk[0, 2]))
    if not 0 <= k < shape[2]:
        beyond = (-k if k < 0 else k - shape[2] + 1) * spacing[2]
        raise MedsegError(
            f"{where}: lies {beyond:.2f} mm beyond the reference's slices (slice index {k}, "
            f"expected 0..{shape[2] - 1}): expected contours inside the image",
            path,
        )
    outside = (ijk[:, :2] < lo) | (ijk[:, :2] > hi[:2])
    if outside.any():
        edge = np.maximum(-0.5 - ijk[:, :2], ijk[:, :2] - (hi[:2] - EDGE_TOLERANCE))
        mm = float(np.max(np.where(outside, edge, 0.0) * spacing[:2]))
        n_out = int(np.sum(outside.any(axis=1)))
        raise MedsegError(
            f"{where} (slice {k}): {n_out} of its {len(ijk)} points lie outside the reference "
            f"grid, up to {mm:.2f} mm beyond its edge: expected contours inside the image",
            path,
        )


def _closed_points(item: Dataset, kind: str, where: str, path: Path) -> np.ndarray:
    """The LPS points ``(N, 3)`` in mm of a CLOSED_PLANAR contour; open or unknown types refused."""
    if kind in OPEN_TYPES:
        raise MedsegError(
            f"{where}: expected CLOSED_PLANAR contours for a label, found {kind} (an open "
            "line encloses no area)",
            path,
        )
    if kind != "CLOSED_PLANAR":
        raise MedsegError(f"{where}: unknown ContourGeometricType '{kind}'", path)
    try:
        data = np.asarray(item.get("ContourData", []), dtype=np.float64).ravel()
    except (ValueError, TypeError) as exc:
        raise MedsegError(f"{where}: expected numeric ContourData, found {exc}", path) from exc
    if data.size % 3:
        raise MedsegError(
            f"{where}: expected ContourData as x, y, z triplets, found {data.size} values", path
        )
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:  # a NaN vertex would be dropped as a repeated point and the polygon filled without it
        raise MedsegError(
            f"{where}: expected finite ContourData coordinates (mm), found {bad} NaN or infinite "
            f"value(s) of {data.size}",
            path,
        )
    return data.reshape(-1, 3)


def _roi_mask(roi: RoiInfo, reference: Volume, path: Path) -> np.ndarray:
    """Boolean mask ``(I, J, K)`` of one ROI: its closed contours filled, XOR per slice."""
    shape = reference.spatial_shape
    inv = np.linalg.inv(ras_to_lps(reference.affine))
    spacing = np.asarray(reference.spacing)
    mask = np.zeros(shape, dtype=bool)
    n_filled = n_points = n_degenerate = 0
    for index, item in enumerate(roi.contours, start=1):
        kind = str(item.get("ContourGeometricType", "") or "")
        where = f"ROI '{roi.name}', contour {index}"
        if kind == "POINT":
            n_points += 1
            continue
        lps = _closed_points(item, kind, where, path)
        ijk = _distinct_points(lps @ inv[:3, :3].T + inv[:3, 3])
        if len(ijk) < 3:
            logger.warning("%s: %s has %d distinct point(s); skipped", path, where, len(ijk))
            n_degenerate += 1
            continue
        k = _slice_of(ijk[:, 2], roi.name, index, spacing[2], path)
        _check_inside(ijk, shape, spacing, where, path)
        problem = polygon_problem(ijk[:, :2])
        if problem:
            logger.warning(
                "%s: %s (slice %d) is not a simple polygon (%s, voxel i j); filled by the "
                "even-odd rule",
                path, where, k, problem,
            )  # fmt: skip
        rr, cc = polygon(ijk[:, 0], ijk[:, 1], shape=shape[:2])
        plane = np.zeros(shape[:2], dtype=bool)
        plane[rr, cc] = True
        mask[:, :, k] ^= plane
        n_filled += 1
    if n_points:
        logger.warning("%s: ROI '%s': %d POINT contour(s) ignored", path, roi.name, n_points)
    if not n_filled:
        found = (
            f"only {n_points} POINT and {n_degenerate} degenerate (< 3 points) contour(s)"
            if n_points or n_degenerate
            else "no contours"
        )
        raise MedsegError(
            f"ROI '{roi.name}': expected closed contours to fill, found {found} (an empty ROI)",
            path,
        )
    return mask


def read_rtstruct(
    path: str | os.PathLike[str],
    reference: Volume,
    label_map: LabelMap | None = None,
    *,
    reference_files: Sequence[str | os.PathLike[str]] | None = None,
) -> Volume:
    """Rasterise the ROIs of an RTSTRUCT onto the grid of the image they were drawn on.

    Parameters
    ----------
    path
        The RTSTRUCT file.
    reference
        The image the contours belong to, as :func:`medseg.io.load_volume` returns it (a DICOM
        series folder carries the UIDs to check; a NIfTI/NRRD is used by geometry alone, with a
        warning). Its grid (shape ``(I, J, K)``, voxel-to-RAS affine in mm) is the output's.
    label_map
        ROIName -> label value (>= 1): exact names, case-insensitive globs (``"GTV*"``) or
        ``"re:<regex>"`` matching the whole name; several ROIs may share a value; where ROIs
        overlap, the later map entry wins. ``None`` (or empty): a single ROI gets value 1
        (several ROIs are an error listing their names). ROIs not in the map are not read.
    reference_files
        DICOM files of the reference series whose UIDs to check instead of ``reference.meta``
        (for a NIfTI reference converted from that series).

    Returns
    -------
    Volume
        Label map ``(I, J, K)``, ``uint8`` (``uint16`` for values above 255), 0 = background,
        on exactly the reference's grid (same shape and affine, RAS mm); ``meta["labels"]`` is
        ROIName -> value.

    Raises
    ------
    MedsegError
        Naming the file (and ROI): not an RTSTRUCT; a FrameOfReferenceUID other than the
        reference's (both UIDs and paths named); contours referencing images outside the
        reference series (the series it references named); a map key matching no ROI (the ROIs
        listed); an ROI without closed contours; an OPEN_PLANAR/OPEN_NONPLANAR contour; a
        contour off the reference's slice planes, or partly or wholly outside the grid (by how
        many mm, on which slice); NaN or infinite ContourData; an ROI item without a valid
        ROINumber / ReferencedROINumber (a truncated or corrupt file).

    Notes
    -----
    POINT contours are ignored (warning). A self-intersecting contour is filled by the
    even-odd rule and logged as a warning rather than refused: the fill is well defined, and
    hand-drawn clinical contours with a small loop are common enough that refusing them would
    reject usable data.
    """
    path = Path(path)
    ds = _open(path)
    rois = _rois(ds, path)
    painted = resolve_label_map(
        [(r.number, r.name) for r in rois], label_map, path, what="ROI", by_number=False
    )
    by_number = {r.number: r for r in rois}
    selected = [by_number[n] for n in dict.fromkeys(num for num, _, _ in painted)]
    refs = reference_uids(reference, reference_files)
    if refs is None:
        warn_unchecked(path, reference)
    else:
        _check_uids(ds, selected, refs, path)
    masks = {roi.number: _roi_mask(roi, reference, path) for roi in selected}
    return label_volume(masks, reference, path, "rtstruct", painted)

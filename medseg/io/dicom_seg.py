"""Reading a DICOM-SEG (Segmentation, or Label Map Segmentation) as a label map on an image grid.

highdicom decodes the segments (:meth:`highdicom.seg.Segmentation.get_volume`: binary,
fractional and label-map SEGs, sparse frames, any frame order) into a volume with its own
voxel-to-LPS affine; :meth:`highdicom.Volume.match_geometry` then permutes, flips, pads and crops
it onto the reference grid without resampling. Before that, the two grids are checked to share
voxel size and axes (up to order and sign) and to be offset by whole voxels: a SEG on another
grid is refused, never resampled. (An axis one frame thick has no step of its own; it takes the
reference's, see :func:`_single_frame_axes`.)

Checked on ``../shared/data/dicom/ct_3slice_with_seg`` (dcmqi test data, see
``tests/io/test_io_dicom_seg.py``): ``liver.dcm`` equals ``liver_seg.nrrd``; the five
overlapping segments of ``partial_overlaps.dcm`` equal ``partial_overlaps-{1,2,3}.nrrd``; the
sparse LABELMAP SEG ``sparse-labelmap-noppv.dcm`` (2 frames of a 3-slice grid) equals its NRRD.
``sparse-labelmap-ppv5.dcm`` equals its NRRD on the two slices it has frames for; on the slice it
has none, dcmqi wrote its PixelPaddingValue (5) and medseg writes background (0).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError
from medseg.io.dicom_scan import READ_ERRORS
from medseg.io.geometry import ras_to_lps
from medseg.io.label_common import (
    LabelMap,
    ReferenceUids,
    check_referenced_images,
    dicom_label_kind,
    label_volume,
    reference_uids,
    resolve_label_map,
    warn_unchecked,
)
from medseg.io.optional_imports import import_highdicom
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

#: Offsets between the SEG's and the reference's voxels may differ from whole voxels by this much
#: (voxels), and their axes may disagree by this much across the whole grid (float rounding of
#: DICOM decimal strings and of NIfTI affines).
GRID_TOLERANCE = 0.01
#: A FRACTIONAL segment covers a voxel where its value (0..1) is at least this.
FRACTION_THRESHOLD = 0.5

_HD_ERRORS = (ValueError, RuntimeError, KeyError, AttributeError, TypeError, IndexError)


def _open(path: Path) -> Any:
    """The file as a :class:`highdicom.seg.Segmentation`, or a MedsegError saying why not."""
    if not path.is_file():
        raise MedsegError("expected a DICOM-SEG file, found no such file", path)
    kind = dicom_label_kind(path)
    if kind != "SEG":
        found = "an RTSTRUCT" if kind else "a file that is not a DICOM segmentation"
        raise MedsegError(f"expected a DICOM-SEG (Modality SEG), found {found}", path)
    hd = import_highdicom("reading DICOM-SEG")
    try:
        return hd.seg.segread(path)
    except (*_HD_ERRORS, *READ_ERRORS) as exc:
        raise MedsegError(
            f"cannot read the DICOM-SEG: expected a complete Segmentation object, found one "
            f"highdicom cannot read (truncated or corrupt?): {exc}",
            path,
        ) from exc


def _segments(seg: Any) -> list[tuple[int, str]]:
    """``(SegmentNumber, SegmentLabel)`` of each segment; segment 0 (label-map background) and
    the PixelPaddingValue segment are left out (highdicom's ``segment_numbers``)."""
    return [
        (int(n), str(seg.get_segment_description(n).segment_label))
        for n in seg.segment_numbers
        if int(n) != 0
    ]


def _check_uids(seg: Any, refs: ReferenceUids, path: Path) -> None:
    uid = str(seg.get("FrameOfReferenceUID", "") or "")
    if uid != refs.frame_of_reference_uid:
        raise MedsegError(
            f"the DICOM-SEG's FrameOfReferenceUID {uid or '(none)'} differs from the "
            f"reference's {refs.frame_of_reference_uid} ({refs.source}): expected a "
            "segmentation of the reference series",
            path,
        )
    try:
        sources = seg.get_source_image_uids()
    except _HD_ERRORS as exc:
        raise MedsegError(
            f"cannot read the DICOM-SEG's source image references: {exc}", path
        ) from exc
    check_referenced_images({str(sop): str(se) for _, se, sop in sources}, refs, path, "the SEG")


def _check_grid(seg_lps: np.ndarray, reference: Volume, path: Path) -> None:
    """The SEG's voxels must be the reference's: same size and axes (any order and sign), offset
    by whole voxels; checked here because ``match_geometry`` also accepts integer *multiples*."""
    m = np.linalg.inv(ras_to_lps(reference.affine)) @ seg_lps
    rot = np.abs(m[:3, :3])
    perm = np.rint(rot)
    shift = m[:3, 3]
    drift = np.abs(rot - perm).max() * max(reference.spatial_shape)
    if (
        not np.array_equal(perm @ perm.T, np.eye(3))
        or drift > GRID_TOLERANCE
        or np.abs(shift - np.rint(shift)).max() > GRID_TOLERANCE
    ):
        spacing = np.linalg.norm(seg_lps[:3, :3], axis=0)
        raise MedsegError(
            f"the DICOM-SEG is not on the reference grid: expected the reference's voxels "
            f"({' x '.join(f'{s:.4g}' for s in reference.spacing)} mm, same axes, whole-voxel "
            f"offsets), found voxels of {' x '.join(f'{s:.4g}' for s in spacing)} mm at "
            f"{np.round(shift, 3).tolist()} reference voxels from its origin (resample first)",
            path,
        )


def _single_frame_axes(hd: Any, volume: Any, reference: Volume) -> Any:
    """``volume`` with the step of each axis one frame thick taken from the reference.

    A SEG with frames on one plane only (one slice, or a sparse SEG of one frame) has no slice
    step of its own: highdicom takes its SliceThickness, which differs from the slice spacing of
    overlapping reconstructions, and the grid check would refuse a frame that lies exactly on a
    reference slice. Such an axis gets the step of the reference axis it lies along (its
    direction and the frame's position are still checked).
    """
    shape = tuple(int(n) for n in volume.spatial_shape)
    if 1 not in shape:
        return volume
    ref = ras_to_lps(reference.affine)[:3, :3]
    units = ref / np.linalg.norm(ref, axis=0)
    affine = np.array(volume.affine, dtype=np.float64)
    for axis in (a for a, n in enumerate(shape) if n == 1):
        cos = units.T @ (affine[:3, axis] / np.linalg.norm(affine[:3, axis]))
        r = int(np.argmax(np.abs(cos)))
        if abs(cos[r]) >= 1.0 - 1e-6:  # along a reference axis; otherwise _check_grid refuses
            affine[:3, axis] = ref[:, r] * np.sign(cos[r])
    channels = {d: volume.get_channel_values(d) for d in volume.channel_descriptors}
    return hd.Volume(
        volume.array,
        affine,
        volume.coordinate_system,
        frame_of_reference_uid=volume.frame_of_reference_uid,
        channels=channels or None,
    )


def _on_reference(volume: Any, reference: Volume, name: str, path: Path) -> np.ndarray:
    """One decoded highdicom volume moved onto the reference grid ``(I, J, K)``."""
    hd = import_highdicom("reading DICOM-SEG")
    volume = _single_frame_axes(hd, volume, reference)
    _check_grid(np.asarray(volume.affine), reference, path)
    geometry = hd.VolumeGeometry(ras_to_lps(reference.affine), reference.spatial_shape, "PATIENT")
    before = int(np.count_nonzero(volume.array))
    try:
        array = np.asarray(volume.match_geometry(geometry, tol=GRID_TOLERANCE).array)
    except _HD_ERRORS as exc:
        raise MedsegError(f"{name}: cannot place it on the reference grid: {exc}", path) from exc
    lost = before - int(np.count_nonzero(array))
    if lost:
        raise MedsegError(
            f"{name}: {lost} of its {before} voxels lie outside the reference grid "
            f"(shape {reference.spatial_shape}): expected a segmentation inside the image",
            path,
        )
    return array.reshape(reference.spatial_shape)


def _masks(
    seg: Any, numbers: Sequence[int], names: dict[int, str], reference: Volume, path: Path
) -> dict[int, np.ndarray]:
    """Boolean mask ``(I, J, K)`` of each segment number, on the reference grid."""
    kind = str(seg.SegmentationType)
    try:
        if kind == "LABELMAP":  # one decode for all segments; label maps cannot overlap
            vol = seg.get_volume(segment_numbers=list(numbers), combine_segments=True)
            values = _on_reference(vol, reference, "the label map", path)
            return {n: values == n for n in numbers}
        out: dict[int, np.ndarray] = {}
        for n in numbers:
            vol = seg.get_volume(segment_numbers=[n], combine_segments=False)
            arr = _on_reference(vol, reference, f"segment {n} '{names[n]}'", path)
            out[n] = arr >= FRACTION_THRESHOLD if kind == "FRACTIONAL" else arr > 0
        return out
    except _HD_ERRORS as exc:
        raise MedsegError(f"cannot decode the DICOM-SEG's segments: {exc}", path) from exc


def read_dicom_seg(
    path: str | os.PathLike[str],
    reference: Volume,
    label_map: LabelMap | None = None,
    *,
    reference_files: Sequence[str | os.PathLike[str]] | None = None,
) -> Volume:
    """Read the segments of a DICOM-SEG onto the grid of the image they segment.

    Parameters
    ----------
    path
        The DICOM-SEG file (Segmentation Storage, BINARY or FRACTIONAL, or Label Map
        Segmentation Storage).
    reference
        The segmented image, as :func:`medseg.io.load_volume` returns it (a DICOM series folder
        carries the UIDs to check; a NIfTI/NRRD is used by geometry alone, with a warning). Its
        grid (shape ``(I, J, K)``, voxel-to-RAS affine in mm) is the output's.
    label_map
        SegmentLabel -> label value (>= 1): exact names, case-insensitive globs or
        ``"re:<regex>"`` matching the whole label; several segments may share a value.
        ``None`` (or empty): every segment gets its SegmentNumber. Where segments overlap, the
        later one wins (map order; without a map, the higher segment number).
    reference_files
        DICOM files of the reference series whose UIDs to check instead of ``reference.meta``.

    Returns
    -------
    Volume
        Label map ``(I, J, K)``, ``uint8`` (``uint16`` for values above 255), 0 = background, on
        exactly the reference's grid; ``meta["labels"]`` is SegmentLabel -> value. Frames a
        sparse SEG omits are background; a FRACTIONAL segment covers voxels >= 0.5.

    Raises
    ------
    MedsegError
        Naming the file (and segment): not a DICOM-SEG; a FrameOfReferenceUID other than the
        reference's; source images outside the reference series; a map key matching no
        segment; a SEG on another voxel grid (never resampled) or reaching outside the image.
    """
    path = Path(path)
    seg = _open(path)
    segments = _segments(seg)
    painted = resolve_label_map(segments, label_map, path, what="segment", by_number=True)
    refs = reference_uids(reference, reference_files)
    if refs is None:
        warn_unchecked(path, reference)
    else:
        _check_uids(seg, refs, path)
    numbers = list(dict.fromkeys(n for n, _, _ in painted))
    masks = _masks(seg, numbers, dict(segments), reference, path)
    return label_volume(masks, reference, path, "dicom-seg", painted)

"""What the RTSTRUCT and DICOM-SEG readers share: which kind of object a file is, the label map
(ROI or segment names -> label values), the reference series' UIDs and the output label volume.

:mod:`medseg.io.rtstruct` and :mod:`medseg.io.dicom_seg` import this module;
:mod:`medseg.io.labels` dispatches between them.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from medseg.errors import MedsegError
from medseg.io.dicom_scan import READ_ERRORS, read_dicom
from medseg.io.nifti import label_dtype
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"  # RT Structure Set Storage
SEG_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
    }
)
MAX_LABEL = int(np.iinfo(np.uint16).max)

#: ROI / segment name -> label value; keys are exact names, globs or ``re:`` regexes.
LabelMap = Mapping[str, int]


def dicom_label_kind(path: str | os.PathLike[str]) -> str | None:
    """``"RTSTRUCT"``, ``"SEG"`` or ``None``: what a file is, from its header alone.

    Reads only Modality and SOPClassUID (no pixel data). A folder, a missing file and a file
    that is not DICOM give ``None``.
    """
    p = Path(path)
    if not p.is_file():
        return None
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    except READ_ERRORS:
        return None
    sop_class = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "").upper()
    if sop_class == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        return "RTSTRUCT"
    if sop_class in SEG_SOP_CLASSES or modality == "SEG":
        return "SEG"
    return None


@dataclass(frozen=True)
class ReferenceUids:
    """The UIDs of the image series a label object must refer to.

    Attributes
    ----------
    frame_of_reference_uid, series_uid
        FrameOfReferenceUID and SeriesInstanceUID of the reference series.
    sop_instance_uids
        SOPInstanceUID of every image of the series.
    source
        Where they were read (named in error messages).
    """

    frame_of_reference_uid: str
    series_uid: str
    sop_instance_uids: frozenset[str]
    source: str


def reference_uids(
    reference: Volume, reference_files: Sequence[str | os.PathLike[str]] | None = None
) -> ReferenceUids | None:
    """The reference series' UIDs, from ``reference_files`` or else from ``reference.meta``.

    Parameters
    ----------
    reference
        The image the labels go onto; a DICOM series read by :func:`medseg.io.load_volume`
        carries ``frame_of_reference_uid``, ``series_uid`` and ``sop_instance_uids`` in its meta.
    reference_files
        DICOM image files of the reference series (headers only are read), for a reference
        without those UIDs (e.g. a NIfTI converted from that series).

    Returns
    -------
    ReferenceUids or None
        ``None`` when neither source has a FrameOfReferenceUID (e.g. a NIfTI reference).

    Raises
    ------
    MedsegError
        A reference file that cannot be read, or files of several frames of reference.
    """
    if reference_files:
        return _uids_from_files([Path(f) for f in reference_files])
    meta = reference.meta
    if not meta.get("frame_of_reference_uid"):
        return None
    return ReferenceUids(
        str(meta["frame_of_reference_uid"]),
        str(meta.get("series_uid", "") or ""),
        frozenset(str(u) for u in meta.get("sop_instance_uids", ())),
        str(reference.path),
    )


def _uids_from_files(files: list[Path]) -> ReferenceUids:
    frames: set[str] = set()
    series: set[str] = set()
    sops: set[str] = set()
    for f in files:
        ds = read_dicom(f, expected="an image slice of the reference series")
        frames.add(str(ds.get("FrameOfReferenceUID", "") or ""))
        series.add(str(ds.get("SeriesInstanceUID", "") or ""))
        sops.add(str(ds.get("SOPInstanceUID", "") or ""))
    if len(frames) != 1 or "" in frames:
        raise MedsegError(
            f"expected reference files of one frame of reference, found FrameOfReferenceUID(s) "
            f"{sorted(frames)}",
            files[0].parent,
        )
    return ReferenceUids(
        frames.pop(), ", ".join(sorted(series)), frozenset(sops), f"{files[0].parent} (files)"
    )


def warn_unchecked(path: Path, reference: Volume) -> None:
    """Log that a label object is placed by geometry alone (the reference has no UIDs)."""
    logger.warning(
        "%s: the reference %s has no DICOM UIDs (e.g. a NIfTI): the frame of reference and the "
        "referenced images could not be checked; the labels are placed by patient coordinates "
        "alone",
        path,
        reference.path or "(in memory)",
    )


def check_referenced_images(
    referenced: Mapping[str, str], refs: ReferenceUids, path: Path, what: str
) -> None:
    """Refuse references to images of another series; warn about missing ones of this series.

    Parameters
    ----------
    referenced
        SOPInstanceUID -> SeriesInstanceUID (``""`` when not stated) of every image the label
        object references.
    refs
        The reference series.
    path, what
        The label file and what references (e.g. ``"ROI 'GTV'"``), for messages.

    Raises
    ------
    MedsegError
        Some referenced images are not in the reference series and the label object names
        another series for them (or none). When it names the reference's own series, the
        reference is taken to be a copy of that series with other instances (a cropped or
        re-exported copy: the four real sarcoma cases are one, every contour references the
        uncropped original's images) and a warning is logged; the geometry checks of the
        readers still hold.
    """
    missing = sorted(uid for uid in referenced if uid not in refs.sop_instance_uids)
    if not missing:
        return
    series = sorted({referenced[uid] for uid in missing})
    if series == [refs.series_uid] and refs.series_uid:
        logger.warning(
            "%s: %s references %d image(s) not in the reference %s, though of its series %s "
            "(a cropped or re-exported copy?); placed by patient coordinates",
            path, what, len(missing), refs.source, refs.series_uid,
        )  # fmt: skip
        return
    named = ", ".join(s or "(not stated)" for s in series)
    raise MedsegError(
        f"{what}: {len(missing)} of the {len(referenced)} images it references are not in the "
        f"reference series {refs.series_uid or '(no UID)'} ({refs.source}), e.g. SOPInstanceUID "
        f"{missing[0]}; it references series {named}: expected labels of the reference series",
        path,
    )


def _matches(key: str, name: str, path: Path) -> bool:
    if key.startswith("re:"):
        try:
            return re.fullmatch(key[3:], name) is not None
        except re.error as exc:
            raise MedsegError(f"label map key '{key}' is not a valid regex: {exc}", path) from exc
    return name == key or fnmatch.fnmatchcase(name.lower(), key.lower())


def _check_value(key: str, value: object, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise MedsegError(
            f"label map '{key}': expected an integer label value, found {value!r}", path
        )
    if not 1 <= int(value) <= MAX_LABEL:
        raise MedsegError(
            f"label map '{key}': expected a label value from 1 to {MAX_LABEL}, found {value}",
            path,
        )
    return int(value)


def resolve_label_map(
    names: Sequence[tuple[int, str]],
    label_map: LabelMap | None,
    path: Path,
    *,
    what: str,
    by_number: bool,
) -> list[tuple[int, str, int]]:
    """Which ROI/segment gets which label value, in the order they are painted (later wins).

    Parameters
    ----------
    names
        ``(number, name)`` of every ROI (ROINumber, ROIName) or segment (SegmentNumber,
        SegmentLabel) of the file.
    label_map
        Name -> value (>= 1). A key matches a name exactly, or as a case-insensitive glob
        (:func:`fnmatch.fnmatch`: ``"GTV*"``), or as a regular expression matching the whole
        name when written ``"re:..."``. Several names may map to one value. ``None`` or
        empty: see ``by_number`` (an empty map would otherwise paint nothing).
    path
        The label file, named in errors.
    what
        ``"ROI"`` or ``"segment"``, for messages.
    by_number
        Default for ``label_map=None``: ``True`` gives every item its own number as value
        (DICOM-SEG segments); ``False`` gives a single item the value 1 and refuses several.

    Returns
    -------
    list of (number, name, value)
        In map order (then file order within one key), so that a later entry overwrites an
        earlier one where they overlap.

    Raises
    ------
    MedsegError
        A key matching nothing or several items without a map (both list the names), a bad
        value or regex.
    """
    listing = ", ".join(f"'{n}'" for _, n in names) or "(none)"
    if not label_map:
        if by_number:
            return [(num, name, _check_value(name, num, path)) for num, name in names]
        if len(names) != 1:
            raise MedsegError(
                f"expected one {what} or a label map (--label-map NAME=VALUE), found "
                f"{len(names)} {what}s: {listing}",
                path,
            )
        return [(names[0][0], names[0][1], 1)]
    out: list[tuple[int, str, int]] = []
    for key, value in label_map.items():
        val = _check_value(key, value, path)
        hits = [(num, name) for num, name in names if _matches(key, name, path)]
        if not hits:
            raise MedsegError(
                f"label map key '{key}' matches no {what}; the file has {what}s: {listing}", path
            )
        out += [(num, name, val) for num, name in hits]
    return out


def label_volume(
    masks: Mapping[int, np.ndarray],
    reference: Volume,
    path: Path,
    fmt: str,
    painted: Sequence[tuple[int, str, int]],
) -> Volume:
    """Paint the masks into a label map :class:`Volume` on the reference grid.

    ``masks`` maps segment/ROI number -> boolean mask of shape ``reference.spatial_shape``
    ``(I, J, K)``; each ``(number, name, value)`` of ``painted`` is painted in order (later
    entries win where masks overlap), dtype from :func:`medseg.io.nifti.label_dtype`,
    0 = background. The affine is the reference's (voxel-to-RAS, mm). ``meta`` holds
    ``format``, ``labels`` (name -> value), ``reference`` (its path) and ``is_image=False``;
    nothing of the reference's own meta (its UIDs describe the image).
    """
    array = np.zeros(reference.spatial_shape, dtype=label_dtype([v for _, _, v in painted]))
    for number, _, value in painted:
        array[masks[number]] = value
    return Volume(
        array=array,
        affine=reference.affine.copy(),
        path=path,
        meta={
            "format": fmt,
            "is_image": False,
            "labels": {name: value for _, name, value in painted},
            "reference": str(reference.path) if reference.path else None,
        },
    )

"""DICOM series reading: scan one folder, group files by series, stack slices with exact geometry.

Slices are ordered by the projection of ImagePositionPatient on the slice normal (the cross
product of the ImageOrientationPatient row and column directions), never by file name or
InstanceNumber. The stack is checked (one orientation, one pixel grid, no gantry tilt, no
duplicate or missing slice) before any pixel is decoded. SimpleITK's ``ImageSeriesReader`` is the
reference: the voxels and the geometry read here agree with it after LPS -> RAS.

Written by hand (on pydicom) rather than through ``ImageSeriesReader`` because SimpleITK only
warns about missing slices and tilt, and reports no file names in its errors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medseg.errors import MedsegError
from medseg.io.dicom_frames import dicom_frames
from medseg.io.dicom_scan import READ_ERRORS, FolderScan, read_dicom, scan_folder
from medseg.io.dicom_stack import Frame, stack_geometry
from medseg.io.geometry import lps_to_ras
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

# Series of these modalities hold no image slices (segmentations, contours, reports, ...).
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "DOC", "FID", "RWV"}
)


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder.

    Attributes
    ----------
    uid
        SeriesInstanceUID (``""`` when the files carry none).
    number
        1-based index in a stable order (folder, SeriesNumber, description, UID); pass it as
        ``series=`` / ``--series``.
    description, modality
        SeriesDescription and Modality (``""`` when absent).
    n_files
        Number of files of this series in ``folder``.
    folder
        The folder holding the files.
    series_number
        The SeriesNumber tag, ``None`` when absent.
    is_image
        ``False`` for series without image slices (DICOM-SEG, RTSTRUCT, SR, ...).
    files
        The files of the series, sorted by name (not in slice order).
    """

    uid: str
    number: int
    description: str
    modality: str
    n_files: int
    folder: Path
    series_number: int | None = None
    is_image: bool = True
    files: tuple[Path, ...] = field(default=(), repr=False)

    def describe(self) -> str:
        """One line: number, UID, description, modality, file count."""
        kind = "" if self.is_image else " (not an image series)"
        return (
            f"#{self.number}: UID {self.uid or '(none)'}, '{self.description}', "
            f"{self.modality or '?'}, {self.n_files} file(s){kind}"
        )


def _series_infos(folder: Path, groups: dict[str, list[tuple[Path, Dataset]]]) -> list[SeriesInfo]:
    rows = []
    for uid, items in groups.items():
        first = items[0][1]
        modality = str(first.get("Modality", "") or "")
        number = first.get("SeriesNumber", None)
        has_rows = any("Rows" in ds for _, ds in items)
        is_image = modality.upper() not in NON_IMAGE_MODALITIES and has_rows
        rows.append(
            (
                int(number) if number not in (None, "") else None,
                str(first.get("SeriesDescription", "") or ""),
                uid,
                modality,
                is_image,
                tuple(p for p, _ in items),
            )
        )
    rows.sort(key=lambda r: (r[0] is None, r[0] or 0, r[1], r[2]))
    return [
        SeriesInfo(uid, i + 1, desc, mod, len(fs), folder, num, img, fs)
        for i, (num, desc, uid, mod, img, fs) in enumerate(rows)
    ]


def list_series(folder: str | Path, *, recursive: bool = False) -> list[SeriesInfo]:
    """List the DICOM series in ``folder`` (non-DICOM files are skipped, logged at DEBUG).

    Files that claim to be DICOM but cannot be read are not counted; beside a series they are
    logged at WARNING (:func:`read_dicom_series` refuses them).

    Parameters
    ----------
    folder
        A folder of DICOM files.
    recursive
        Also list the series of every sub-folder (a study stored one folder per series).
        Numbers then run on across folders, in sorted folder order.

    Returns
    -------
    list of SeriesInfo
        One entry per (folder, SeriesInstanceUID), numbered from 1.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError("expected a folder of DICOM files, found no such folder", folder)
    folders = [folder]
    if recursive:
        folders += sorted(p for p in folder.rglob("*") if p.is_dir() and not p.name.startswith("."))
    out: list[SeriesInfo] = []
    for sub in folders:
        scan = scan_folder(sub)
        for path, why in scan.broken:  # beside a series it may be one of its slices
            level = logging.WARNING if scan.groups else logging.DEBUG
            logger.log(level, "%s: %s; reading this folder's series will refuse it", path, why)
        if scan.junk:
            logger.debug("%s: skipped non-DICOM file(s): %s", sub, scan.describe_junk())
        for info in _series_infos(sub, scan.groups):
            out.append(SeriesInfo(**{**info.__dict__, "number": len(out) + 1}))
    return out


def _listing(series: Sequence[SeriesInfo]) -> str:
    return "; ".join(s.describe() for s in series)


def select_series(infos: Sequence[SeriesInfo], series: str | None, folder: Path) -> SeriesInfo:
    """Pick a series by UID or 1-based number, or the only image series if ``series`` is None."""
    if series is not None:
        key = str(series).strip()
        hits = [s for s in infos if s.uid == key]
        if not hits and key.isdigit():
            hits = [s for s in infos if s.number == int(key)]
        if not hits:
            raise MedsegError(
                f"no series '{key}' (expected a SeriesInstanceUID or a number from 1 to "
                f"{len(infos)}); found {_listing(infos)}",
                folder,
            )
        return hits[0]
    images = [s for s in infos if s.is_image]
    if len(images) == 1:
        return images[0]
    if not images:
        raise MedsegError(f"expected an image series, found only {_listing(infos)}", folder)
    raise MedsegError(
        f"expected one DICOM series, found {len(images)} image series: {_listing(infos)}. "
        "Choose one with --series UID-or-number (series=... in Python)",
        folder,
    )


def _subfolder_hint(folder: Path) -> str:
    subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        return ""
    shown = ", ".join(subs[:8]) + (", ..." if len(subs) > 8 else "")
    return f"; it has {len(subs)} sub-folder(s) ({shown}): pass one series folder"


def _no_dicom_error(scan: FolderScan) -> MedsegError:
    folder, hint = scan.folder, _subfolder_hint(scan.folder)
    if scan.broken:
        path, why = scan.broken[0]
        return MedsegError(
            f"no readable DICOM files in folder: expected DICOM image files, found "
            f"{len(scan.broken)} file(s) that claim to be DICOM but cannot be read, e.g. "
            f"{path.name} {why}{hint}",
            folder,
        )
    if scan.junk:
        return MedsegError(
            f"no DICOM files found in folder: expected DICOM image files, found only "
            f"{len(scan.junk)} non-DICOM file(s) ({scan.describe_junk()}){hint}",
            folder,
        )
    if scan.dicomdirs:
        return MedsegError(
            "no DICOM image files in folder: expected the image files its DICOMDIR indexes, "
            f"found only the DICOMDIR (copy the whole folder tree of the disc){hint}",
            folder,
        )
    return MedsegError(f"no DICOM files found in folder (expected DICOM image files){hint}", folder)


def _broken_error(scan: FolderScan) -> MedsegError:
    path, why = scan.broken[0]
    others = [p.name for p, _ in scan.broken[1:]]
    more = f"; {len(others)} more: {', '.join(others[:8])}" if others else ""
    return MedsegError(
        f"{why}; expected every file of the series folder to be a complete DICOM file (a "
        f"slice is never dropped silently): re-export the series, or remove the file if it is "
        f"not part of it{more}",
        path,
    )


def _output_dtype(frames: Sequence[Frame], ds: Dataset, stored: np.dtype) -> np.dtype:
    """Stored dtype without rescaling, a wide-enough integer for integer rescaling, else float32."""
    pairs = {(f.slope, f.intercept) for f in frames}
    if pairs == {(1.0, 0.0)}:
        return np.dtype(stored)
    if len(pairs) > 1 or any(not (s.is_integer() and i.is_integer()) for s, i in pairs):
        return np.dtype(np.float32)
    slope, inter = next(iter(pairs))
    bits = int(ds.get("BitsStored", stored.itemsize * 8) or stored.itemsize * 8)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ends = (lo * slope + inter, hi * slope + inter)
    for cand in (np.int16, np.uint16, np.int32, np.int64):
        info = np.iinfo(cand)
        if info.min <= min(ends) and max(ends) <= info.max:
            return np.dtype(cand)
    return np.dtype(np.float64)


def _decode(frames: Sequence[Frame], ds: Dataset, folder: Path) -> np.ndarray:
    """Voxels of the sorted frames, shape ``(columns, rows, slices)``, rescaled."""
    name = frames[0].name
    try:
        first = np.asarray(frames[0].pixels())
        dtype = _output_dtype(frames, ds, first.dtype)
        rows, cols = frames[0].shape
        out = np.empty((cols, rows, len(frames)), dtype=dtype)
        for k, frame in enumerate(frames):
            name = frame.name
            pix = first if k == 0 else np.asarray(frame.pixels())
            if pix.shape != (rows, cols):
                raise MedsegError(
                    f"{frame.name}: expected pixel data of {rows}x{cols}, found {pix.shape}",
                    folder,
                )
            if (frame.slope, frame.intercept) != (1.0, 0.0):
                pix = pix.astype(np.float64) * frame.slope + frame.intercept
            out[:, :, k] = pix.T.astype(dtype, copy=False)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, TypeError) as exc:
        why = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise MedsegError(
            f"cannot decode the pixel data of {name} (expected pixel data matching its "
            f"Rows/Columns/BitsAllocated): {why}",
            folder / name.split("[frame")[0],
        ) from exc
    return out


def _read_frames(files: Sequence[Path]) -> tuple[list[Frame], Dataset]:
    """The frames of every file (pixels decoded lazily) and the first file's dataset."""
    frames: list[Frame] = []
    datasets: list[Dataset] = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, force=False)
            frames += dicom_frames(path, ds)
        except READ_ERRORS as exc:
            raise MedsegError(
                f"cannot read DICOM file (expected a complete image slice): {exc}", path
            ) from exc
        datasets.append(ds)
    return frames, datasets[0]


def read_dicom_series(folder: str | Path, *, series: str | None = None) -> Volume:
    """Read one DICOM series from a folder (sub-folders are not searched).

    Parameters
    ----------
    folder
        Folder holding the files of the series (DICOMDIR is skipped; non-DICOM files such as
        ``README.txt``, ``.DS_Store``, ``Thumbs.db`` are skipped and logged at WARNING).
    series
        SeriesInstanceUID or 1-based series number from :func:`list_series`; required when
        the folder holds several image series.

    Returns
    -------
    Volume
        ``array`` of shape ``(columns, rows, slices)`` (so ``i`` runs along a DICOM row),
        slices sorted along the slice normal; ``affine`` voxel-to-RAS in mm. Rescale
        slope/intercept is applied (integer dtype when both are integers, else float32).

    Raises
    ------
    MedsegError
        No DICOM files, several series and none chosen, a non-image series chosen, a single
        slice, mixed orientations or sizes, gantry tilt, duplicate or missing slices, and a
        file that claims to be DICOM (DICM preamble, ``.dcm`` name, the series' UID in its
        bytes) but cannot be read or decoded: it is named, never dropped silently.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError("expected a folder of DICOM files, found no such folder", folder)
    scan = scan_folder(folder)
    if not scan.groups:
        raise _no_dicom_error(scan)
    if scan.broken:
        raise _broken_error(scan)
    if scan.junk:
        logger.warning("%s: skipped non-DICOM file(s): %s", folder, scan.describe_junk())
    info = select_series(_series_infos(folder, scan.groups), series, folder)
    if not info.is_image:
        raise MedsegError(
            f"series {info.describe()} holds no image slices; choose an image series", folder
        )
    frames, first = _read_frames(info.files)
    if len(frames) < 2:
        raise MedsegError(
            "expected a 3D series of at least 2 slices, found a single 2D slice "
            f"({info.describe()})",
            folder,
        )
    order, affine_lps = stack_geometry(frames, folder)
    sorted_frames = [frames[i] for i in order]
    array = _decode(sorted_frames, first, folder)
    meta = _meta(first, info, sorted_frames, folder)
    return Volume(array=array, affine=lps_to_ras(affine_lps), path=folder, meta=meta)


def _meta(ds: Dataset, info: SeriesInfo, frames: Sequence[Frame], folder: Path) -> dict[str, Any]:
    slopes = sorted({f.slope for f in frames})
    inters = sorted({f.intercept for f in frames})

    def tag(name: str) -> str:
        return str(ds.get(name, "") or "")

    def sop_uid(path: Path) -> str:
        # Frames carry no UID: read the tag from each file once more (no pixel data); the
        # frames of one multi-frame file share its SOPInstanceUID.
        head = read_dicom(path, expected="an image slice", tags=["SOPInstanceUID"])
        uid = str(head.get("SOPInstanceUID", "") or "")
        if not uid:  # some exports leave it blank; the file meta header still holds it
            meta = getattr(head, "file_meta", None)
            uid = str(getattr(meta, "MediaStorageSOPInstanceUID", "") or "")
        return uid

    names = list(dict.fromkeys(f.name.split("[frame")[0] for f in frames))
    uids = {n: sop_uid(folder / n) for n in names}
    return {
        "format": "dicom",
        "modality": info.modality,
        "series_uid": info.uid,
        "series_number": info.series_number,
        "description": info.description,
        "study_uid": tag("StudyInstanceUID"),
        "frame_of_reference_uid": tag("FrameOfReferenceUID"),
        "sop_class_uid": tag("SOPClassUID"),
        "sop_instance_uids": [uids[f.name.split("[frame")[0]] for f in frames],
        "patient_id": tag("PatientID"),
        "manufacturer": tag("Manufacturer"),
        "rescale_slope": slopes[0] if len(slopes) == 1 else slopes,
        "rescale_intercept": inters[0] if len(inters) == 1 else inters,
        "rescale_type": tag("RescaleType"),
        "files": [str(folder / n) for n in names],
        "n_frames": len(frames),
    }

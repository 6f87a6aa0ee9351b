"""Scanning one folder for DICOM files: headers grouped by series, junk and broken files apart.

A series folder from a hospital dump holds more than slices: a ``README.txt``, ``.DS_Store``,
``Thumbs.db``, a ``DICOMDIR``. Those are skipped (the caller logs them). A file that *claims*
to be DICOM but cannot be read (the ``DICM`` preamble, a ``.dcm``/``.dicom``/``.ima`` name, or
one of the folder's SeriesInstanceUIDs in its bytes), and a DICOM file without a
SeriesInstanceUID beside files that have one (a header cut short), is *broken*: it may be a
slice of the series, so reading the series refuses it by name instead of dropping it.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError

from medseg.errors import MedsegError

logger = logging.getLogger(__name__)

_SKIPPED_SUFFIXES = (".txt", ".json")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_PREAMBLE = 128
_UID_SEARCH_BYTES = 1 << 20  # the series UID sits in the header, well inside the first MiB
#: What pydicom raises for files that are not DICOM, truncated or corrupt.
READ_ERRORS = (
    InvalidDicomError,
    BytesLengthException,
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    NotImplementedError,
    struct.error,
)


def read_dicom(
    path: str | os.PathLike[str],
    *,
    expected: str,
    pixels: bool = False,
    tags: Sequence[str] | None = None,
) -> Dataset:
    """One DICOM file read by pydicom, or a MedsegError naming the file.

    Parameters
    ----------
    path
        The file.
    expected
        What the file should be, for the message (``"an image slice"``, ``"an RTSTRUCT"``).
    pixels
        Read the pixel data too (default: the header only).
    tags
        Read only these keywords (pydicom ``specific_tags``); default: every element.

    Raises
    ------
    MedsegError
        ``cannot read DICOM file (expected <expected>), found an unreadable file: <why>`` for
        anything in :data:`READ_ERRORS` (not DICOM, truncated, corrupt, missing).
    """
    try:
        return pydicom.dcmread(
            path, stop_before_pixels=not pixels, specific_tags=None if tags is None else list(tags)
        )
    except READ_ERRORS as exc:
        raise MedsegError(
            f"cannot read DICOM file (expected {expected}), found an unreadable file: {exc}", path
        ) from exc


#: The header tags the listing uses; converted while reading so corrupt values count as broken.
_LISTED_TAGS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "Rows")


@dataclass
class FolderScan:
    """What one folder holds.

    Attributes
    ----------
    folder
        The folder scanned (not its sub-folders).
    groups
        ``{SeriesInstanceUID: [(file, header), ...]}`` of the readable DICOM files (``""`` for
        files without the tag), files sorted by name.
    junk
        Files that are not DICOM, skipped: hidden files, ``.txt``/``.json``, unreadable files
        with nothing that claims DICOM.
    broken
        ``(file, why)`` for files that claim to be DICOM but cannot be used.
    dicomdirs
        DICOMDIR index files (skipped: they hold no pixels).
    """

    folder: Path
    groups: dict[str, list[tuple[Path, Dataset]]] = field(default_factory=dict)
    junk: list[Path] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)
    dicomdirs: list[Path] = field(default_factory=list)

    def describe_junk(self, limit: int = 8) -> str:
        """The skipped non-DICOM file names, at most ``limit`` of them."""
        names = [p.name for p in self.junk]
        return ", ".join(names[:limit]) + (
            f", ... ({len(names)} in all)" if len(names) > limit else ""
        )


#: Leading bytes of formats found among DICOM files (exports, scanned forms, archives).
_MAGIC = {
    b"\xff\xd8\xff": "a JPEG image",
    b"\x89PNG": "a PNG image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive",
    b"\x1f\x8b": "gzip data",
}


def _why_unreadable(path: Path, exc: BaseException) -> str:
    """Why pydicom could not read ``path``, in words (the file's real format when known)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        head = b""
    if not head:
        return "an empty file"
    kind = next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)
    if kind is not None:
        return kind
    if isinstance(exc, InvalidDicomError):
        return "no DICOM preamble and File Meta header"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(_PREAMBLE)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _carried_uid(path: Path, uids: list[str]) -> str | None:
    """The first of ``uids`` found in the file's first MiB, else ``None``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_UID_SEARCH_BYTES)
    except OSError:
        return None
    return next((uid for uid in uids if uid and uid.encode("ascii", "ignore") in head), None)


def _read_header(path: Path) -> Dataset:
    """The header of a DICOM file (no pixels), with the listed tags already decoded."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=False)
    for tag in _LISTED_TAGS:
        str(ds.get(tag, "") or "")  # decode now: a corrupt value raises here, not later
    return ds


def _is_dicomdir(ds: Dataset) -> bool:
    sop = str(getattr(ds.get("file_meta", Dataset()), "MediaStorageSOPClassUID", ""))
    return sop == _DICOMDIR_SOP or "DirectoryRecordSequence" in ds


def _classify_unreadable(scan: FolderScan, failed: list[tuple[Path, str]]) -> None:
    uids = sorted(scan.groups)
    for path, why in failed:
        uid = _carried_uid(path, uids)
        if _has_preamble(path):
            scan.broken.append((path, f"has the DICM preamble but cannot be read ({why})"))
        elif uid is not None:
            scan.broken.append(
                (path, f"carries SeriesInstanceUID {uid} but cannot be read ({why})")
            )
        elif path.name.lower().endswith(_DICOM_SUFFIXES):
            scan.broken.append((path, f"is named as a DICOM file but is not DICOM: {why}"))
        else:
            scan.junk.append(path)


def scan_folder(folder: Path) -> FolderScan:
    """Read the header of every plain file of ``folder`` and sort the files out.

    Returns
    -------
    FolderScan
        Series groups, junk, broken files and DICOMDIRs (see :class:`FolderScan`).
    """
    scan = FolderScan(folder)
    failed: list[tuple[Path, str]] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        name = path.name
        if name.startswith(".") or name.lower().endswith(_SKIPPED_SUFFIXES):
            scan.junk.append(path)
            continue
        if name.upper() == "DICOMDIR":
            scan.dicomdirs.append(path)
            continue
        try:
            ds = _read_header(path)
        except READ_ERRORS as exc:
            logger.debug("%s: not readable as DICOM (%s)", path, exc)
            failed.append((path, _why_unreadable(path, exc)))
            continue
        if _is_dicomdir(ds):
            scan.dicomdirs.append(path)
            continue
        scan.groups.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append((path, ds))
    if "" in scan.groups and len(scan.groups) > 1:
        for path, _ in scan.groups.pop(""):
            scan.broken.append(
                (
                    path,
                    "is DICOM without a SeriesInstanceUID beside files that have one "
                    "(a header cut short?)",
                )
            )
    _classify_unreadable(scan, failed)
    scan.broken.sort()
    return scan

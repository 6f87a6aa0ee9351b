"""The DICOM series a mask is exported onto, shared by the DICOM-SEG and RTSTRUCT writers.

A medseg label map is exported *onto the grid of a DICOM series*: the series is read with
:func:`medseg.io.load_volume` (array ``(columns, rows, slices)``, slices sorted along the
normal, RAS affine), its slice headers are kept in the same ``k`` order, and the mask is
brought onto that array by an axis permutation/flip only (nibabel orientation tools), never
resampled. Only the attributes in :data:`LINK_ATTRIBUTES` are copied from the scan.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pydicom.valuerep import MAX_VALUE_LEN

from medseg.errors import MedsegError
from medseg.io.dicom_scan import read_dicom
from medseg.io.geometry import ras_to_lps, world_coordinates
from medseg.io.reader import load_volume
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

#: Patient module (name, id, birth date, sex) and General Study module (uid, date, time, id,
#: accession, referring physician): the only attributes copied from the scan into the
#: exported object. All but StudyInstanceUID are Type 2 (present, possibly empty).
LINK_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
GRID_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class SourceSeries:
    """A DICOM image series to export onto.

    Attributes
    ----------
    folder
        The series folder.
    volume
        The series as :func:`medseg.io.load_volume` reads it: ``(columns, rows, slices)``,
        voxel-to-RAS affine in mm.
    headers
        One pixel-less header per slice, in the array's ``k`` order.
    files
        The slice files, in ``k`` order.
    """

    folder: Path
    volume: Volume
    headers: tuple[Dataset, ...]
    files: tuple[Path, ...]

    @property
    def sop_instance_uids(self) -> list[str]:
        """SOPInstanceUID of each slice, in ``k`` order."""
        return [str(ds.SOPInstanceUID) for ds in self.headers]

    @property
    def sop_class_uid(self) -> str:
        """SOPClassUID of the slices (e.g. CT Image Storage)."""
        return str(self.headers[0].SOPClassUID)

    @property
    def frame_of_reference_uid(self) -> str:
        """FrameOfReferenceUID of the series."""
        return str(self.headers[0].get("FrameOfReferenceUID", "") or "")


def _check_slice_order(headers: list[Dataset], volume: Volume, folder: Path) -> None:
    """Each header's ImagePositionPatient must be voxel ``(0, 0, k)`` of the volume."""
    to_index = np.linalg.inv(ras_to_lps(volume.affine))
    for k, ds in enumerate(headers):
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise MedsegError(
                "expected a series of single-frame image files (one file per slice), found a "
                f"multi-frame file {ds.filename}; export onto multi-frame series is not supported",
                folder,
            )
        ijk = to_index @ np.append(np.asarray(ds.ImagePositionPatient, dtype=float), 1.0)
        if np.abs(ijk[:3] - (0, 0, k)).max() > 1e-2:
            raise MedsegError(
                f"slice file {Path(ds.filename).name} is not at slice {k} of the stacked "
                f"series (found voxel {np.round(ijk[:3], 3).tolist()})",
                folder,
            )


def _shorten_link_values(headers: list[Dataset], folder: Path) -> None:
    """Cut link attributes longer than their VR allows (e.g. a 17-character StudyID, SH <= 16),
    so that the exported object is valid; logged at WARNING."""
    for keyword in LINK_ATTRIBUTES:
        limit = MAX_VALUE_LEN.get(dictionary_VR(keyword))
        value = str(headers[0].get(keyword, "") or "")
        if limit is None or len(value) <= limit:
            continue
        logger.warning(
            "%s: %s '%s' is longer than the %d characters DICOM allows; exported as '%s'",
            folder,
            keyword,
            value,
            limit,
            value[:limit],
        )
        for ds in headers:
            if str(ds.get(keyword, "") or "") == value:
                setattr(ds, keyword, value[:limit])


def _fill_identifiers(headers: list[Dataset], folder: Path) -> None:
    """Give the in-memory headers the UIDs the export must reference (the files stay as they are).

    Some anonymised exports blank the UIDs in the data set. SOPClassUID/SOPInstanceUID are then
    taken from the File Meta Information (the same values by definition); a blank
    StudyInstanceUID, SeriesInstanceUID or FrameOfReferenceUID gets a stand-in derived from
    the slices' SOP instance UIDs (the same for every export of the series), with a WARNING:
    the object does not link to the scan by that UID (a PACS files it in another study).
    """
    for ds in headers:
        meta = ds.get("file_meta", Dataset())
        for keyword, meta_keyword in (
            ("SOPClassUID", "MediaStorageSOPClassUID"),
            ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ):
            if not str(ds.get(keyword, "") or "") and str(meta.get(meta_keyword, "") or ""):
                setattr(ds, keyword, meta.get(meta_keyword))
        if not str(ds.get("SOPInstanceUID", "") or ""):
            raise MedsegError(
                "expected a SOPInstanceUID in every slice (the export references each slice), "
                f"found none in {Path(ds.filename).name}",
                folder,
            )
    instances = [str(ds.SOPInstanceUID) for ds in headers]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if all(str(ds.get(keyword, "") or "") for ds in headers):
            continue
        stand_in = generate_uid(entropy_srcs=[keyword, *instances])
        logger.warning(
            "%s: the slices carry no %s; the export uses the stand-in %s, so it will not "
            "link to the scan by this UID",
            folder,
            keyword,
            stand_in,
        )
        for ds in headers:
            setattr(ds, keyword, stand_in)


def read_source_series(
    source_dir: str | os.PathLike[str], *, series: str | None = None
) -> SourceSeries:
    """Read the DICOM series a mask is exported onto.

    Parameters
    ----------
    source_dir
        A folder holding one image series (or several, with ``series`` choosing one).
    series
        SeriesInstanceUID or 1-based series number, as for :func:`medseg.io.load_volume`.

    Returns
    -------
    SourceSeries
        The volume and its slice headers in ``k`` order (in memory only: blank UIDs filled,
        over-long link values cut, see :func:`_fill_identifiers`; the files are not touched).

    Raises
    ------
    MedsegError
        No DICOM series, several and none chosen, a broken series (as
        :func:`medseg.io.read_dicom_series`), or multi-frame image files.
    """
    folder = Path(source_dir)
    if not folder.is_dir():
        raise MedsegError("expected a DICOM series folder (--reference), found no folder", folder)
    volume = load_volume(folder, series=series, allow_empty=True)
    files = tuple(Path(f) for f in volume.meta["files"])
    headers = [read_dicom(f, expected="an image slice") for f in files]
    if len(headers) != volume.spatial_shape[2]:
        raise MedsegError(
            f"expected one file per slice ({volume.spatial_shape[2]}), found {len(headers)} "
            "file(s); export onto multi-frame series is not supported",
            folder,
        )
    _check_slice_order(headers, volume, folder)
    _fill_identifiers(headers, folder)
    _shorten_link_values(headers, folder)
    return SourceSeries(folder, volume, tuple(headers), files)


def link_attributes(source: Dataset) -> Dataset:
    """A new dataset holding only :data:`LINK_ATTRIBUTES` of ``source`` (absent ones empty)."""
    out = Dataset()
    if "SpecificCharacterSet" in source:
        out.SpecificCharacterSet = source.SpecificCharacterSet
    for keyword in LINK_ATTRIBUTES:
        setattr(out, keyword, source.get(keyword, "") or "")
    return out


def _grid_text(volume: Volume, shape: tuple[int, ...]) -> str:
    spacing = " x ".join(f"{s:.4g}" for s in volume.spacing)
    return (
        f"shape {'x'.join(map(str, shape))}, axes {''.join(volume.axcodes)}, spacing {spacing} "
        f"mm, origin {np.round(volume.affine[:3, 3], 3).tolist()} mm (RAS)"
    )


def _corner_distance(a: np.ndarray, b: np.ndarray, shape: tuple[int, int, int]) -> float:
    """Largest distance (mm) between the two affines' positions of the grid's 8 corners."""
    ends = [(0, n - 1) for n in shape]
    corners = np.array([[i, j, k] for i in ends[0] for j in ends[1] for k in ends[2]], float)
    diff = world_coordinates(a, corners) - world_coordinates(b, corners)
    return float(np.linalg.norm(diff, axis=1).max())


def label_array(volume: Volume, what: str) -> np.ndarray:
    """The voxels of a label map as a non-negative integer array (bool becomes uint8)."""
    arr = np.asarray(volume.array)
    if arr.ndim != 3:
        raise MedsegError(f"expected a 3D {what}, found shape {tuple(arr.shape)}", volume.path)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.rint(arr)):
            raise MedsegError(
                f"expected a {what} of integer label values, found non-integer {arr.dtype} values",
                volume.path,
            )
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise MedsegError(
            f"expected non-negative label values in the {what}, found {arr.min()}", volume.path
        )
    return arr


def on_source_grid(mask: Volume, source: SourceSeries, *, what: str = "mask") -> np.ndarray:
    """The label map reordered onto the series array ``(columns, rows, slices)``.

    Only a permutation/flip of axes is applied (nibabel ``io_orientation`` /
    ``apply_orientation``); the reordered grid must then match the series grid: same shape and
    every grid corner within :data:`GRID_TOLERANCE_MM` (1e-3 mm).

    Raises
    ------
    MedsegError
        Naming both the mask and the series, with both grids, when they differ.
    """
    arr = label_array(mask, what)
    target = source.volume
    ornt = ornt_transform(io_orientation(mask.affine), io_orientation(target.affine))
    moved = apply_orientation(arr, ornt)
    affine = mask.affine @ inv_ornt_aff(ornt, arr.shape)
    shape = target.spatial_shape
    dist = _corner_distance(affine, target.affine, shape) if moved.shape == shape else float("inf")
    if dist > GRID_TOLERANCE_MM:
        found = "a different shape" if dist == float("inf") else f"corners {dist:.4g} mm apart"
        raise MedsegError(
            f"the {what} is not on the grid of the DICOM series {source.folder} ({found}): "
            f"expected {_grid_text(target, shape)}; found {_grid_text(mask, arr.shape)}. "
            "Export a mask predicted on this series (same voxels, any axis order)",
            mask.path,
        )
    return np.ascontiguousarray(moved)


def present_labels(
    grid: np.ndarray, labels: Mapping[int, str], path: Path | None
) -> list[tuple[int, str]]:
    """``(value, name)`` of every non-zero label value present, sorted by value.

    Named labels without voxels are logged at WARNING and omitted; a value without a name is
    called ``label_<value>``.

    Raises
    ------
    MedsegError
        When no voxel is labelled (a DICOM object without a segment would be invalid).
    """
    present = [int(v) for v in np.unique(grid) if v != 0]
    if not present:
        raise MedsegError(
            "expected at least one labelled (non-zero) voxel, found an empty mask: there is "
            "nothing to export (a DICOM-SEG or RTSTRUCT without segments is invalid)",
            path,
        )
    empty = sorted(int(v) for v in labels if int(v) != 0 and int(v) not in present)
    if empty:
        names = ", ".join(f"{labels[v]}={v}" for v in empty)
        logger.warning("%s: label(s) %s have no voxels; omitted from the export", path, names)
    return [(v, str(labels.get(v, f"label_{v}"))) for v in present]


def output_file(
    out: str | os.PathLike[str], case: str, suffix: str, source: SourceSeries, *, overwrite: bool
) -> Path:
    """The file to write: ``out`` itself when it ends in ``.dcm``, else ``out/<case><suffix>``.

    Raises
    ------
    MedsegError
        The file exists (and not ``overwrite``), is a folder, or lies in the series folder (the
        input is never modified); ``out`` is an existing file not named ``.dcm``.
    """
    out = Path(out)
    if out.suffix.lower() != ".dcm" and out.exists() and not out.is_dir():
        raise MedsegError(
            "expected a .dcm file name or a folder to write into, found an existing file", out
        )
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", case)
    target = out if out.suffix.lower() == ".dcm" else out / f"{safe}{suffix}"
    folder = source.folder.resolve()
    parent = target.parent.resolve()
    if parent == folder or folder in parent.parents:
        raise MedsegError(
            f"expected an output outside the source series folder {source.folder} (the input "
            "is never modified), found a path inside it",
            target,
        )
    if target.is_dir():
        raise MedsegError("expected an output file, found a folder", target)
    if target.exists() and not overwrite:
        raise MedsegError(
            "output file exists (pass --force / overwrite=True to replace it)", target
        )
    return target

"""Writing a volume as a DICOM series (one CT or MR Image Storage file per slice).

Used for synthetic test data and demos: the files carry the volume's exact geometry
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing) so that any reader (medseg,
SimpleITK, 3D Slicer) places every voxel at the same world position (LPS in the files).
"""

from __future__ import annotations

import copy
import datetime
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from medseg.errors import MedsegError
from medseg.io.atomic import atomic_path
from medseg.io.geometry import ras_to_lps
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
}


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (the DICOM DS limit)."""
    return format_number_as_ds(float(value))


def _slice_axes(volume: Volume, path: Path | None) -> tuple[np.ndarray, np.ndarray, float]:
    """LPS affine, ImageOrientationPatient (6,) and the signed slice step along the normal."""
    lps = ras_to_lps(volume.affine)
    cols = lps[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing <= 0):
        raise MedsegError(f"expected positive voxel spacing, found {tuple(spacing)}", path)
    unit = cols / spacing
    if abs(unit[:, 0] @ unit[:, 1]) > 1e-6:
        raise MedsegError("DICOM slices need orthogonal row and column axes (i and j)", path)
    normal = np.cross(unit[:, 0], unit[:, 1])
    along = float(unit[:, 2] @ normal)
    if abs(abs(along) - 1.0) > 1e-6:
        raise MedsegError(
            "DICOM series need the slice axis k perpendicular to the slices (a sheared "
            f"affine is not representable), found cos = {along:.6f}",
            path,
        )
    return lps, np.concatenate([unit[:, 0], unit[:, 1]]), float(np.sign(along) * spacing[2])


def _stored_values(
    array: np.ndarray, slope: float, intercept: float
) -> tuple[np.ndarray, np.dtype, int]:
    """Stored pixel values, their dtype (uint16 or int16) and PixelRepresentation."""
    if slope == 0:
        raise MedsegError("rescale_slope must be non-zero")
    stored = np.rint((np.asarray(array, dtype=np.float64) - intercept) / slope)
    lo, hi = float(stored.min()), float(stored.max())
    if lo >= 0 and hi <= 65535:
        return stored.astype(np.uint16), np.dtype(np.uint16), 0
    if lo >= -32768 and hi <= 32767:
        return stored.astype(np.int16), np.dtype(np.int16), 1
    raise MedsegError(
        f"values {lo:g}..{hi:g} (after rescale slope {slope:g}, intercept {intercept:g}) do not "
        "fit 16-bit pixels; choose another rescale_slope/rescale_intercept"
    )


def _file_names(n: int, names: Sequence[str] | None, rng: np.random.Generator | None) -> list[str]:
    if names is not None:
        if len(names) != n or len(set(names)) != n:
            raise MedsegError(f"expected {n} distinct file names, found {len(names)}")
        return [str(x) for x in names]
    if rng is None:
        return [f"slice_{k + 1:04d}.dcm" for k in range(n)]
    # Random names in a random order: readers must sort by position, not by name.
    tokens = {f"{int(v):08x}" for v in rng.integers(0, 2**32, size=4 * n)}
    picked = list(rng.permutation(sorted(tokens)))[:n]
    return [f"IM_{t}.dcm" for t in picked]


def _base_dataset(modality: str, description: str, series_uid: str, study_uid: str) -> Dataset:
    now = datetime.datetime.now()
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.Modality = modality
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid()
    ds.SeriesDescription = description
    ds.SeriesNumber = 1
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "MEDSEG-SYNTH"
    ds.StudyDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = now.strftime("%H%M%S")
    ds.Manufacturer = "medseg"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    return ds


def write_dicom_series(
    volume: Volume,
    folder: str | Path,
    *,
    modality: str = "CT",
    series_description: str = "medseg synthetic",
    series_uid: str | None = None,
    study_uid: str | None = None,
    file_names: Sequence[str] | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    rng: np.random.Generator | None = None,
) -> list[Path]:
    """Write a 3D volume as a DICOM series, one file per slice ``k``.

    Parameters
    ----------
    volume
        ``array`` of shape ``(I, J, K)``: ``i`` runs along a DICOM row (columns), ``j`` down
        the columns (rows), ``k`` across slices; ``affine`` voxel-to-RAS in mm. Axes ``i`` and
        ``j`` must be orthogonal and ``k`` perpendicular to them; any (oblique) orientation
        and anisotropic spacing is allowed. Values are real-world values (e.g. HU).
    folder
        Output folder (created if needed).
    modality
        ``"CT"`` (CT Image Storage) or ``"MR"`` (MR Image Storage).
    series_description, series_uid, study_uid
        Series tags; UIDs are generated when ``None``.
    file_names
        One name per slice in ``k`` order; by default ``slice_0001.dcm``..., or shuffled
        random names when ``rng`` is given (so tests prove readers ignore names).
    rescale_slope, rescale_intercept
        Stored value = round((value - intercept) / slope), as uint16 when it fits, else int16.
    rng
        Random generator for the shuffled names.

    Returns
    -------
    list of pathlib.Path
        The written files, in slice (``k``) order.

    Notes
    -----
    Readers order slices along the normal (row x column direction). When the affine's ``k``
    axis points against that normal (a left-handed voxel grid), a reader returns the slices in
    reverse order with the same world geometry.
    """
    modality = modality.upper()
    if modality not in SOP_CLASSES:
        raise MedsegError(f"modality must be one of {sorted(SOP_CLASSES)}, found '{modality}'")
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise MedsegError(f"expected a 3D volume, found shape {array.shape}", volume.path)
    lps, iop, _ = _slice_axes(volume, volume.path)
    stored, dtype, pixel_rep = _stored_values(array, rescale_slope, rescale_intercept)
    n_i, n_j, n_k = array.shape
    names = _file_names(n_k, file_names, rng)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    base = _base_dataset(
        modality, series_description, series_uid or generate_uid(), study_uid or generate_uid()
    )
    base.Rows, base.Columns = n_j, n_i
    base.PixelRepresentation = pixel_rep
    base.ImageOrientationPatient = [_ds(v) for v in iop]
    base.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # (row spacing, column spacing)
    base.SliceThickness = base.SpacingBetweenSlices = _ds(spacing[2])
    base.RescaleSlope, base.RescaleIntercept = _ds(rescale_slope), _ds(rescale_intercept)
    if modality == "CT":
        base.RescaleType = "HU"
    normal = np.cross(iop[:3], iop[3:])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n_k):
        ds = _slice_dataset(base, lps @ np.array([0.0, 0.0, k, 1.0]), normal, k)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T.astype(dtype)).tobytes()
        path = folder / names[k]
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    logger.debug("wrote %d %s slices to %s", n_k, modality, folder)
    return paths


def _slice_dataset(base: Dataset, position: np.ndarray, normal: np.ndarray, k: int) -> Dataset:
    ds = copy.deepcopy(base)
    sop_uid = generate_uid()
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_ds(v) for v in position[:3]]
    ds.SliceLocation = _ds(float(position[:3] @ normal))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = base.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds

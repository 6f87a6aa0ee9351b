"""Test helpers (``from rtstruct_helpers import ...``): synthetic CT series, phantom masks and
RTSTRUCT files whose contours are drawn from a mask (``skimage.measure.find_contours``).

Only for tests: the production writer is ``medseg/io/rtstruct_write.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from skimage.measure import find_contours

from medseg.io import Volume, load_volume, write_dicom_series
from medseg.io.atomic import atomic_path
from medseg.io.geometry import ras_to_lps, world_coordinates
from medseg.io.label_common import RTSTRUCT_SOP_CLASS

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"

#: One contour: (slice index k of the reference, LPS points (N, 3) in mm, ContourGeometricType).
Contour = tuple[int, np.ndarray, str]


def phantom_mask(shape: tuple[int, int, int], *, hole: bool = True) -> np.ndarray:
    """An off-centre ellipsoid ``(I, J, K)`` (bool), hollow on its middle slices when ``hole``."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    centre = np.array(shape) * np.array([0.45, 0.55, 0.5])
    radii = np.array(shape) * np.array([0.33, 0.3, 0.4])
    r = np.sqrt((((idx - centre) / radii) ** 2).sum(-1))
    mask = r <= 1.0
    if hole:
        inner = (((idx[..., :2] - centre[:2]) / (radii[:2] * 0.4)) ** 2).sum(-1) <= 1.0
        k0 = shape[2] // 2
        inner[:, :, : k0 - 1] = False
        inner[:, :, k0 + 2 :] = False
        mask &= ~inner
    return mask


def ct_series(volume_affine: np.ndarray, shape: tuple[int, int, int], folder: Path) -> Volume:
    """Write a random-intensity CT series on the grid and return it as medseg reads it."""
    rng = np.random.default_rng(5)
    vol = Volume(rng.integers(-100, 100, size=shape).astype(np.int16), volume_affine)
    write_dicom_series(vol, folder, rng=rng)
    return load_volume(folder)


def mask_contours(mask: np.ndarray, affine: np.ndarray) -> list[Contour]:
    """Closed contours of a mask ``(I, J, K)`` per slice, in patient LPS mm.

    The 0.5 iso-line of ``find_contours`` runs half-way between inside and outside voxel centres,
    so filling it by voxel centres gives the mask back; holes come out as separate contours.
    """
    lps = ras_to_lps(affine)
    out: list[Contour] = []
    for k in range(mask.shape[2]):
        plane = np.pad(mask[:, :, k].astype(float), 1)
        for line in find_contours(plane, 0.5):
            ij = line - 1.0  # undo the padding
            ijk = np.column_stack([ij, np.full(len(ij), float(k))])
            out.append((k, world_coordinates(lps, ijk), "CLOSED_PLANAR"))
    return out


def _seq(*items: Dataset) -> DicomSequence:
    return DicomSequence(list(items))


def _image_ref(sop_uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT_IMAGE
    ref.ReferencedSOPInstanceUID = sop_uid
    return ref


def _contour_item(contour: Contour, sop_uids: Sequence[str]) -> Dataset:
    k, points, kind = contour
    item = Dataset()
    if 0 <= k < len(sop_uids):
        item.ContourImageSequence = _seq(_image_ref(sop_uids[k]))
    item.ContourGeometricType = kind
    item.NumberOfContourPoints = len(points)
    item.ContourData = [f"{v:.6f}" for v in np.asarray(points, dtype=float).ravel()]
    return item


def rtstruct_dataset(
    reference: Volume,
    rois: Mapping[str, Sequence[Contour]],
    *,
    frame_of_reference_uid: str | None = None,
    series_uid: str | None = None,
) -> Dataset:
    """A minimal RT Structure Set on ``reference`` (a DICOM series read by ``load_volume``).

    ``rois`` maps ROIName -> contours (ROINumber 1, 2, ... in order; an empty list gives an ROI
    without contours). The UIDs come from ``reference.meta`` unless overridden.
    """
    meta = reference.meta
    sop_uids = list(meta.get("sop_instance_uids") or [generate_uid() for _ in range(99)])
    frame_uid = frame_of_reference_uid or meta.get("frame_of_reference_uid") or generate_uid()
    ds = Dataset()
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID = meta.get("study_uid") or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "MEDSEG-SYNTH"
    ds.StructureSetLabel = "synthetic"
    series = Dataset()
    series.SeriesInstanceUID = series_uid or meta.get("series_uid") or generate_uid()
    series.ContourImageSequence = _seq(*[_image_ref(u) for u in sop_uids])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = ds.StudyInstanceUID
    study.RTReferencedSeriesSequence = _seq(series)
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = _seq(study)
    ds.ReferencedFrameOfReferenceSequence = _seq(frame)
    ds.StructureSetROISequence = _seq()
    ds.ROIContourSequence = _seq()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = [255, 0, 0]
        if contours:
            rc.ContourSequence = _seq(*[_contour_item(c, sop_uids) for c in contours])
        ds.ROIContourSequence.append(rc)
    return ds


def save_dataset(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file (Part 10, explicit VR little endian), atomically."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    with atomic_path(Path(path)) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)


def write_rtstruct(
    path: Path, reference: Volume, rois: Mapping[str, Sequence[Contour]], **kwargs: str
) -> Path:
    """:func:`rtstruct_dataset` saved to ``path``."""
    return save_dataset(rtstruct_dataset(reference, rois, **kwargs), path)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total

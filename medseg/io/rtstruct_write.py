"""Writing a medseg label map as a DICOM RT Structure Set (RTSTRUCT) with pydicom.

One ROI per label value (or per lesion instance), ``CLOSED_PLANAR`` contours per slice in
patient LPS millimetres, each contour referencing its slice. Holes and islands inside holes
are extra contours inside the outer one: RTSTRUCT readers fill contours with the even-odd rule,
so nesting is all a hole needs. highdicom has no RTSTRUCT writer, and rt-utils pulls in
opencv-python, so the data set is built here with pydicom.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.coding import Code
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid
from skimage.measure import find_contours

from medseg import __version__
from medseg.io import label_common
from medseg.io.atomic import atomic_path
from medseg.io.dicom_source import (
    SourceSeries,
    link_attributes,
    on_source_grid,
    output_file,
    present_labels,
    read_source_series,
)
from medseg.io.file_names import case_name
from medseg.io.geometry import ras_to_lps
from medseg.io.seg_codes import AlgorithmInfo, display_colours, segment_code
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

RTSTRUCT_SOP_CLASS = UID(label_common.RTSTRUCT_SOP_CLASS)  # RT Structure Set Storage
#: Referenced SOP Class of the RT Referenced Study Sequence, as treatment-planning systems write.
DETACHED_STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
RTSTRUCT_SERIES_NUMBER = 902


@dataclass(frozen=True)
class Roi:
    """One structure: its name and the voxels it covers (``value``, optionally one instance)."""

    number: int
    name: str
    value: int
    instance: int | None = None

    def voxels(self, grid: np.ndarray, instances: np.ndarray | None) -> np.ndarray:
        """Boolean ``(columns, rows, slices)`` array of this ROI's voxels."""
        hit = grid == self.value
        if self.instance is not None and instances is not None:
            hit &= instances == self.instance
        return hit


def slice_contours(voxels: np.ndarray) -> list[np.ndarray]:
    """Closed contours of one slice, each ``(N, 2)`` in ``(i, j)`` voxel coordinates.

    Chosen on evidence: scikit-image ``find_contours`` at level 0.5 on the zero-padded slice
    puts the contour on the pixel edges (corners cut by a 1/8-pixel triangle), so every voxel
    centre lands on the right side of it. Read back with even-odd filling of voxel centres
    (``skimage.draw.polygon2mask``, and :func:`medseg.io.rtstruct.read_rtstruct`), the Dice
    per ROI was 1.0000 on a hollow ellipsoid with an island in the hole, on random blobs and
    on the four sarcoma masks (STS_019/033/036/038); the polygon area was 0.96 (random
    blobs of a few voxels) to 0.9999 (the tumours) of the voxel count. A pixel-edge tracer
    (``find_contours`` on the 2x upsampled slice, corners cut by 1/32 pixel) gave the same
    Dice 1.0000 and area 0.99-1.00 with twice the points: not worth it. Collinear points are
    dropped (:func:`_corners`), about 3x fewer points.
    """
    padded = np.pad(voxels.astype(np.float32), 1)
    out = []
    for contour in find_contours(padded, 0.5):
        if np.allclose(contour[0], contour[-1]):
            contour = contour[:-1]  # CLOSED_PLANAR: the closing segment is implied
        points = _corners(contour - 1.0)
        if len(points) >= 3:
            out.append(points)
    return out


def _corners(points: np.ndarray) -> np.ndarray:
    """The points of a closed polygon ``(N, 2)`` where it turns (exactly collinear ones dropped).

    Written by hand (vectorised): ``skimage.measure.approximate_polygon`` is a Python loop
    that took 2.4 s of a 6 s export of a 512 x 512 x 20 series; the geometry is unchanged.
    """
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    forward = (before * after).sum(axis=1) > 0
    turns = (np.abs(cross) > 1e-9) | ~forward  # a point where the outline doubles back stays
    return points[turns] if turns.sum() >= 3 else points


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _image_ref(source: SourceSeries, k: int) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.sop_class_uid
    ref.ReferencedSOPInstanceUID = source.sop_instance_uids[k]
    return ref


def _contours(
    voxels: np.ndarray, source: SourceSeries, lps: np.ndarray
) -> Iterator[tuple[int, np.ndarray]]:
    """``(k, points (N, 3) LPS mm)`` for every contour of every slice holding voxels."""
    for k in np.flatnonzero(voxels.any(axis=(0, 1))):
        for ij in slice_contours(voxels[:, :, k]):
            ijk1 = np.column_stack([ij, np.full(len(ij), k), np.ones(len(ij))])
            yield int(k), (ijk1 @ lps.T)[:, :3]


def _roi_contour(
    roi: Roi, voxels: np.ndarray, source: SourceSeries, rgb: tuple[int, int, int]
) -> Dataset:
    lps = ras_to_lps(source.volume.affine)
    items = []
    for number, (k, points) in enumerate(_contours(voxels, source, lps), start=1):
        item = Dataset()
        item.ContourImageSequence = Sequence([_image_ref(source, k)])
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.NumberOfContourPoints = len(points)
        item.ContourNumber = number
        # Fixed 4 decimals (0.1 micrometre) keep every value within DS's 16 characters.
        item.ContourData = [f"{v:.4f}" for v in points.ravel()]
        items.append(item)
    contour = Dataset()
    contour.ReferencedROINumber = roi.number
    contour.ROIDisplayColor = list(rgb)
    contour.ContourSequence = Sequence(items)
    return contour


def _referenced_frame(source: SourceSeries) -> Dataset:
    series = Dataset()
    series.SeriesInstanceUID = str(source.headers[0].SeriesInstanceUID)
    series.ContourImageSequence = Sequence(
        [_image_ref(source, k) for k in range(len(source.headers))]
    )
    study = Dataset()
    study.ReferencedSOPClassUID = DETACHED_STUDY_SOP_CLASS
    study.ReferencedSOPInstanceUID = str(source.headers[0].StudyInstanceUID)
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = source.frame_of_reference_uid
    frame.RTReferencedStudySequence = Sequence([study])
    return frame


def _roi_items(roi: Roi, source: SourceSeries, algorithm: AlgorithmInfo) -> tuple[Dataset, Dataset]:
    """The StructureSetROISequence and RTROIObservationsSequence items of one ROI."""
    code = segment_code(roi.name)
    item = Dataset()
    item.ROINumber = roi.number
    item.ReferencedFrameOfReferenceUID = source.frame_of_reference_uid
    item.ROIName = roi.name[:64]
    item.ROIGenerationAlgorithm = "AUTOMATIC"
    item.ROIGenerationDescription = algorithm.description()
    obs = Dataset()
    obs.ObservationNumber = roi.number
    obs.ReferencedROINumber = roi.number
    obs.RTROIInterpretedType = code.interpreted_type
    obs.ROIInterpreter = ""
    obs.RTROIIdentificationCodeSequence = Sequence([_code_item(code.type)])
    return item, obs


def _base_dataset(
    source: SourceSeries, series_description: str, algorithm: AlgorithmInfo
) -> Dataset:
    now = datetime.datetime.now()
    ds = link_attributes(source.headers[0])
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate = ds.StructureSetDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.StructureSetTime = ds.SeriesTime = now.strftime("%H%M%S")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = RTSTRUCT_SERIES_NUMBER
    ds.SeriesDescription = series_description[:64]
    ds.OperatorsName = ""
    ds.Manufacturer = "medseg"
    ds.ManufacturerModelName = (algorithm.model_name or algorithm.name)[:64]
    ds.SoftwareVersions = f"medseg {__version__}"
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = source.frame_of_reference_uid
    ds.PositionReferenceIndicator = source.headers[0].get("PositionReferenceIndicator", "") or ""
    ds.StructureSetLabel = "MEDSEG"
    ds.StructureSetDescription = algorithm.description(limit=1024)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _rois(
    grid: np.ndarray, instances: np.ndarray | None, labels: Mapping[int, str], path: Path | None
) -> list[Roi]:
    """One ROI per label present, or per (label, instance id) when an instance map is given."""
    present = present_labels(grid, labels, path)
    if instances is None:
        return [Roi(n, name, value) for n, (value, name) in enumerate(present, start=1)]
    rois: list[Roi] = []
    for value, name in present:
        for i in (int(i) for i in np.unique(instances[grid == value])):
            if i == 0:
                logger.warning(
                    "%s: label %s has voxels outside every instance; they form the ROI '%s'",
                    path,
                    name,
                    name,
                )
            rois.append(Roi(len(rois) + 1, f"{name}_{i}" if i else name, value, i))
    return rois


def build_rtstruct(
    grid: np.ndarray,
    source: SourceSeries,
    rois: list[Roi],
    *,
    instances: np.ndarray | None = None,
    algorithm: AlgorithmInfo,
    series_description: str,
) -> Dataset:
    """Build the RT Structure Set of a label map already on the source grid.

    Parameters
    ----------
    grid, instances
        Label values and instance ids (or ``None``), shape ``(columns, rows, slices)`` as the
        series array.
    source
        The series (headers in ``k`` order).
    rois
        The structures (:func:`_rois`).
    algorithm, series_description
        As for :func:`write_rtstruct`.
    """
    ds = _base_dataset(source, series_description, algorithm)
    ds.ReferencedFrameOfReferenceSequence = Sequence([_referenced_frame(source)])
    roi_items, observations, contours = [], [], []
    for roi, rgb in zip(rois, display_colours(len(rois)), strict=True):
        item, obs = _roi_items(roi, source, algorithm)
        roi_items.append(item)
        observations.append(obs)
        contours.append(_roi_contour(roi, roi.voxels(grid, instances), source, rgb))
    ds.StructureSetROISequence = Sequence(roi_items)
    ds.ROIContourSequence = Sequence(contours)
    ds.RTROIObservationsSequence = Sequence(observations)
    return ds


def write_rtstruct(
    mask: Volume,
    source_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    labels: Mapping[int, str],
    instances: Volume | None = None,
    algorithm: AlgorithmInfo | None = None,
    series_description: str = "medseg structures",
    series: str | None = None,
    case: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a label map as an RTSTRUCT on the grid of its DICOM source series.

    Parameters
    ----------
    mask
        Label map, ``array`` of shape ``(I, J, K)`` with non-negative integer values (0 is
        background), ``affine`` voxel-to-RAS in mm, on the series grid up to an axis
        permutation/flip (corners within 1e-3 mm).
    source_dir
        Folder of the DICOM image series (one file per slice).
    out
        A ``.dcm`` file, or a folder that receives ``<case>_rtstruct.dcm``.
    labels
        ``{value: name}``: ROI names (``label_<value>`` for a value without a name; named
        values without voxels are omitted with a WARNING). The name also picks the
        RTROIInterpretedType (``ORGAN``, ``GTV`` or empty) and the RT ROI identification code.
    instances
        Optional instance map (e.g. connected lesions numbered 1..n) on the same grid: one ROI
        ``<label>_<id>`` per instance id inside each label; labelled voxels outside every
        instance form the ROI ``<label>`` (WARNING).
    algorithm
        Model identity, written into ROIGenerationDescription and StructureSetDescription.
    series_description, series, case, overwrite
        As for :func:`medseg.io.dicom_seg_write.write_dicom_seg`.

    Returns
    -------
    pathlib.Path
        The written file (atomically).

    Raises
    ------
    MedsegError
        No or several series in ``source_dir``, a mask or instance map off the series grid,
        an empty mask, an existing output without ``overwrite``.

    Notes
    -----
    Contours are ``CLOSED_PLANAR`` polygons in patient LPS mm on the slice planes, one
    ContourImageSequence item (the slice's SOP instance) per contour; the
    ReferencedFrameOfReferenceSequence lists every slice of the series. Copied from the scan,
    and nothing else: PatientName, PatientID, PatientBirthDate, PatientSex,
    StudyInstanceUID, StudyDate, StudyTime, StudyID, AccessionNumber, ReferringPhysicianName
    (as for the DICOM-SEG), SpecificCharacterSet, and the Frame of Reference module
    (FrameOfReferenceUID, PositionReferenceIndicator) that the IOD requires.
    """
    source = read_source_series(source_dir, series=series)
    grid = on_source_grid(mask, source)
    inst = None if instances is None else on_source_grid(instances, source, what="instance map")
    rois = _rois(grid, inst, labels, mask.path)
    target = output_file(
        out, case or case_name(mask.path), "_rtstruct.dcm", source, overwrite=overwrite
    )
    ds = build_rtstruct(
        grid,
        source,
        rois,
        instances=inst,
        algorithm=algorithm or AlgorithmInfo(),
        series_description=series_description,
    )
    with atomic_path(target) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    logger.info("wrote RTSTRUCT with %d ROI(s) to %s", len(rois), target)
    return target

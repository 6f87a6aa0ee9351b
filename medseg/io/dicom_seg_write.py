"""Writing a medseg label map as a BINARY DICOM Segmentation (DICOM-SEG) with highdicom.

The SEG references its source series frame by frame (highdicom derives the Referenced Series
and per-frame Derivation Image references, the Frame of Reference and the plane positions
from the source headers). Segment ``n`` holds the ``n``-th non-zero label value present in the
mask, in increasing order; empty frames are omitted (readers fill them with zeros).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medseg import __version__
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
from medseg.io.optional_imports import import_highdicom
from medseg.io.seg_codes import AlgorithmInfo, display_colours, segment_code
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 901
#: Source attributes highdicom reads to reference and place each frame (besides
#: :data:`medseg.io.dicom_source.LINK_ATTRIBUTES`).
_GEOMETRY_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "Modality",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
)


def _source_header(ds: Dataset) -> Dataset:
    """The part of a slice header highdicom may see: link attributes and geometry only.

    highdicom copies the whole Patient and Study modules of its first source image; handing
    it this subset makes the SEG carry exactly the link attributes and nothing else.
    """
    out = link_attributes(ds)
    for keyword in _GEOMETRY_ATTRIBUTES:
        if keyword in ds:
            out.add(ds[keyword])
    out.file_meta = ds.file_meta
    return out


def _segment_descriptions(
    hd: Any, segments: list[tuple[int, str]], algorithm: AlgorithmInfo
) -> list[Any]:
    ident = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version,
        parameters=algorithm.parameters() or None,
    )
    out = []
    for number, ((_, name), rgb) in enumerate(
        zip(segments, display_colours(len(segments)), strict=True), start=1
    ):
        code = segment_code(name)
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=code.category,
                segmented_property_type=code.type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=ident,
                display_color=hd.color.CIELabColor.from_rgb(*rgb),
            )
        )
    return out


def _frames(grid: np.ndarray, segments: list[tuple[int, str]]) -> np.ndarray:
    """Segment numbers per source frame, shape ``(slices, rows, columns)``, uint8 or uint16."""
    lut = np.zeros(int(grid.max()) + 1, dtype=np.uint16 if len(segments) > 255 else np.uint8)
    for number, (value, _) in enumerate(segments, start=1):
        lut[value] = number
    # grid is (columns, rows, slices): frame k is grid[:, :, k].T, (rows, columns).
    return np.ascontiguousarray(lut[grid].transpose(2, 1, 0))


def build_dicom_seg(
    grid: np.ndarray,
    source: SourceSeries,
    segments: list[tuple[int, str]],
    *,
    algorithm: AlgorithmInfo,
    series_description: str,
) -> Dataset:
    """Build the highdicom Segmentation of a label map already on the source grid.

    Parameters
    ----------
    grid
        Label values, shape ``(columns, rows, slices)`` as the series array.
    source
        The series (headers in ``k`` order).
    segments
        ``(label value, segment label)`` pairs, one per segment, in segment-number order.
    algorithm, series_description
        As for :func:`write_dicom_seg`.

    Returns
    -------
    pydicom.dataset.Dataset
        A ``highdicom.seg.Segmentation``.
    """
    hd = import_highdicom("DICOM-SEG export")
    seg = hd.seg.Segmentation(
        source_images=[_source_header(ds) for ds in source.headers],
        pixel_array=_frames(grid, segments),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(hd, segments, algorithm),
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name=(algorithm.model_name or algorithm.name)[:64],
        software_versions=f"medseg {__version__}",
        # Type 1 in the Enhanced General Equipment module; the weights identify this "device"
        device_serial_number=(algorithm.weights_hash or "none")[:64],
        content_description=algorithm.description(),
        content_label="MEDSEG",
    )
    seg.SeriesDescription = series_description[:64]
    return seg


def write_dicom_seg(
    mask: Volume,
    source_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    labels: Mapping[int, str],
    algorithm: AlgorithmInfo | None = None,
    series_description: str = "medseg segmentation",
    series: str | None = None,
    case: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a label map as a BINARY DICOM-SEG on the grid of its DICOM source series.

    Parameters
    ----------
    mask
        Label map, ``array`` of shape ``(I, J, K)`` with non-negative integer values (0 is
        background), ``affine`` voxel-to-RAS in mm. Its grid must be the series grid up to an
        axis permutation/flip (e.g. a prediction saved as NIfTI, in any axis order); corners
        within 1e-3 mm.
    source_dir
        Folder of the DICOM image series the mask was predicted on (one file per slice).
    out
        A ``.dcm`` file, or a folder that receives ``<case>_seg.dcm``.
    labels
        ``{value: name}``; the name becomes the segment label and picks the segmented property
        category/type (:func:`medseg.io.seg_codes.segment_code`). Values present without a
        name are called ``label_<value>``; named values without voxels are omitted (WARNING).
    algorithm
        Model identity for the algorithm identification (name ``medseg``, version, family
        "Artificial Intelligence", parameters ``model`` and ``weights_sha256``) and the
        content description; default: medseg with no model named.
    series_description
        SeriesDescription of the new SEG series.
    series
        SeriesInstanceUID or number when ``source_dir`` holds several series.
    case
        Case id for the file name; default: the mask's file name without its suffix.
    overwrite
        Replace an existing output file.

    Returns
    -------
    pathlib.Path
        The written file (written atomically: no half-written file on failure).

    Raises
    ------
    MedsegError
        No or several series in ``source_dir``, a mask off the series grid (both grids named),
        an empty mask, non-integer labels, an existing output without ``overwrite``.

    Notes
    -----
    Copied from the scan, and nothing else: PatientName, PatientID, PatientBirthDate,
    PatientSex, StudyInstanceUID, StudyDate, StudyTime, StudyID, AccessionNumber,
    ReferringPhysicianName (absent ones are written empty, over-long ones cut to their VR's
    length with a warning) and SpecificCharacterSet, plus what highdicom derives to reference
    and place the frames (the series' and each frame's SOP instance UIDs, FrameOfReferenceUID,
    PositionReferenceIndicator, pixel spacing, orientation, positions). A series whose files
    carry blank UIDs is referenced through the File Meta SOP instance UIDs and stand-in
    study/series UIDs (:func:`medseg.io.dicom_source.read_source_series`, with a warning).
    """
    source = read_source_series(source_dir, series=series)
    grid = on_source_grid(mask, source)
    segments = present_labels(grid, labels, mask.path)
    target = output_file(out, case or case_name(mask.path), "_seg.dcm", source, overwrite=overwrite)
    seg = build_dicom_seg(
        grid,
        source,
        segments,
        algorithm=algorithm or AlgorithmInfo(),
        series_description=series_description,
    )
    with atomic_path(target) as tmp:
        seg.save_as(tmp)
    logger.info("wrote DICOM-SEG with %d segment(s) to %s", len(segments), target)
    return target

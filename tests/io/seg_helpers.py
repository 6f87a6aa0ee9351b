"""Test helpers (``from seg_helpers import ...``): DICOM-SEG files built with highdicom from
masks on a synthetic DICOM series. Only for tests: the production writer is
``medseg/io/dicom_seg_write.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medseg.io import Volume
from medseg.io.atomic import atomic_path

TYPE_2 = ("PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber", "ReferringPhysicianName")


def series_datasets(reference: Volume) -> list[pydicom.Dataset]:
    """The reference series' files (``reference.meta["files"]``) in slice (``k``) order."""
    by_uid = {}
    for f in reference.meta["files"]:
        ds = pydicom.dcmread(f)
        for keyword in TYPE_2:  # highdicom copies these patient/study tags; medseg's CT lacks them
            if keyword not in ds:
                setattr(ds, keyword, "")
        by_uid[str(ds.SOPInstanceUID)] = ds
    return [by_uid[u] for u in reference.meta["sop_instance_uids"]]


def write_seg(
    path: Path,
    reference: Volume,
    segments: Mapping[str, np.ndarray],
    *,
    segmentation_type: str = "BINARY",
    datasets: Sequence[pydicom.Dataset] | None = None,
) -> Path:
    """A DICOM-SEG of ``segments`` (SegmentLabel -> mask ``(I, J, K)`` on the reference grid;
    SegmentNumber 1, 2, ... in order) on ``reference``, a DICOM series read by ``load_volume``.
    FRACTIONAL masks may be floats in 0..1."""
    hd = pytest.importorskip("highdicom")
    sources = list(datasets) if datasets is not None else series_datasets(reference)
    # medseg arrays are (columns, rows, slices); highdicom wants (frames, rows, columns, segments)
    stack = np.stack([np.asarray(m).transpose(2, 1, 0) for m in segments.values()], axis=-1)
    stack = stack.astype(bool if segmentation_type == "BINARY" else np.float32)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type="MANUAL",
        )
        for n, name in enumerate(segments, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stack,
        segmentation_type=segmentation_type,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=99,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="medseg tests",
        manufacturer_model_name="synthetic",
        software_versions="0",
        device_serial_number="0",
    )
    with atomic_path(Path(path)) as tmp:
        seg.save_as(tmp)
    return Path(path)

"""One entry point for a case's label: a voxel label map, an RTSTRUCT or a DICOM-SEG.

The manifest's ``"label"`` and ``medseg convert`` go through :func:`load_label`: an RTSTRUCT or
a DICOM-SEG is turned into a label map on the grid of the case's image (channel 0); any other
path is read by :func:`medseg.io.load_volume`.
"""

from __future__ import annotations

import os
from pathlib import Path

from medseg.errors import MedsegError
from medseg.io.dicom_seg import read_dicom_seg
from medseg.io.label_common import LabelMap, dicom_label_kind
from medseg.io.reader import load_volume
from medseg.io.rtstruct import read_rtstruct
from medseg.io.volume import Volume


def is_dicom_label_object(path: str | os.PathLike[str]) -> str | None:
    """``"RTSTRUCT"``, ``"SEG"`` or ``None``, from the file's Modality/SOPClassUID only.

    No pixel data is read; folders, missing files and non-DICOM files (NIfTI, NRRD, ...) give
    ``None``.
    """
    return dicom_label_kind(path)


def load_label(
    path: str | os.PathLike[str], reference: Volume, label_map: LabelMap | None = None
) -> Volume:
    """Read a label as a label map, rasterising an RTSTRUCT or DICOM-SEG onto ``reference``.

    Parameters
    ----------
    path
        An RTSTRUCT file, a DICOM-SEG file, or anything :func:`medseg.io.load_volume` reads
        (NIfTI, NRRD, MetaImage, a DICOM folder).
    reference
        The case's channel-0 image from :func:`medseg.io.load_volume` (shape ``(I, J, K)``,
        voxel-to-RAS affine in mm). A DICOM series carries the UIDs that are checked; with a
        NIfTI/NRRD reference the objects are placed by geometry alone and a warning is logged.
    label_map
        For RTSTRUCT/SEG: name -> label value, see :func:`medseg.io.rtstruct.read_rtstruct` and
        :func:`medseg.io.dicom_seg.read_dicom_seg`. Must be ``None`` or empty for a voxel label
        map (its values are used as they are).

    Returns
    -------
    Volume
        The label map. For RTSTRUCT/SEG it is on exactly the reference's grid; a voxel label
        map keeps its own grid (``load_volume(path, allow_empty=True)``).

    Raises
    ------
    MedsegError
        Everything the readers raise, and a non-empty ``label_map`` for a voxel label map.
    """
    kind = is_dicom_label_object(path)
    if kind == "RTSTRUCT":
        return read_rtstruct(path, reference, label_map)
    if kind == "SEG":
        return read_dicom_seg(path, reference, label_map)
    if label_map:
        raise MedsegError(
            "a label map (ROI/segment name -> value) applies to RTSTRUCT and DICOM-SEG labels; "
            "expected one of those, found a voxel label map (its values are used as they are)",
            Path(path),
        )
    return load_volume(path, allow_empty=True)

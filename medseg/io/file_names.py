"""Names derived from image file names: the case id of a label file and its JSON sidecar.

One rule for every place that pairs files by name (``medseg evaluate``, ``export-dicom``, the
DICOM writers, ``save_mask``'s sidecar): a name ends in one of :data:`IMAGE_SUFFIXES`
(case-insensitive), and the case id is the name without it (``case_001.nii.gz`` ->
``case_001``).
"""

from __future__ import annotations

import os
from pathlib import Path

from medseg.io.itk import ITK_SUFFIXES

#: The single-file volume formats medseg reads, ``.nii.gz`` before ``.nii``.
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", *ITK_SUFFIXES)


def image_stem(path: str | os.PathLike[str]) -> str | None:
    """The file name without its image suffix, ``None`` when it has none of
    :data:`IMAGE_SUFFIXES` (``"a/x_01.NII.GZ"`` -> ``"x_01"``, ``"notes.txt"`` -> ``None``)."""
    name = Path(path).name
    low = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return None


def file_stem(path: str | os.PathLike[str]) -> str:
    """The name without its image suffix, else without its last extension (if any):
    ``x_01.nii.gz`` -> ``x_01``, ``a/b.v2.mha`` -> ``b.v2``, ``dicom/ct01`` -> ``ct01``."""
    stem = image_stem(path)
    return Path(path).stem if stem is None else stem


def case_name(path: str | os.PathLike[str] | None) -> str:
    """The case id of a mask file: :func:`file_stem`, or ``"mask"`` when that is empty or
    there is no path."""
    return "mask" if path is None else (file_stem(path) or "mask")


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of a label file: ``CASE.json`` beside ``CASE.nii.gz`` (or ``.nrrd``)."""
    return Path(path).with_name(f"{case_name(path)}.json")

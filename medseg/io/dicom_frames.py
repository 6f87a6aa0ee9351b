"""Frames of single DICOM files (classic and enhanced multi-frame) for stacking.

:mod:`medseg.io.dicom` groups files into series; this module turns each file into
:class:`~medseg.io.dicom_stack.Frame` records (geometry plus a lazy pixel decoder), which
:func:`~medseg.io.dicom_stack.stack_geometry` orders into a volume.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medseg.errors import MedsegError
from medseg.io.dicom_stack import Frame


def _classic_frame(path: Path, ds: Dataset) -> Frame:
    needed = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
    missing = [t for t in needed if t not in ds]
    if missing:
        raise MedsegError(f"expected image geometry tags, found none of {missing}", path)
    return Frame(
        name=path.name,
        position=np.asarray(ds.ImagePositionPatient, dtype=np.float64),
        orientation=np.asarray(ds.ImageOrientationPatient, dtype=np.float64),
        pixel_spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
        shape=(int(ds.Rows), int(ds.Columns)),
        slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
        intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
        pixels=lambda: ds.pixel_array,
    )


def _group_item(per: Dataset, shared: Dataset | None, name: str) -> Dataset | None:
    for fg in (per, shared):
        if fg is not None and name in fg and len(fg[name].value):
            return fg[name].value[0]
    return None


def _frame_pixels(all_pixels: Callable[[], np.ndarray], index: int) -> Callable[[], np.ndarray]:
    """Decoder of one frame of a multi-frame file (the file is decoded once, on first use)."""
    return lambda: all_pixels()[index]


def _enhanced_frames(path: Path, ds: Dataset) -> list[Frame]:
    """Frames of an enhanced multi-frame image, geometry from its functional groups."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    per_seq = ds.get("PerFrameFunctionalGroupsSequence", [])
    shared_seq = ds.get("SharedFunctionalGroupsSequence", [])
    shared = shared_seq[0] if len(shared_seq) else None
    if len(per_seq) != n:
        raise MedsegError(
            f"multi-frame DICOM without per-frame geometry is not supported (expected "
            f"PerFrameFunctionalGroupsSequence with {n} items, found {len(per_seq)})",
            path,
        )
    all_pixels: Callable[[], np.ndarray] = cache(lambda: ds.pixel_array)
    frames = []
    for i, per in enumerate(per_seq):
        pos = _group_item(per, shared, "PlanePositionSequence")
        ori = _group_item(per, shared, "PlaneOrientationSequence")
        meas = _group_item(per, shared, "PixelMeasuresSequence")
        if pos is None or ori is None or meas is None:
            raise MedsegError(
                f"frame {i + 1}: expected PlanePosition/PlaneOrientation/PixelMeasures "
                "sequences, found them missing (unsupported multi-frame DICOM)",
                path,
            )
        trans = _group_item(per, shared, "PixelValueTransformationSequence") or ds
        frames.append(
            Frame(
                name=f"{path.name}[frame {i + 1}]",
                position=np.asarray(pos.ImagePositionPatient, dtype=np.float64),
                orientation=np.asarray(ori.ImageOrientationPatient, dtype=np.float64),
                pixel_spacing=(float(meas.PixelSpacing[0]), float(meas.PixelSpacing[1])),
                shape=(int(ds.Rows), int(ds.Columns)),
                slope=float(trans.get("RescaleSlope", 1.0) or 1.0),
                intercept=float(trans.get("RescaleIntercept", 0.0) or 0.0),
                pixels=_frame_pixels(all_pixels, i),
            )
        )
    return frames


def dicom_frames(path: Path, ds: Dataset) -> list[Frame]:
    """The 2-D frames of one DICOM file: one for a classic image, N for a multi-frame one.

    Geometry (LPS position, orientation, spacing in mm) comes from the classic image tags or
    from the enhanced functional groups; pixels are decoded lazily, on first use.

    Raises
    ------
    MedsegError
        Naming ``path`` when geometry tags or per-frame functional groups are missing.
    """
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_frames(path, ds)
    return [_classic_frame(path, ds)]

"""Geometry of a stack of DICOM slices: order along the normal, consistency checks, LPS affine.

Hand-written because no library both sorts slices by position *and* refuses a bad stack with a
message naming the files: SimpleITK/GDCM warn and carry on with a guessed spacing, pydicom has
no stacking, and highdicom/nibabel's DICOM support assume a consistent series.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError

ORIENTATION_TOLERANCE = 1e-4  # max difference of direction cosines within one series
SPACING_TOLERANCE_MM = 1e-3  # max difference of PixelSpacing within one series
STEP_TOLERANCE = 0.01  # relative tolerance on the slice step (1 %), at least 0.01 mm
TILT_FRACTION = 0.1  # in-plane drift of the slice origins allowed, as a fraction of a pixel


@dataclass(frozen=True)
class Frame:
    """One 2D slice: its DICOM geometry and a callable that decodes its pixels.

    ``orientation`` is ImageOrientationPatient (row direction, then column direction, LPS);
    ``pixel_spacing`` is PixelSpacing ``(row spacing, column spacing)`` in mm; ``shape`` is
    ``(Rows, Columns)``; ``pixels()`` returns the stored values, shape ``(Rows, Columns)``.
    """

    name: str
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    shape: tuple[int, int]
    slope: float
    intercept: float
    pixels: Callable[[], np.ndarray]


def _check_uniform(frames: Sequence[Frame], folder: Path) -> None:
    ref = frames[0]
    for f in frames[1:]:
        if np.abs(f.orientation - ref.orientation).max() > ORIENTATION_TOLERANCE:
            raise MedsegError(
                f"mixed slice orientations: ImageOrientationPatient of {f.name} is "
                f"{np.round(f.orientation, 5).tolist()}, expected "
                f"{np.round(ref.orientation, 5).tolist()} as in {ref.name}",
                folder,
            )
        if f.shape != ref.shape:
            raise MedsegError(
                f"mixed slice sizes: {f.name} has {f.shape[0]}x{f.shape[1]} (rows x columns), "
                f"expected {ref.shape[0]}x{ref.shape[1]} as in {ref.name}",
                folder,
            )
        if np.abs(np.subtract(f.pixel_spacing, ref.pixel_spacing)).max() > SPACING_TOLERANCE_MM:
            raise MedsegError(
                f"mixed pixel spacings: {f.name} has {f.pixel_spacing} mm, expected "
                f"{ref.pixel_spacing} mm as in {ref.name}",
                folder,
            )


def slice_axes(orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row direction, column direction and slice normal (row x column), LPS."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:6], dtype=np.float64)
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def _check_tilt(
    frames: Sequence[Frame], proj: np.ndarray, normal: np.ndarray, folder: Path
) -> None:
    """Slice origins must line up along the normal; otherwise the stack is sheared (tilt)."""
    pos = np.stack([f.position for f in frames])
    rel = pos - pos[0]
    drift = rel - np.outer(proj - proj[0], normal)
    dist = np.linalg.norm(drift, axis=1)
    worst = int(np.argmax(dist))
    limit = TILT_FRACTION * min(frames[0].pixel_spacing)
    if dist[worst] > limit:
        along = abs(proj[worst] - proj[0])
        angle = float(np.degrees(np.arctan2(dist[worst], along)))
        raise MedsegError(
            f"gantry tilt or sheared slice stack: {frames[worst].name} is offset "
            f"{dist[worst]:.3f} mm within the slice plane from {frames[0].name} "
            f"(about {angle:.2f} degrees); expected slices stacked along the normal of "
            "ImageOrientationPatient. Resample the series (e.g. dcm2niix) first",
            folder,
        )


def _fmt_positions(values: Sequence[float]) -> str:
    shown = ", ".join(f"{v:.2f}" for v in values[:5])
    return shown + (f", ... ({len(values)} in all)" if len(values) > 5 else "")


def _check_steps(frames: Sequence[Frame], proj: np.ndarray, folder: Path) -> None:
    steps = np.diff(proj)
    for k, s in enumerate(steps):
        if s < SPACING_TOLERANCE_MM:
            raise MedsegError(
                f"duplicate slice position {proj[k]:.3f} mm (along the normal) in files "
                f"{frames[k].name} and {frames[k + 1].name}; expected one slice per position "
                "(several echoes, phases or acquisitions in one series are not supported)",
                folder,
            )
    small = steps[steps < 1.5 * steps.min()]
    base = float(np.median(small))
    tol = max(STEP_TOLERANCE * base, 0.01)
    for k, s in enumerate(steps):
        if abs(s - base) <= tol:
            continue
        n = round(s / base)
        where = f"between files {frames[k].name} and {frames[k + 1].name}"
        if n >= 2 and abs(s - n * base) <= tol * n:
            missing = [float(proj[k] + j * base) for j in range(1, n)]
            raise MedsegError(
                f"missing slice(s) at {_fmt_positions(missing)} mm (along the slice normal) "
                f"{where}: the step there is {s:.3f} mm, expected {base:.3f} mm",
                folder,
            )
        raise MedsegError(
            f"non-uniform slice spacing: step of {s:.3f} mm {where}, expected {base:.3f} mm "
            "as between the other slices",
            folder,
        )


def stack_geometry(frames: Sequence[Frame], folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Order slices along their normal, check the stack and build its voxel-to-LPS affine.

    Parameters
    ----------
    frames
        The slices of one series, in any order (at least 2).
    folder
        Named in error messages.

    Returns
    -------
    order : numpy.ndarray
        Indices into ``frames``, sorted by increasing position along the slice normal.
    affine_lps : numpy.ndarray
        4x4 voxel-to-LPS affine (mm) of the array ``(columns, rows, slices)``: column ``i`` is
        the row direction times the column spacing (PixelSpacing[1]), column ``j`` the column
        direction times the row spacing (PixelSpacing[0]), column ``k`` the normal times the
        mean slice step; the origin is the first sorted slice's ImagePositionPatient.

    Raises
    ------
    MedsegError
        Mixed orientations/sizes/spacings, gantry tilt, duplicate, missing or unevenly spaced
        slices.
    """
    _check_uniform(frames, folder)
    row, col, normal = slice_axes(frames[0].orientation)
    proj_all = np.array([float(f.position @ normal) for f in frames])
    order = np.argsort(proj_all, kind="stable")
    ordered = [frames[i] for i in order]
    proj = proj_all[order]
    _check_steps(ordered, proj, folder)
    _check_tilt(ordered, proj, normal, folder)
    step = (proj[-1] - proj[0]) / (len(proj) - 1)
    row_spacing, col_spacing = ordered[0].pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = row * col_spacing
    affine[:3, 1] = col * row_spacing
    affine[:3, 2] = normal * step
    affine[:3, 3] = ordered[0].position
    return order, affine

"""Seeds of one case: world (RAS mm) points and voxel indices checked against the volume, and a
seed mask read from a file (or a folder of per-case files) that must lie on the image's grid."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.classic.config import ClassicConfig
from medseg.classic.methods import Seeds
from medseg.errors import MedsegError
from medseg.io import Volume, affines_match, load_volume
from medseg.io.file_names import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

#: seed-mask file names tried in a ``--seed-mask`` folder, ``<case>`` + one of these
SEED_SUFFIXES = IMAGE_SUFFIXES


def ras_to_voxel(affine: np.ndarray, points_ras: Sequence[Sequence[float]]) -> np.ndarray:
    """Nearest voxel indices ``(N, 3)`` of world points ``(N, 3)`` (RAS, mm).

    Parameters
    ----------
    affine
        4x4 voxel-to-RAS affine (mm).
    points_ras
        World coordinates (x, y, z) in mm, RAS+.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` int64 indices ``(i, j, k)``, rounded; not checked against any shape.
    """
    pts = np.asarray(points_ras, dtype=np.float64).reshape(-1, 3)
    homogeneous = np.c_[pts, np.ones(len(pts))]
    return np.rint((np.linalg.inv(affine) @ homogeneous.T)[:3].T).astype(np.int64)


def check_inside(
    indices: np.ndarray,
    shape: Sequence[int],
    given: Sequence[Sequence[float]],
    what: str,
    path: Path | None,
) -> None:
    """Raise :class:`MedsegError` for the first index outside ``shape``, naming the seed."""
    for idx, seed in zip(np.asarray(indices).reshape(-1, 3), given, strict=True):
        if np.any(idx < 0) or np.any(idx >= np.asarray(shape)):
            raise MedsegError(
                f"{what} {tuple(seed)}: expected a point inside the volume (voxel indices 0 to "
                f"{[int(n) - 1 for n in shape]}), found voxel {idx.tolist()}",
                path,
            )


def seed_mask_path(seed_mask: str | Path, case: str) -> Path:
    """The seed mask of ``case``: ``seed_mask`` itself, or ``seed_mask/<case>.*`` in a folder."""
    root = Path(seed_mask)
    if not root.is_dir():
        return root
    for suffix in SEED_SUFFIXES:
        if (root / f"{case}{suffix}").is_file():
            return root / f"{case}{suffix}"
    raise MedsegError(
        f"--seed-mask: expected a seed mask {case}.nii.gz (or .nii/.nrrd/.mha) for case "
        f"{case}, found none in the folder",
        root,
    )


def load_seed_mask(path: Path, reference: Volume) -> np.ndarray:
    """Read a seed mask and check that it lies on ``reference``'s grid (shape and affine).

    Returns
    -------
    numpy.ndarray
        ``(I, J, K)`` int64 seed labels.

    Raises
    ------
    MedsegError
        Naming the seed mask: unreadable, non-integer, or on another grid (shape or
        voxel-to-RAS affine differ by more than 1e-3 mm).
    """
    mask = load_volume(path, allow_empty=True)
    if mask.spatial_shape != reference.spatial_shape or not affines_match(
        mask.affine, reference.affine
    ):
        raise MedsegError(
            f"seed mask grid: expected the image's grid (shape {list(reference.spatial_shape)}, "
            f"axes {''.join(reference.axcodes)}, spacing {np.round(reference.spacing, 4).tolist()} "
            f"mm, origin {np.round(reference.affine[:3, 3], 3).tolist()} of {reference.path}), "
            f"found shape {list(mask.spatial_shape)}, axes {''.join(mask.axcodes)}, spacing "
            f"{np.round(mask.spacing, 4).tolist()} mm, origin "
            f"{np.round(mask.affine[:3, 3], 3).tolist()}",
            path,
        )
    values = np.asarray(mask.array)
    if not np.all(np.equal(np.mod(values, 1), 0)) or values.min() < 0:
        raise MedsegError("seed mask: expected non-negative integer labels", path)
    return values.astype(np.int64)


def resolve_seeds(volume: Volume, config: ClassicConfig, case: str) -> Seeds:
    """The seeds of one case on ``volume``'s grid.

    Parameters
    ----------
    volume
        The case's image (array ``(I, J, K)``, voxel-to-RAS affine).
    config
        ``seeds_ras`` (RAS mm), ``seeds_voxel`` (indices) and ``seed_mask`` (file or folder).
    case
        The case name, to find ``seed_mask/<case>.*`` in a folder.

    Raises
    ------
    MedsegError
        For a seed outside the volume, a missing seed mask, or one on another grid.
    """
    shape = volume.spatial_shape
    from_world = ras_to_voxel(volume.affine, config.seeds_ras)
    check_inside(from_world, shape, config.seeds_ras, "--seed (RAS mm)", volume.path)
    voxels = np.asarray(config.seeds_voxel, dtype=np.int64).reshape(-1, 3)
    check_inside(voxels, shape, config.seeds_voxel, "--seed-voxel", volume.path)
    mask = None
    if config.seed_mask is not None:
        mask = load_seed_mask(seed_mask_path(config.seed_mask, case), volume)
        if not np.any(mask):
            logger.warning("%s: the seed mask is empty", case)
    return Seeds(points=np.concatenate([from_world, voxels]), mask=mask)

"""NRRD / MetaImage (.mha/.mhd) reading through SimpleITK (LPS converted to RAS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.errors import MedsegError
from medseg.io.geometry import affine_from_itk
from medseg.io.volume import Volume

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def is_itk_file(path: Path) -> bool:
    """True for file names SimpleITK reads as single-file volumes (NRRD, MetaImage)."""
    return path.name.lower().endswith(ITK_SUFFIXES)


def sitk_to_volume(image: sitk.Image, path: Path | None, meta: dict[str, object]) -> Volume:
    """Convert a 3D SimpleITK image into a :class:`Volume` (array ``(I, J, K)``, RAS affine).

    SimpleITK's ``GetArrayFromImage`` returns ``(K, J, I)``; it is transposed so the array
    axes follow the ITK index axes ``(i, j, k)`` that the affine describes.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise MedsegError(
            f"expected a scalar image, found {image.GetNumberOfComponentsPerPixel()} "
            "components per voxel",
            path,
        )
    if image.GetDimension() != 3:
        raise MedsegError(f"expected a 3D volume, found {image.GetDimension()}D", path)
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    affine = affine_from_itk(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return Volume(array=np.ascontiguousarray(array), affine=affine, path=path, meta=dict(meta))


def read_itk_file(path: Path) -> Volume:
    """Read a NRRD or MetaImage file.

    Raises
    ------
    MedsegError
        If SimpleITK cannot read it or it is not a 3D scalar volume.
    """
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise MedsegError(f"cannot read as NRRD/MetaImage: {first}", path) from exc
    fmt = "nrrd" if path.name.lower().endswith((".nrrd", ".nhdr")) else "metaimage"
    return sitk_to_volume(image, Path(path), {"format": fmt})

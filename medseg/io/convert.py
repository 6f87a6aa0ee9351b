"""What to read from a path (which DICOM series of a study folder) and conversion to NIfTI.

``medseg convert`` and ``medseg info`` are thin commands over these functions:
:func:`resolve_source` finds the series folder to load (a study stored one folder per series
resolves to the chosen sub-folder), :func:`nifti_array` narrows dtypes to ones NIfTI viewers
read, and :func:`convert_to_nifti` does the whole conversion with an atomic write; an RTSTRUCT
or DICOM-SEG input becomes a label map on the grid of its ``reference`` image
(:func:`medseg.io.labels.load_label`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.io.dicom import SeriesInfo, list_series, select_series
from medseg.io.label_common import LabelMap
from medseg.io.labels import is_dicom_label_object, load_label
from medseg.io.nifti import is_nifti, save_mask, write_nifti
from medseg.io.outputs import check_output_dir
from medseg.io.reader import load_volume
from medseg.io.volume import Volume

#: Integer types tried, smallest first, for 64-bit integer arrays.
NARROW_INTS = (np.uint8, np.int16, np.uint16, np.int32)


def resolve_source(
    path: str | os.PathLike[str], series: str | None, *, choose: bool = True
) -> tuple[Path, str | None, list[SeriesInfo]]:
    """Where to read from: a file, a series folder, or a series chosen in a study's sub-folders.

    Parameters
    ----------
    path
        An image file, a folder of one or several DICOM series, or a study folder without
        DICOM files of its own whose sub-folders hold the series.
    series
        A SeriesInstanceUID or a 1-based series number (as listed), or ``None``.
    choose
        For a study folder and ``series=None``: pick its only image series (an error when
        there are several); ``False`` picks the only image series too but returns the study
        folder unresolved when there are several or none, for listing.

    Returns
    -------
    tuple
        ``(path to load, series to pass to load_volume, series listed under path)``; the
        listing is empty for a file or a folder without DICOM files.

    Raises
    ------
    MedsegError
        When ``series`` matches no series of a study, or the study holds several image
        series and ``series`` is ``None`` (the message lists them).
    """
    p = Path(path)
    if not p.is_dir():
        return p, series, []
    infos = list_series(p)
    if infos:
        return p, series, infos
    infos = list_series(p, recursive=True)
    if not infos:
        return p, series, []  # load_volume reports the empty folder
    n_images = sum(s.is_image for s in infos)
    if not choose and series is None and n_images != 1:
        return p, series, infos
    chosen = select_series(infos, series, p)
    return chosen.folder, chosen.uid, infos


def nifti_array(array: np.ndarray) -> np.ndarray:
    """The array in a dtype NIfTI viewers read.

    ``bool`` becomes ``uint8``, ``float16`` becomes ``float32``, and 64-bit integers are
    narrowed to the smallest of ``uint8``, ``int16``, ``uint16``, ``int32`` holding their
    values (kept as they are when none does); other dtypes are returned unchanged (no copy).
    """
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype in (np.int64, np.uint64) and array.size:
        lo, hi = int(array.min()), int(array.max())
        for cand in NARROW_INTS:
            if np.iinfo(cand).min <= lo and hi <= np.iinfo(cand).max:
                return array.astype(cand)
    return array


def convert_to_nifti(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    series: str | None = None,
    overwrite: bool = False,
    reference: str | os.PathLike[str] | None = None,
    label_map: LabelMap | None = None,
) -> Volume:
    """Convert a scan (a DICOM series, NRRD, MetaImage, NIfTI) or a DICOM label object to NIfTI.

    The geometry is kept exactly (RAS affine in qform and sform, their codes from the source
    when it has them, else 1) and the intensity dtype too, narrowed by :func:`nifti_array`. An
    RTSTRUCT or DICOM-SEG ``source`` is written as a label map (``uint8``, or ``uint16`` above
    255) on the grid of ``reference``. The write is atomic: nothing is left on failure.

    Parameters
    ----------
    source
        What :func:`resolve_source` accepts, or an RTSTRUCT / DICOM-SEG file.
    output
        A ``.nii`` or ``.nii.gz`` file.
    series
        The DICOM series to read: of ``source``, or of ``reference`` for a label object.
    overwrite
        Replace ``output`` if it exists.
    reference
        For an RTSTRUCT/DICOM-SEG ``source`` (required then, refused otherwise): the image it
        was drawn on, a DICOM series folder (its UIDs are checked) or a NIfTI/NRRD file
        (geometry only).
    label_map
        ROI/segment name -> label value (see :func:`medseg.io.rtstruct.read_rtstruct`); only
        for a label object.

    Returns
    -------
    Volume
        The volume written (its array in the written dtype).

    Raises
    ------
    MedsegError
        For an output name that is not NIfTI, an existing output without ``overwrite``, a
        label object without ``reference`` (or ``reference``/``label_map`` for a scan), and
        every error of :func:`medseg.io.load_volume` and :func:`medseg.io.labels.load_label`.
    """
    out = Path(output)
    if not is_nifti(out):
        raise MedsegError("expected an output name ending in .nii or .nii.gz", out)
    kind = is_dicom_label_object(source)
    if kind is None and (reference is not None or label_map):
        raise MedsegError(
            "--reference and --label-map apply to an RTSTRUCT or DICOM-SEG input; expected one "
            "of those, found a scan (convert it without them)",
            Path(source),
        )
    if kind is not None and reference is None:
        raise MedsegError(
            f"expected --reference (the image series the {kind} was drawn on) to convert this "
            f"{kind} (found none): pass --reference SERIES_DIR",
            Path(source),
        )
    check_output(Path(source), out, overwrite=overwrite, reference=reference)
    if kind is not None and reference is not None:
        src, chosen, _ = resolve_source(reference, series)
        image = load_volume(src, series=chosen, allow_empty=True)
        labels = load_label(source, image, label_map)
        _write(out, lambda: save_mask(labels, image, out))
        return labels
    src, chosen, _ = resolve_source(source, series)
    volume = load_volume(src, series=chosen, allow_empty=True)
    codes = {
        "qform_code": int(volume.meta.get("qform_code", 1) or 1),
        "sform_code": int(volume.meta.get("sform_code", 1) or 1),
    }
    volume = volume.with_array(nifti_array(volume.array))
    _write(out, lambda: write_nifti(volume.array, volume.affine, out, **codes))
    return volume


def _write(out: Path, write: Callable[[], object]) -> None:
    try:
        write()
    except OSError as exc:
        raise MedsegError(
            f"cannot write the output: expected a writable file, found "
            f"{exc.strerror or exc} ({exc.filename or out})",
            out,
        ) from exc


def check_output(
    source: Path, out: Path, *, overwrite: bool, reference: str | os.PathLike[str] | None = None
) -> None:
    """Refuse an output file that would overwrite the input or cannot be written; create nothing.

    Refused whatever ``overwrite`` says: ``out`` is ``source`` itself (the same file through a
    symbolic or hard link too: same device and inode), ``out`` is a folder, and what
    :func:`medseg.io.outputs.check_output_dir` refuses for the folder of ``out`` (a file on
    its path, not writable, the input folder or inside it; the same for ``reference``, the
    image a label object is converted onto). Refused without ``overwrite``: ``out`` exists.
    Missing folders above ``out`` are created by the write.

    Raises
    ------
    MedsegError
        Naming ``out`` (or its folder) and, when they are the same file, ``source``.
    """
    if out.exists() and source.exists() and os.path.samefile(source, out):
        raise MedsegError(
            f"expected an output file other than the input, found the input itself ({source}); "
            "choose another output name (--force never overwrites the input)",
            out,
        )
    if out.is_dir():
        raise MedsegError("expected an output file, found a folder", out)
    if out.exists() and not overwrite:
        raise MedsegError(
            "output exists (expected a new file); pass --force (overwrite=True in Python) to "
            "overwrite it",
            out,
        )
    inputs = [("INPUT", source), ("--reference", None if reference is None else Path(reference))]
    check_output_dir(out.parent, flag="the folder of OUTPUT", inputs=inputs)

"""Reading one manifest case: its image channels and its label, on channel 0's grid.

The one place where a :class:`~medseg.data.manifest.Case` becomes arrays, shared by
validation, the fingerprint and preprocessing, so all three read the same data:

- the image channels through :func:`medseg.io.channels.load_channels` (channels 1.. resampled
  onto channel 0's grid through the affines, coverage checked);
- the label through :func:`medseg.io.labels.load_label`: a label-map file as is, an RTSTRUCT
  or DICOM-SEG rasterised onto channel 0's grid with the case's ``label_map``.
"""

from __future__ import annotations

from medseg.data.manifest import Case
from medseg.io.channels import DEFAULT_MIN_OVERLAP, load_channels
from medseg.io.labels import load_label
from medseg.io.volume import Volume


def load_case_image(
    case: Case, n_channels: int | None = None, *, min_overlap: float = DEFAULT_MIN_OVERLAP
) -> Volume:
    """The case's image: ``(I, J, K)`` for one channel, ``(C, I, J, K)`` float32 for several.

    Parameters
    ----------
    case
        From a manifest.
    n_channels
        The manifest's (or model's) channel count; a single 4D NIfTI is split into this many
        channels, and a different number of channel files is an error naming the case.
    min_overlap
        See :func:`medseg.io.channels.load_channels`.
    """
    series = case.series or None
    return load_channels(case.images, series=series, n_channels=n_channels, min_overlap=min_overlap)


def load_case_label(case: Case, reference: Volume) -> Volume | None:
    """The case's label map on ``reference``'s grid (``None`` for unlabelled cases).

    ``reference`` is the case's image (:func:`load_case_image`); RTSTRUCT and DICOM-SEG labels
    are rasterised onto its grid, label-map files are read as they are (their grid is
    checked against the image by the callers).
    """
    if case.label is None:
        return None
    label_map = dict(case.label_map) if case.label_map else None
    return load_label(case.label, _channel0(reference), label_map)


def load_case(
    case: Case, n_channels: int | None = None, *, min_overlap: float = DEFAULT_MIN_OVERLAP
) -> tuple[Volume, Volume | None]:
    """:func:`load_case_image` and :func:`load_case_label` together."""
    image = load_case_image(case, n_channels, min_overlap=min_overlap)
    return image, load_case_label(case, image)


def _channel0(volume: Volume) -> Volume:
    """Channel 0 of a multi-channel volume (its geometry and DICOM meta), the volume itself
    otherwise."""
    if volume.array.ndim == 4:
        return Volume(volume.array[0], volume.affine, path=volume.path, meta=volume.meta)
    return volume

"""Per-label morphological clean-up of integer label maps, with sizes in mm.

Steps, in this order for each configured label (labels in increasing order):

1. keep the largest connected component and/or remove components below ``min_size_mm3``
   (removed voxels become background 0);
2. closing with an ellipsoidal structuring element of radius ``closing_mm`` (mm, so it is
   anisotropic in voxels); it only claims background voxels;
3. 3D hole filling (``scipy.ndimage.binary_fill_holes``); it only claims background voxels,
   so other labels enclosed by the structure are kept.

Each step works on the label's bounding box (plus the closing radius), which keeps it fast on
512x512x300 maps with small structures. Component sizes are voxel counts times the voxel volume
``prod(spacing)``; on one regular grid every voxel has the same volume, so "largest in mm^3" and
"largest in voxels" agree within one map, but thresholds in mm^3 make the same setting mean the
same anatomy across scans of different resolution.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.postprocessing.crf import CRFConfig
from medseg.postprocessing.crf_tiled import ProbabilitySource, crf_refine_labels
from medseg.postprocessing.slabs import slabs

logger = logging.getLogger(__name__)

_SLAB_VOXELS = 1 << 21  # voxels per slab where numpy would make int64 copies of a whole box


@dataclass(frozen=True)
class LabelPostprocessing:
    """What to do with one label.

    Attributes
    ----------
    largest_component
        Keep only the largest connected component.
    min_size_mm3
        Remove connected components smaller than this volume (mm^3); 0 disables.
    fill_holes
        Fill enclosed background cavities (3D).
    closing_mm
        Radius (mm) of a morphological closing; 0 disables.
    connectivity
        Neighbourhood for connected components: 1 (6 faces), 2 (18) or 3 (26 neighbours).
    """

    largest_component: bool = False
    min_size_mm3: float = 0.0
    fill_holes: bool = False
    closing_mm: float = 0.0
    connectivity: int = 3

    def validate(self) -> None:
        """Raise :class:`MedsegError` for out-of-range values."""
        if self.min_size_mm3 < 0 or self.closing_mm < 0:
            raise MedsegError(
                "postprocessing: expected min_size_mm3 >= 0 and closing_mm >= 0, found "
                f"{self.min_size_mm3} and {self.closing_mm}"
            )
        if self.connectivity not in (1, 2, 3):
            raise MedsegError(
                f"postprocessing.connectivity: expected 1, 2 or 3, found {self.connectivity}"
            )

    @property
    def is_noop(self) -> bool:
        """True when no step is enabled."""
        return not (
            self.largest_component or self.min_size_mm3 > 0 or self.fill_holes or self.closing_mm
        )


@dataclass(frozen=True)
class PostprocessConfig:
    """Post-processing of one model's label maps.

    Attributes
    ----------
    per_label
        Label value -> its morphology steps; labels not listed are left alone.
    crf
        Dense CRF run before morphology (needs probabilities and the image), or ``None``.
    """

    per_label: dict[int, LabelPostprocessing] = field(default_factory=dict)
    crf: CRFConfig | None = None

    def validate(self) -> None:
        """Raise :class:`MedsegError` for a non-positive label."""
        for label in self.per_label:
            if label <= 0:
                raise MedsegError(f"postprocessing.per_label: expected labels >= 1, found {label}")


def _grow(box: tuple[slice, ...], pad: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(
        slice(max(0, s.start - p), min(n, s.stop + p))
        for s, p, n in zip(box, pad, shape, strict=True)
    )


def ellipsoid_structure(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Boolean ellipsoid of ``radius_mm`` on a voxel grid of ``spacing`` (mm), shape odd."""
    half = [math.floor(radius_mm / float(s)) for s in spacing]
    axes = [np.arange(-h, h + 1) * float(s) for h, s in zip(half, spacing, strict=True)]
    dist2 = sum(a**2 for a in np.meshgrid(*axes, indexing="ij"))
    return dist2 <= radius_mm**2 + 1e-9


def _plane_slabs(array: np.ndarray) -> Iterator[slice]:
    """Slabs of whole planes along axis 0, about 2 Mvox each."""
    return slabs(array.shape[0], int(np.prod(array.shape[1:])), _SLAB_VOXELS)


def _component_sizes(components: np.ndarray, count: int) -> np.ndarray:
    """Voxels of each component ``0..count`` (int32 labels), counted slab by slab.

    ``np.bincount`` (like fancy indexing) converts its input to int64: on a 512x512x600 box a
    1.26 GB temporary, per slab a few MB.
    """
    sizes = np.zeros(count + 1, dtype=np.int64)
    for sl in _plane_slabs(components):
        sizes += np.bincount(components[sl].ravel(), minlength=count + 1)
    return sizes


def _lookup(keep: np.ndarray, components: np.ndarray) -> np.ndarray:
    """``keep[components]`` slab by slab (no int64 copy of the index array)."""
    out = np.empty(components.shape, dtype=bool)
    for sl in _plane_slabs(components):
        out[sl] = keep[components[sl]]
    return out


def _filter_components(mask: np.ndarray, step: LabelPostprocessing, voxel_mm3: float) -> np.ndarray:
    """Keep the largest component and/or components >= ``min_size_mm3``; returns a new mask.

    Component labels are int32 (``scipy.ndimage.label``) on the label's bounding box only.
    """
    structure = ndimage.generate_binary_structure(3, step.connectivity)
    components, count = ndimage.label(mask, structure=structure)
    if count == 0:
        return mask
    sizes_mm3 = _component_sizes(components, count).astype(np.float64)
    sizes_mm3 *= voxel_mm3
    sizes_mm3[0] = 0.0
    keep = np.ones(count + 1, dtype=bool)
    keep[0] = False
    if step.min_size_mm3 > 0:
        keep &= sizes_mm3 >= step.min_size_mm3
    if step.largest_component:
        keep &= np.arange(count + 1) == int(np.argmax(sizes_mm3))
    return _lookup(keep, components)


def _shrink(box: tuple[slice, ...], mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` (a crop at ``box``) in full-volume indices, None when empty."""
    inner = ndimage.find_objects(mask.astype(np.uint8))
    if not inner or inner[0] is None:
        return None
    return tuple(
        slice(b.start + i.start, b.start + i.stop) for b, i in zip(box, inner[0], strict=True)
    )


def _apply_label(
    out: np.ndarray,
    label: int,
    step: LabelPostprocessing,
    spacing: Sequence[float],
    box: tuple[slice, ...],
) -> None:
    """Apply ``step`` to ``label`` of ``out`` in place (``out`` is already a private copy).

    ``box`` contains every voxel of ``label`` (other labels' steps only claim background, so a
    box taken before them stays valid).
    """
    if step.largest_component or step.min_size_mm3 > 0:
        region = out[box]
        mask = region == label
        kept = _filter_components(mask, step, float(np.prod(spacing)))
        region[mask & ~kept] = 0
        shrunk = _shrink(box, kept)
        if shrunk is None:
            return
        box = shrunk
    if step.closing_mm > 0:
        structure = ellipsoid_structure(step.closing_mm, spacing)
        pad = [s // 2 for s in structure.shape]
        grown = _grow(box, pad, out.shape)
        region = out[grown]
        # pad with background so the erosion does not eat the volume's border
        padded = np.pad(region == label, [(p, p) for p in pad])
        closed = ndimage.binary_closing(padded, structure=structure)
        closed = closed[tuple(slice(p, p + n) for p, n in zip(pad, region.shape, strict=True))]
        region[closed & (region == 0)] = label
        box = grown
    if step.fill_holes:
        region = out[box]
        filled = ndimage.binary_fill_holes(region == label)
        region[filled & (region == 0)] = label


def apply_postprocessing(
    labels: np.ndarray,
    spacing: Sequence[float],
    config: PostprocessConfig,
    *,
    image: np.ndarray | None = None,
    probabilities: np.ndarray | ProbabilitySource | None = None,
) -> np.ndarray:
    """Run the configured CRF (if any) and per-label morphology; the input is not modified.

    Parameters
    ----------
    labels
        (I, J, K) integer label map, 0 = background.
    spacing
        Voxel size in mm along I, J, K.
    config
        What to apply.
    image
        (I, J, K) intensity image; needed when ``config.crf`` is set.
    probabilities
        (C, I, J, K) class probabilities, or a callable returning them for a box of the grid
        (:data:`~medseg.postprocessing.crf_tiled.ProbabilitySource`, so that only one CRF tile's
        probabilities are in memory); needed when ``config.crf`` is set. ``labels`` must be
        their argmax: the CRF result replaces ``labels`` around the foreground.

    Notes
    -----
    Memory: the CRF runs tile by tile (:func:`~medseg.postprocessing.crf_tiled.crf_refine_labels`);
    every morphology step works on boolean / uint8 crops of one label's bounding box, with
    int32 component labels (``scipy.ndimage.label``) for component filtering: no int64 or
    float64 array of the volume's size.

    Returns
    -------
    np.ndarray
        A new (I, J, K) label map with the dtype of ``labels``.

    Raises
    ------
    MedsegError
        On a non-3D or non-integer label map, bad spacing, or a CRF without its inputs.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise MedsegError(
            f"postprocessing: expected an integer (I, J, K) label map, found {labels.dtype} "
            f"with shape {labels.shape}"
        )
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise MedsegError(f"postprocessing: expected 3 positive spacings in mm, found {spacing}")
    if config.crf is not None:
        if image is None or probabilities is None:
            raise MedsegError(
                "postprocessing: the CRF step needs the image and the class probabilities, "
                f"found image={'given' if image is not None else None}, "
                f"probabilities={'given' if probabilities is not None else None}"
            )
        out = crf_refine_labels(probabilities, image, spacing, config.crf, labels=labels)
    else:
        out = labels.copy()
    todo = [k for k in sorted(config.per_label) if not config.per_label[k].is_noop]
    if not todo:
        return out
    # one pass for every label's bounding box (find_objects indexes by label value - 1)
    boxes = ndimage.find_objects(out, max_label=max(todo))
    for label in todo:
        box = boxes[label - 1]
        if box is not None:
            _apply_label(out, label, config.per_label[label], spacing, box)
    return out

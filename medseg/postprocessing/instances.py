"""Lesion instances: one id per connected component of the chosen labels of a label map.

Connectivity
------------
Components come from :func:`scipy.ndimage.label` with the structuring element of
:func:`medseg.metrics.lesion.structure_for`. The default, 26 (the full 3x3x3 neighbourhood,
rank 3), is the default of medseg's lesion-wise metrics and panoptic quality
(``connectivity=3`` there), so an instance here is exactly a lesion there.

Id order (deterministic)
------------------------
Ids ``1..N`` are given label by label in the order of ``instance_labels`` as given; within a
label, by **descending size** (voxel count), ties broken by raster order (C order, last axis
fastest) of each component's first voxel, i.e. :func:`scipy.ndimage.label`'s own numbering.
Id 1 is thus the largest lesion of the first label.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.metrics.case import as_label_map, label_boxes
from medseg.metrics.lesion import structure_for

#: The most instances a ``uint16`` map holds.
MAX_INSTANCES = int(np.iinfo(np.uint16).max)


@dataclass(frozen=True)
class InstanceInfo:
    """One instance of an instance map.

    Attributes
    ----------
    id
        Its value in the instance map (1..N).
    label
        The label value of the semantic map it comes from.
    voxels
        Its size in voxels.
    """

    id: int
    label: int
    voxels: int


def _check_request(
    labels: np.ndarray,
    instance_labels: Sequence[int],
    known_labels: Sequence[int] | None,
    path: str | os.PathLike[str] | None,
) -> tuple[np.ndarray, list[int]]:
    try:
        arr = as_label_map(labels, "label map")
    except ValueError as exc:
        raise MedsegError(f"expected a label map: {exc}", path) from exc
    if arr.ndim != 3:
        raise MedsegError(f"expected a 3D label map (I, J, K), found shape {arr.shape}", path)
    wanted = [int(v) for v in instance_labels]
    if not wanted or any(v < 1 for v in wanted) or len(set(wanted)) != len(wanted):
        raise MedsegError(
            f"instance labels: expected distinct positive label values, found {wanted}", path
        )
    if known_labels is not None:
        unknown = sorted(set(wanted) - {int(v) for v in known_labels})
        if unknown:
            raise MedsegError(
                f"instance labels {unknown} are not labels of this map: expected some of "
                f"{sorted(int(v) for v in known_labels if int(v) != 0)}",
                path,
            )
    return arr, wanted


def instance_map(
    labels: np.ndarray,
    instance_labels: Sequence[int],
    *,
    connectivity: int = 26,
    min_voxels: int = 1,
    known_labels: Sequence[int] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, list[InstanceInfo]]:
    """Split the listed labels of a label map into connected components, one id each.

    Parameters
    ----------
    labels
        Integer label map, shape ``(I, J, K)`` (bool and integral floats accepted).
    instance_labels
        Label values to split (distinct, positive). A label absent from this map simply
        gives no instance (a scan without lesions is not an error).
    connectivity
        Neighbourhood: 6, 18 or 26 (or 1, 2, 3); default 26, as the lesion metrics.
    min_voxels
        Components smaller than this many voxels are dropped (left 0).
    known_labels
        The label values this map may hold (e.g. the model's or the manifest's labels);
        when given, an instance label outside them is an error.
    path
        The file the map came from, named in errors.

    Returns
    -------
    tuple
        The instance map, ``uint16`` of shape ``(I, J, K)`` (0 background, ids ``1..N`` in
        the order of the module docstring), and one :class:`InstanceInfo` per id, in id
        order.

    Raises
    ------
    MedsegError
        For a map that is not a 3D label map, bad or unknown instance labels, a bad
        ``connectivity``/``min_voxels``, or more than 65535 instances.
    """
    arr, wanted = _check_request(labels, instance_labels, known_labels, path)
    try:
        structure = structure_for(connectivity)
    except ValueError as exc:
        raise MedsegError(f"connectivity: {exc}", path) from exc
    if min_voxels < 1:
        raise MedsegError(f"min_voxels: expected >= 1, found {min_voxels}", path)
    # one pass for every label's bounding box; components are labelled inside their box only
    boxes = label_boxes(arr, max(wanted))
    out = np.zeros(arr.shape, dtype=np.uint16)
    info: list[InstanceInfo] = []
    for lab in wanted:
        box = boxes[lab - 1]
        if box is None:
            continue
        mask = arr[box] == lab
        comp, n = ndimage.label(mask, structure=structure)
        sizes = np.bincount(comp[mask], minlength=n + 1)[1:]  # foreground only: fast
        order = np.argsort(-sizes, kind="stable")  # stable: ties keep raster order
        order = order[sizes[order] >= min_voxels]
        if len(info) + order.size > MAX_INSTANCES:
            raise MedsegError(
                f"expected at most {MAX_INSTANCES} instances (a uint16 map), found more "
                f"(label {lab} alone has {order.size}); raise min_voxels or split the labels",
                path,
            )
        remap = np.zeros(n + 1, dtype=np.uint16)
        remap[order + 1] = np.arange(len(info) + 1, len(info) + order.size + 1)
        crop = out[box]
        crop[mask] = remap[comp[mask]]
        info += [InstanceInfo(len(info) + k + 1, lab, int(sizes[c])) for k, c in enumerate(order)]
    return out, info

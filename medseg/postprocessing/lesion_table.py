"""Per-lesion measurements of an instance map, and the lesion tables (CSV + JSON) they fill.

Columns of one row (one lesion), in this order
----------------------------------------------
``id, label, label_name``
    Instance id, label value, label name (``""`` when unknown).
``voxels, volume_mm3, volume_ml``
    Size; volume = voxels x ``|det(affine[:3, :3])|`` (mm^3), ml = mm^3 / 1000.
``centroid_r_mm, centroid_a_mm, centroid_s_mm``
    Mean of the voxel centres, mapped through the affine: world RAS coordinates in mm.
``bbox_i_min .. bbox_k_max``
    Voxel-index bounding box (inclusive) on the map's own ``(I, J, K)`` axes.
``bbox_r_min_mm .. bbox_s_max_mm``
    World RAS box (mm) enclosing the voxel centres of the index box (its 8 corners mapped
    through the affine; voxel centres, not voxel edges).
``axial_axis, axial_slice, long_axis_mm, short_axis_mm``
    RECIST-style diameters (:mod:`medseg.postprocessing.diameters`): the voxel axis taken
    as axial, the slice index (on the full map) they are measured on, the longest in-plane
    diameter and the longest chord perpendicular to it.
``<name>_mean, <name>_max`` per intensity channel
    Mean and maximum of the channel over the lesion's voxels, in the channel's units (HU for a
    CT channel). A channel of kind ``PET`` gets ``<name>_SUVmean, <name>_SUVmax`` instead: the
    values are those of the image, so they are SUV only when the PET volume is in SUV (medseg
    converts nothing).

Every lesion is measured on its own bounding-box crop (:func:`scipy.ndimage.find_objects`,
one pass over the map for all lesions), so the cost grows with the lesions, not the scan.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.data.manifest_fields import check_case_id
from medseg.errors import MedsegError
from medseg.io.atomic import atomic_write_text
from medseg.postprocessing.diameters import axial_axis, axial_diameters
from medseg.postprocessing.instances import InstanceInfo

PathLike = str | os.PathLike[str]

BASE_COLUMNS = (
    "id",
    "label",
    "label_name",
    "voxels",
    "volume_mm3",
    "volume_ml",
    "centroid_r_mm",
    "centroid_a_mm",
    "centroid_s_mm",
    *(f"bbox_{a}_{e}" for e in ("min", "max") for a in "ijk"),
    *(f"bbox_{a}_{e}_mm" for e in ("min", "max") for a in "ras"),
    "axial_axis",
    "axial_slice",
    "long_axis_mm",
    "short_axis_mm",
)
_FLOAT_FORMAT = "{:.10g}"


def channel_columns(name: str, kind: str | None) -> tuple[str, str]:
    """The (mean, max) column names of a channel: ``PET`` kinds get SUV names."""
    if kind is not None and kind.upper() == "PET":
        return f"{name}_SUVmean", f"{name}_SUVmax"
    return f"{name}_mean", f"{name}_max"


def _check_geometry(instances: np.ndarray, affine: np.ndarray, path: PathLike | None) -> None:
    if instances.ndim != 3 or not np.issubdtype(instances.dtype, np.integer):
        raise MedsegError(
            f"expected a 3D integer instance map, found shape {instances.shape} of "
            f"{instances.dtype}",
            path,
        )
    aff = np.asarray(affine, np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        found = f"shape {aff.shape}" if aff.shape != (4, 4) else "non-finite values"
        raise MedsegError(f"expected a finite 4x4 affine, found {found}", path)
    if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise MedsegError("expected an invertible affine (non-zero voxel volume)", path)


def _check_channels(
    shape: tuple[int, ...],
    channels: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    path: PathLike | None,
) -> dict[str, np.ndarray]:
    unknown = sorted(set(kinds) - set(channels))
    if unknown:
        raise MedsegError(
            f"channel_kinds names {unknown}: expected names of channels {sorted(channels)}", path
        )
    out = {}
    for name, arr in channels.items():
        a = np.asarray(arr)
        if a.shape != shape:
            raise MedsegError(
                f"channel {name!r}: expected the instance map's shape {shape}, found {a.shape}",
                path,
            )
        out[str(name)] = a
    return out


def _box_rows(box: tuple[slice, ...], affine: np.ndarray) -> dict[str, Any]:
    lo = np.array([s.start for s in box], np.float64)
    hi = np.array([s.stop - 1 for s in box], np.float64)
    corners = np.array([[(lo, hi)[b][d] for d, b in enumerate(c)] for c in np.ndindex(2, 2, 2)])
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    row: dict[str, Any] = {f"bbox_{a}_min": int(lo[d]) for d, a in enumerate("ijk")}
    row.update({f"bbox_{a}_max": int(hi[d]) for d, a in enumerate("ijk")})
    row.update({f"bbox_{a}_min_mm": float(world[:, d].min()) for d, a in enumerate("ras")})
    row.update({f"bbox_{a}_max_mm": float(world[:, d].max()) for d, a in enumerate("ras")})
    return row


def _measure_one(
    mask: np.ndarray,
    box: tuple[slice, ...],
    affine: np.ndarray,
    axis: int,
    voxel_mm3: float,
) -> dict[str, Any]:
    """Size, centroid, boxes and diameters of one lesion from its crop ``mask``."""
    idx = np.nonzero(mask)
    n = int(idx[0].size)
    start = np.array([s.start for s in box], np.float64)
    centre = np.array([i.mean() for i in idx]) + start
    ras = affine[:3, :3] @ centre + affine[:3, 3]
    row: dict[str, Any] = {
        "voxels": n,
        "volume_mm3": n * voxel_mm3,
        "volume_ml": n * voxel_mm3 / 1e3,
    }
    row.update({f"centroid_{a}_mm": float(ras[d]) for d, a in enumerate("ras")})
    row.update(_box_rows(box, affine))
    long_mm, short_mm, s = axial_diameters(mask, affine, axis)
    row.update(
        axial_axis=axis,
        axial_slice=int(s + box[axis].start),
        long_axis_mm=long_mm,
        short_axis_mm=short_mm,
    )
    return row


def measure_lesions(
    instances: np.ndarray,
    info: Sequence[InstanceInfo],
    affine: np.ndarray,
    *,
    channels: Mapping[str, np.ndarray] | None = None,
    channel_kinds: Mapping[str, str] | None = None,
    label_names: Mapping[int, str] | None = None,
    path: PathLike | None = None,
) -> list[dict[str, Any]]:
    """Measure every lesion of an instance map: size, position, diameters, intensities.

    Parameters
    ----------
    instances
        Integer instance map, shape ``(I, J, K)`` (0 background), e.g. from
        :func:`medseg.postprocessing.instances.instance_map`.
    info
        One :class:`~medseg.postprocessing.instances.InstanceInfo` per id (its label).
    affine
        4x4 voxel-to-RAS affine of the map (mm); any orientation, anisotropic spacing.
    channels
        ``{name: image}`` intensity volumes on the same grid, shape ``(I, J, K)`` each.
    channel_kinds
        ``{name: kind}`` (``"CT"``, ``"PET"``, ``"MR"``, ...) for some channels; see the
        module docstring for the column names a kind gives.
    label_names
        ``{label value: name}`` for the ``label_name`` column.
    path
        The file the map came from, named in errors.

    Returns
    -------
    list[dict]
        One row per lesion, in id order, with the columns of the module docstring.

    Raises
    ------
    MedsegError
        For a map that is not a 3D integer map, a singular affine, a channel of another shape,
        a kind for an unknown channel, or ids of the map and of ``info`` that disagree.
    """
    inst = np.asarray(instances)
    _check_geometry(inst, affine, path)
    aff = np.asarray(affine, np.float64)
    chans = _check_channels(inst.shape, channels or {}, channel_kinds or {}, path)
    kinds = {k: str(v) for k, v in (channel_kinds or {}).items()}
    by_id = {int(i.id): i for i in info}
    if min(by_id, default=1) < 1:  # id 0 is background; boxes[-1] would measure another lesion
        raise MedsegError(f"expected instance ids >= 1 in info, found {min(by_id)}", path)
    top = int(inst.max(initial=0))
    if top > 0 and top not in by_id:
        raise MedsegError(f"instance id {top} is in the map but not in info", path)
    boxes = ndimage.find_objects(inst, max_label=max(by_id, default=0)) if by_id else []
    stray = [i + 1 for i, b in enumerate(boxes) if b is not None and i + 1 not in by_id]
    if stray:
        raise MedsegError(f"instance ids {stray[:10]} are in the map but not in info", path)
    axis, voxel_mm3 = axial_axis(aff), float(abs(np.linalg.det(aff[:3, :3])))
    names = label_names or {}
    rows = []
    for lesion_id in sorted(by_id):
        box = boxes[lesion_id - 1]
        if box is None:
            raise MedsegError(f"instance id {lesion_id} is in info but not in the map", path)
        mask = inst[box] == lesion_id
        lab = int(by_id[lesion_id].label)
        row: dict[str, Any] = {"id": lesion_id, "label": lab, "label_name": names.get(lab, "")}
        row.update(_measure_one(mask, box, aff, axis, voxel_mm3))
        for name, image in chans.items():
            values = image[box][mask].astype(np.float64)
            mean_col, max_col = channel_columns(name, kinds.get(name))
            row[mean_col], row[max_col] = float(values.mean()), float(values.max())
        rows.append(row)
    return rows


def _columns(rows: Sequence[Mapping[str, Any]], lead: Sequence[str] = ()) -> list[str]:
    cols = [*lead, *BASE_COLUMNS]
    for row in rows:
        cols += [k for k in row if k not in cols]
    return cols


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return _FLOAT_FORMAT.format(float(value))
    return str(value)


def _csv_text(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell(row[c]) if c in row else "" for c in cols])
    return buf.getvalue()


def _json_value(value: Any) -> Any:
    """Plain JSON: numpy scalars as Python numbers, non-finite floats as ``null``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_text(payload: dict[str, Any]) -> str:
    payload = dict(payload)
    payload["lesions"] = [{k: _json_value(v) for k, v in r.items()} for r in payload["lesions"]]
    return json.dumps(payload, indent=2, allow_nan=False) + "\n"


def _check_case_id(case_id: str) -> str:
    return check_case_id(str(case_id))  # the manifest's rule: one plain file name


def write_lesion_tables(
    rows: Sequence[Mapping[str, Any]], out_dir: PathLike, case_id: str
) -> tuple[Path, Path]:
    """Write ``<case>_lesions.csv`` and ``<case>_lesions.json`` (atomically) into ``out_dir``.

    Parameters
    ----------
    rows
        Rows of :func:`measure_lesions` (possibly none: the CSV then holds the header only).
    out_dir
        Destination folder (created if missing).
    case_id
        Case name, used in the file names and the JSON's ``case``.

    Returns
    -------
    tuple
        The CSV and JSON paths. The JSON is ``{"case", "n_lesions", "lesions": [row, ...]}``
        with non-finite numbers as ``null``.
    """
    cid = _check_case_id(case_id)
    out = Path(out_dir)
    csv_path = atomic_write_text(out / f"{cid}_lesions.csv", _csv_text(rows, _columns(rows)))
    payload = {"case": cid, "n_lesions": len(rows), "lesions": list(rows)}
    json_path = atomic_write_text(out / f"{cid}_lesions.json", _json_text(payload))
    return csv_path, json_path


def write_folder_lesion_table(
    all_rows: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: PathLike
) -> tuple[Path, Path]:
    """Write ``lesions.csv`` and ``lesions.json`` for a folder: every case's lesions.

    Parameters
    ----------
    all_rows
        ``{case_id: rows of measure_lesions}``; a case without lesions still counts.
    out_dir
        Destination folder (created if missing).

    Returns
    -------
    tuple
        The CSV (a leading ``case`` column, cases in the mapping's order) and JSON
        (``{"n_cases", "n_lesions", "cases": {case: n_lesions}, "lesions": [...]}``) paths.
    """
    flat = [{"case": _check_case_id(cid), **row} for cid, rows in all_rows.items() for row in rows]
    out = Path(out_dir)
    csv_path = atomic_write_text(out / "lesions.csv", _csv_text(flat, _columns(flat, ["case"])))
    payload = {
        "n_cases": len(all_rows),
        "n_lesions": len(flat),
        "cases": {str(cid): len(rows) for cid, rows in all_rows.items()},
        "lesions": flat,
    }
    json_path = atomic_write_text(out / "lesions.json", _json_text(payload))
    return csv_path, json_path

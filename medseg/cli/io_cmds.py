"""``medseg convert`` and ``medseg info``: thin commands over :mod:`medseg.io`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from medseg.errors import MedsegError
from medseg.io import SeriesInfo, Volume, list_series, load_volume, write_nifti
from medseg.io.dicom import select_series
from medseg.io.nifti import is_nifti

logger = logging.getLogger(__name__)

SERIES_HELP = "DICOM folders with several series: a SeriesInstanceUID or the series number."


def resolve_input(
    path: Path, series: str | None, *, choose: bool = True
) -> tuple[Path, str | None, list[SeriesInfo]]:
    """Where to read from: a file, a series folder, or a series chosen in a study's sub-folders.

    Returns ``(path to load, series to pass to load_volume, series listed in the folder)``. A
    folder without DICOM files of its own but with series folders below it (a study stored one
    folder per series) resolves to the chosen sub-folder.
    """
    if not path.is_dir():
        return path, series, []
    infos = list_series(path)
    if infos:
        return path, series, infos
    infos = list_series(path, recursive=True)
    if not infos:
        return path, series, []  # load_volume reports the empty folder
    if not choose and series is None:
        return path, series, infos
    chosen = select_series(infos, series, path)
    return chosen.folder, chosen.uid, infos


def _nifti_array(array: np.ndarray) -> np.ndarray:
    """The array in a dtype NIfTI viewers read: bool -> uint8, float16 -> float32, 64-bit
    integers narrowed to the smallest type holding their values; others unchanged."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype in (np.int64, np.uint64) and array.size:
        lo, hi = int(array.min()), int(array.max())
        for cand in (np.uint8, np.int16, np.uint16, np.int32):
            if np.iinfo(cand).min <= lo and hi <= np.iinfo(cand).max:
                return array.astype(cand)
    return array


def convert(
    input: Path = typer.Argument(..., help="NIfTI/NRRD/MetaImage file or DICOM series folder."),
    output: Path = typer.Argument(..., help="Output .nii or .nii.gz file."),
    series: str | None = typer.Option(None, "--series", "-s", help=SERIES_HELP),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Convert a scan (e.g. a DICOM series) to NIfTI with its exact geometry (RAS affine in
    qform and sform) and its intensity dtype; the write is atomic."""
    if not is_nifti(output):
        raise MedsegError("expected an output name ending in .nii or .nii.gz", output)
    if output.exists() and not force:
        raise MedsegError("output exists; pass --force to overwrite it", output)
    src, chosen, _ = resolve_input(input, series)
    volume = load_volume(src, series=chosen, allow_empty=True)
    codes = {
        "qform_code": int(volume.meta.get("qform_code", 1) or 1),
        "sform_code": int(volume.meta.get("sform_code", 1) or 1),
    }
    array = _nifti_array(volume.array)
    write_nifti(array, volume.affine, output, **codes)
    spacing = " x ".join(f"{s:.4g}" for s in volume.spacing)
    Console(soft_wrap=True).print(
        f"wrote {output}: shape {'x'.join(map(str, array.shape))}, {array.dtype}, "
        f"spacing {spacing} mm, axes {''.join(volume.axcodes)}"
    )


def describe_volume(volume: Volume) -> dict[str, Any]:
    """Plain-data summary of a volume: shape, dtype, spacing (mm), axis codes, origin and
    affine (RAS, mm), intensity min/max/mean, modality."""
    arr = volume.array
    return {
        "path": str(volume.path) if volume.path else None,
        "format": volume.meta.get("format"),
        "shape": [int(n) for n in arr.shape],
        "dtype": str(arr.dtype),
        "spacing_mm": [round(s, 6) for s in volume.spacing],
        "axcodes": "".join(volume.axcodes),
        "origin_ras_mm": [round(float(v), 4) for v in volume.affine[:3, 3]],
        "affine_ras": np.round(volume.affine, 6).tolist(),
        "intensity": {
            "min": float(arr.min()),
            "max": float(arr.max()),
            "mean": float(arr.mean(dtype=np.float64)),
        },
        "modality": volume.meta.get("modality"),
        "description": volume.meta.get("description"),
        "series_uid": volume.meta.get("series_uid"),
    }


def _series_dict(info: SeriesInfo) -> dict[str, Any]:
    return {
        "number": info.number,
        "uid": info.uid,
        "description": info.description,
        "modality": info.modality,
        "n_files": info.n_files,
        "folder": str(info.folder),
        "is_image": info.is_image,
    }


def _series_table(infos: list[SeriesInfo]) -> Table:
    table = Table(title=f"{len(infos)} DICOM series")
    for col in ("#", "SeriesInstanceUID", "description", "modality", "files", "folder"):
        table.add_column(col, overflow="fold")
    for s in infos:
        kind = "" if s.is_image else " (no image)"
        table.add_row(
            str(s.number),
            s.uid or "-",
            s.description,
            s.modality + kind,
            str(s.n_files),
            s.folder.name,
        )
    return table


def _print_description(console: Console, d: dict[str, Any]) -> None:
    inten = d["intensity"]
    aff = "\n".join("    " + "  ".join(f"{v:10.4f}" for v in row) for row in d["affine_ras"])
    lines = [
        f"[bold]{d['path']}[/bold] ({d['format']}, modality {d['modality'] or '-'})",
        f"  shape     {' x '.join(map(str, d['shape']))}  ({d['dtype']})",
        f"  spacing   {' x '.join(f'{s:.6g}' for s in d['spacing_mm'])} mm",
        f"  axes      {d['axcodes']} (RAS+ world)",
        f"  origin    {', '.join(f'{v:.3f}' for v in d['origin_ras_mm'])} mm",
        f"  intensity min {inten['min']:.6g}, max {inten['max']:.6g}, mean {inten['mean']:.6g}",
        "  affine (voxel -> RAS mm)",
        aff,
    ]
    if d.get("description"):
        lines.insert(1, f"  series    {d['description']} ({d['series_uid'] or 'no UID'})")
    for line in lines:
        console.print(line, highlight=False)


def info(
    input: Path = typer.Argument(..., help="NIfTI/NRRD/MetaImage file or DICOM folder."),
    series: str | None = typer.Option(None, "--series", "-s", help=SERIES_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
) -> None:
    """Describe a scan: shape, dtype, spacing (mm), axis codes, origin, affine, intensity
    range and modality; for a DICOM folder (or study of series folders), the series found."""
    src, chosen, infos = resolve_input(input, series, choose=False)
    images = [s for s in infos if s.is_image]
    described = None
    if not infos or len(images) == 1 or series is not None:
        described = describe_volume(load_volume(src, series=chosen, allow_empty=True))
    if as_json:
        payload = {"volume": described, "series": [_series_dict(s) for s in infos]}
        typer.echo(json.dumps(payload, indent=2))
        return
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, 160)  # keep UIDs on one line in pipes and logs
    if len(infos) > 1 or (infos and not images):
        console.print(_series_table(infos))
    if described is not None:
        _print_description(console, described)
    elif images:
        console.print("several image series: choose one with --series UID-or-number")
    else:
        console.print("no image series (only segmentations, structure sets or reports)")


def register(app: typer.Typer) -> None:
    """Add ``convert`` and ``info`` to the ``medseg`` command line."""
    app.command("convert")(convert)
    app.command("info")(info)

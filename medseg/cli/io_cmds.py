"""``medseg convert`` and ``medseg info``: thin commands over :mod:`medseg.io`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from medseg.errors import MedsegError
from medseg.io import SeriesInfo, load_volume
from medseg.io.convert import convert_to_nifti, resolve_source
from medseg.io.volume import describe_volume

logger = logging.getLogger(__name__)

SERIES_HELP = "DICOM folders with several series: a SeriesInstanceUID or the series number."


def parse_label_map(items: list[str] | None) -> dict[str, int] | None:
    """``["GTV*=1", "re:CTV_.*=2"]`` -> ``{"GTV*": 1, "re:CTV_.*": 2}`` (split at the last "=")."""
    if not items:
        return None
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value.strip().lstrip("-").isdigit():
            raise MedsegError(
                f"--label-map: expected NAME=VALUE with an integer VALUE (e.g. GTV=1), found "
                f"'{item}'"
            )
        out[name] = int(value)
    return out


def convert(
    input: Path = typer.Argument(
        ..., help="NIfTI/NRRD/MetaImage file, DICOM series folder, or RTSTRUCT / DICOM-SEG file."
    ),
    output: Path = typer.Argument(..., help="Output .nii or .nii.gz file."),
    series: str | None = typer.Option(
        None, "--series", "-s", help=SERIES_HELP + " For a label object: the reference's series."
    ),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        "-r",
        help="RTSTRUCT/DICOM-SEG input: the image it was drawn on (a DICOM series folder, whose "
        "UIDs are checked, or a NIfTI/NRRD); the label map is written on its grid.",
    ),
    label_map: list[str] | None = typer.Option(
        None,
        "--label-map",
        "-l",
        help="RTSTRUCT/DICOM-SEG input: NAME=VALUE, repeatable. NAME is an ROI/segment name, a "
        "glob (GTV*) or re:REGEX; later entries win where labels overlap. Default: a single ROI "
        "is 1; segments keep their numbers.",
    ),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite OUTPUT if it exists."),
) -> None:
    """Convert a scan (e.g. a DICOM series) to NIfTI with its exact geometry (RAS affine in
    qform and sform) and its intensity dtype; or an RTSTRUCT / DICOM-SEG to a label map on the
    grid of --reference. The write is atomic."""
    volume = convert_to_nifti(
        input,
        output,
        series=series,
        overwrite=force,
        reference=reference,
        label_map=parse_label_map(label_map),
    )
    array = volume.array
    spacing = " x ".join(f"{s:.4g}" for s in volume.spacing)
    labels = volume.meta.get("labels")
    named = f", labels {', '.join(f'{k}={v}' for k, v in labels.items())}" if labels else ""
    Console(soft_wrap=True).print(
        f"wrote {output}: shape {'x'.join(map(str, array.shape))}, {array.dtype}, "
        f"spacing {spacing} mm, axes {''.join(volume.axcodes)}{named}",
        highlight=False,
    )


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
    src, chosen, infos = resolve_source(input, series, choose=False)
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

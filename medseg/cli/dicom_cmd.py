"""``medseg export-dicom``: a mask -> DICOM-SEG or RTSTRUCT on its DICOM series, over
:func:`medseg.io.dicom_export.export_dicom`."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

import typer

logger = logging.getLogger(__name__)


class DicomFormat(str, Enum):
    """The DICOM objects ``export-dicom`` writes."""

    dicom_seg = "dicom-seg"
    rtstruct = "rtstruct"


def export_dicom_cmd(
    mask: Path = typer.Argument(
        ..., help="Label map (NIfTI/NRRD/MHA, 0 = background) on the series grid, any axis order."
    ),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        "-r",
        help="DICOM series folder the mask was predicted on (default: the input that the "
        "prediction sidecar CASE.json beside the mask records, when it is a DICOM folder).",
    ),
    fmt: DicomFormat = typer.Option(
        ..., "--format", help="dicom-seg (DICOM Segmentation) or rtstruct (RT Structure Set)."
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="A .dcm file, or a folder that receives CASE_seg.dcm / CASE_rtstruct.dcm.",
    ),
    labels: list[str] | None = typer.Option(
        None,
        "--labels",
        "-l",
        help="Label names as name=value (repeat the flag or separate by commas); default: "
        "the sidecar CASE.json's labels, else label_<value>.",
    ),
    instances: Path | None = typer.Option(
        None,
        "--instances",
        help="Instance map on the same grid (rtstruct only): one ROI <label>_<id> per instance.",
    ),
    series: str | None = typer.Option(
        None, "--series", "-s", help="Reference folder with several series: UID or number."
    ),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing output file."),
) -> None:
    """Export a mask as a DICOM-SEG or an RTSTRUCT that references its DICOM series, for PACS
    and treatment-planning systems. The mask must be on the series' voxel grid (a prediction
    saved as NIfTI is); the write is atomic."""
    from medseg.io.dicom_export import export_dicom, parse_labels

    names = parse_labels(labels) if labels else None
    out = export_dicom(
        mask,
        format=fmt.value,  # type: ignore[arg-type]
        output=output,
        reference=reference,
        labels=names,
        instances=instances,
        series=series,
        overwrite=force,
    )
    typer.echo(f"wrote {out} ({fmt.value})")


def register(app: typer.Typer) -> None:
    """Add ``export-dicom`` to the medseg CLI."""
    app.command("export-dicom")(export_dicom_cmd)

"""Data commands: ``medseg validate-manifest`` and ``medseg synth-ct``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from medseg.data.manifest import load_manifest
from medseg.data.validation import ValidationReport, validate_manifest
from medseg.errors import MedsegError
from medseg.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)


def validate_manifest_cmd(
    manifest: Path = typer.Argument(..., help="Manifest in MSD dataset.json layout."),
    data_root: Path = typer.Option(
        ..., "--data-root", help="Folder the manifest's relative paths start from."
    ),
    tolerance_mm: float = typer.Option(
        1e-3, "--tolerance-mm", min=0.0, help="Largest image/label world-position difference (mm)."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the full report as JSON to this file."
    ),
    allow_outside_root: bool = typer.Option(
        False,
        "--allow-outside-root",
        help="Accept paths outside --data-root ('..', absolute paths, symlinks leading out).",
    ),
) -> None:
    """Open every case of a manifest and report every problem at once (exit 1 if any).

    Checks missing/unreadable files, image/label shape and affine agreement, label values
    not named in the manifest's labels, non-integer labels and duplicate cases; paths
    outside --data-root are refused unless --allow-outside-root is given.
    """
    parsed = load_manifest(manifest, data_root, allow_outside_root=allow_outside_root)
    console = Console()
    with Progress(
        TextColumn("validating"), BarColumn(), MofNCompleteColumn(), console=console,
        transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("cases", total=len(parsed.cases))
        report = validate_manifest(
            parsed, tolerance_mm=tolerance_mm, on_case=lambda _c: progress.advance(task)
        )
    console.print(_summary_table(report))
    for problem in report.problems:
        text = f"[red]problem[/red] {escape(str(problem))}"  # "[case_id]" is not markup
        console.print(text, markup=True, highlight=False, soft_wrap=True)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(report.to_dict(), indent=2) + "\n")
    if not report.ok:
        raise typer.Exit(code=1)


def _summary_table(report: ValidationReport) -> Table:
    m = report.manifest
    found = ", ".join(
        f"{v} ({m.labels.get(v, '?')}): {n} cases" for v, n in report.label_values_found.items()
    )
    table = Table(title=escape(f"{m.name}  ({m.path})"), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("data root", escape(str(m.data_root)))
    table.add_row("training cases", str(len(m.training)))
    table.add_row("test cases", str(len(m.test)))
    table.add_row("modality", escape(", ".join(f"{k}: {v}" for k, v in m.modality.items())))
    table.add_row("labels", escape(", ".join(f"{k}: {v}" for k, v in m.labels.items())))
    table.add_row("label values found", escape(found) or "-")
    status = "[green]none[/green]" if report.ok else f"[red]{len(report.problems)}[/red]"
    table.add_row("problems", status)
    table.add_row("time", f"{report.seconds:.2f} s")
    return table


def synth_ct_cmd(
    out_dir: Path = typer.Argument(..., help="Folder for the cohort (MSD layout)."),
    cases: int = typer.Option(8, "--cases", min=1, help="Number of phantoms."),
    seed: int = typer.Option(0, "--seed", help="Cohort seed: same seed, same cohort."),
    dicom: int = typer.Option(0, "--dicom", min=0, help="Also write the first K as DICOM."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder."),
) -> None:
    """Write a synthetic CT cohort (HU images, organ + lesion labels, dataset.json)."""
    from medseg.data.cohorts import write_ct_cohort

    if out_dir.exists() and not out_dir.is_dir():
        raise MedsegError("expected a folder for the cohort, found a file", out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise MedsegError("folder is not empty (use --force to write into it)", out_dir)
    path = write_ct_cohort(out_dir, cases, seed=seed, write_dicom=dicom)
    typer.echo(f"wrote {cases} synthetic CT cases ({dicom} also as DICOM); manifest {path}")


def register(app: typer.Typer) -> None:
    """Add the data commands to the ``medseg`` app."""
    app.command("validate-manifest")(validate_manifest_cmd)
    app.command("synth-ct")(synth_ct_cmd)

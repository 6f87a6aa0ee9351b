"""``medseg predict``: segment a scan, a DICOM series or a folder of cases with a trained model."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medseg.errors import MedsegError
from medseg.inference.batch import BatchSummary, predict_batch
from medseg.inference.config import InferConfig, parse_folds
from medseg.runtime import distributed as ddp

logger = logging.getLogger(__name__)


def print_summary(summary: BatchSummary, console: Console) -> None:
    """A table of every case (status, seconds, volumes) and the failures, if any."""
    table = Table(title=f"medseg predict: {summary.output}")
    for col in ("case", "status", "seconds", "volumes (ml)"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for r in summary.results:
        vols = ", ".join(f"{k} {v:.2f}" for k, v in r.volumes_ml.items())
        secs = f"{r.seconds:.1f}" if r.status == "done" else ""
        table.add_row(r.name, r.status, secs, vols if r.status != "failed" else r.error)
    console.print(table)
    counts = summary.counts()
    console.print(
        f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
        f"in {summary.seconds:.1f} s; summary in {summary.output / 'summary.json'}"
    )


def predict(
    model: Path = typer.Option(
        ..., "--model", help="Run directory (plans.json, fold_<k>/) or MONAI bundle directory."
    ),
    input_path: Path = typer.Option(
        ...,
        "--input",
        help="A NIfTI/NRRD/MHA file, a DICOM series folder, or a folder of cases (every image "
        "file and every folder of DICOM files is one case).",
    ),
    output: Path = typer.Option(
        ..., "--output", help="Folder for <case>.nii.gz, <case>.json and summary.json/.csv."
    ),
    folds: str = typer.Option("all", "--folds", help="Folds to ensemble: 'all' or e.g. '0,1'."),
    tta: bool = typer.Option(False, "--tta/--no-tta", help="Mirror test-time augmentation (8x)."),
    overlap: float = typer.Option(0.5, "--overlap", help="Window overlap fraction, 0 <= F < 1."),
    sw_batch_size: int = typer.Option(4, "--sw-batch-size", help="Windows per forward pass."),
    postprocess: str = typer.Option(
        "auto",
        "--postprocess",
        help="auto: apply the post-processing decided on validation data; none: raw argmax.",
    ),
    crf: bool | None = typer.Option(
        None, "--crf/--no-crf", help="Force the dense CRF on or off (default: as decided)."
    ),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write <case>_probabilities.nii.gz (4D)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Redo cases whose outputs exist (default: skip them)."
    ),
    series: str | None = typer.Option(
        None, "--series", help="DICOM SeriesInstanceUID (or number) for multi-series folders."
    ),
) -> None:
    """Segment scans; masks are written in each scan's own geometry. Exit 1 if a case failed."""
    if postprocess not in ("auto", "none"):
        raise MedsegError(f"--postprocess: expected 'auto' or 'none', found {postprocess!r}")
    info = ddp.init(device, backend="gloo")  # predict gathers per-case results only
    device = ddp.rank_device(device, info)
    config = InferConfig(
        folds=parse_folds(folds),
        tta=tta,
        overlap=overlap,
        sw_batch_size=sw_batch_size,
        device=device,
        postprocess=postprocess,  # type: ignore[arg-type]
        crf=crf,
        save_probabilities=save_probabilities,
        overwrite=overwrite,
        series=series,
    )
    config.validate()
    from medseg.inference.predictor import Predictor

    predictor = Predictor.from_path(model, config=config)
    try:
        summary = predict_batch(
            predictor, input_path, output, rank=info.rank, world_size=info.world_size
        )
    finally:
        ddp.cleanup(info)
    if info.is_main:
        print_summary(summary, Console(stderr=False))
    if summary.failed:
        names = ", ".join(r.name for r in summary.failed)
        typer.secho(f"{len(summary.failed)} case(s) failed: {names}", err=True, fg="red")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``medseg predict`` to the CLI."""
    app.command("predict")(predict)

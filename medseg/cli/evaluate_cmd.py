"""``medseg evaluate``: score predicted label maps against references, in mm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from medseg.errors import MedsegError

OUTPUT_FILES = ("metrics.csv", "summary.json", "report.md", "report.html")


def parse_labels(text: str | None, option: str) -> list[int] | None:
    """``"1,2"`` -> ``[1, 2]``; ``None``/empty -> ``None``."""
    if text is None or not text.strip():
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise MedsegError(
            f"{option}: expected comma-separated integers like 1,2, found {text!r}"
        ) from exc
    if any(v < 1 for v in values):
        raise MedsegError(f"{option}: expected positive label values, found {text!r}")
    return values


def _check_options(
    ref: Path | None, manifest: Path | None, data_root: Path | None, connectivity: int, match: str
) -> None:
    if manifest is None and ref is None:
        raise MedsegError("give --ref DIR (reference label maps) or --manifest with --data-root")
    if manifest is not None and data_root is None:
        raise MedsegError("--manifest needs --data-root (the folder its paths are relative to)")
    if connectivity not in (1, 2, 3, 6, 18, 26):
        raise MedsegError(f"--connectivity: expected 1, 2, 3 (or 6, 18, 26), found {connectivity}")
    if match not in ("any", "iou"):
        raise MedsegError(f"--lesion-match: expected 'any' or 'iou', found {match!r}")


def _check_out(out: Path, force: bool) -> None:
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not force:
        raise MedsegError(
            f"report folder already holds {', '.join(existing)} (use --force to overwrite)", out
        )


def _cell(stats: dict[str, Any], digits: int = 4) -> str:
    if stats["mean"] is None:
        return f"inf x{stats['n_inf']}"
    text = f"{stats['mean']:.{digits}f} / {stats['median']:.{digits}f}"
    return text + (f" (inf x{stats['n_inf']})" if stats["n_inf"] else "")


def print_summary(summary: dict[str, Any], names: dict[int, str], console: Console) -> None:
    """Print one row per label: mean / median of the main measures."""
    table = Table(title=f"medseg evaluate: {summary['n_cases']} cases (mean / median)")
    for col in ("label", "Dice", "IoU", "HD95 mm", "ASSD mm", f"NSD@{summary['tolerance_mm']}mm"):
        table.add_column(col, justify="right" if col != "label" else "left")
    for lab, stats in summary["labels"].items():
        name = f"{lab} {names.get(int(lab), '')}".strip()
        cells = [
            _cell(stats[k], 2 if k in ("hd95", "assd") else 4)
            for k in ("dice", "iou", "hd95", "assd", "nsd")
        ]
        table.add_row(name, *cells)
    console.print(table)
    if summary["missing_predictions"]:
        missing = ", ".join(summary["missing_predictions"])
        console.print(f"[yellow]missing predictions (scored as empty):[/] {missing}")
    if summary["resampled_predictions"]:
        resampled = ", ".join(summary["resampled_predictions"])
        console.print(f"[yellow]resampled onto the reference grid:[/] {resampled}")


def evaluate(
    pred: Path = typer.Option(
        ..., "--pred", help="Folder of predicted label maps (case.nii.gz ...)."
    ),
    ref: Path | None = typer.Option(
        None, "--ref", help="Folder of reference label maps, paired by file name."
    ),
    manifest: Path | None = typer.Option(
        None,
        "--manifest",
        help="dataset.json-style manifest: references and images come from its training cases.",
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Folder the manifest's paths are relative to."
    ),
    labels: str | None = typer.Option(
        None, "--labels", help="Labels to score, e.g. 1,2 (default: every label found)."
    ),
    tolerance: float = typer.Option(
        1.0, "--tolerance", help="Tolerance in mm for NSD and boundary F1."
    ),
    lesion_labels: str | None = typer.Option(
        None,
        "--lesion-labels",
        help="Labels that also get lesion-wise (connected-component) measures, e.g. 1.",
    ),
    connectivity: int = typer.Option(
        3, "--connectivity", help="Lesion components: 1/2/3 (6/18/26-neighbourhood)."
    ),
    lesion_match: str = typer.Option(
        "any", "--lesion-match", help="Lesion detection rule: 'any' overlap or 'iou'."
    ),
    lesion_iou: float = typer.Option(
        0.1, "--lesion-iou", help="IoU threshold for --lesion-match iou."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Report folder: metrics.csv, summary.json, report.md/.html, figures/. "
        "Without it only the table is printed.",
    ),
    qc_cases: int = typer.Option(
        20,
        "--qc-cases",
        help="Overlay figures for at most this many cases, worst Dice first (0: none).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite the report files in --out."),
) -> None:
    """Score predictions against references: Dice, IoU, HD95, ASSD, NSD, lesion-wise measures.

    Distances are in mm from the reference's spacing; a prediction on another grid is
    resampled onto the reference's (nearest neighbour) with a warning. A missing prediction
    counts as an empty one (Dice 0). Infinite distances (one mask empty) are counted, not
    averaged.

    \b
    Example: medseg evaluate --pred preds/ --ref labelsTs/ --labels 1,2 --out report/
    """
    from medseg.metrics.evaluate import evaluate_cases, pair_folders, pair_manifest
    from medseg.metrics.summary import (
        HD95_CONVENTION,
        summarize,
        write_metrics_csv,
        write_summary_json,
    )

    _check_options(ref, manifest, data_root, connectivity, lesion_match)
    labs = parse_labels(labels, "--labels")
    lesions = parse_labels(lesion_labels, "--lesion-labels") or []
    if out is not None:
        _check_out(out, force)
    names: dict[int, str] = {}
    if manifest is not None and data_root is not None:
        pairs, unmatched, names = pair_manifest(manifest, data_root, pred)
        labs = labs if labs is not None else (sorted(names) or None)
    else:
        pairs, unmatched = pair_folders(pred, ref)  # type: ignore[arg-type]
    err = Console(stderr=True)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("scoring", total=len(pairs))
        ev = evaluate_cases(
            pairs,
            labels=labs,
            progress=lambda _cid: bar.advance(task),
            tolerance_mm=tolerance,
            lesion_labels=lesions,
            connectivity=connectivity,
            lesion_overlap=lesion_match,
            lesion_iou_threshold=lesion_iou,
        )
    ev.unmatched, ev.label_names = unmatched, names
    if unmatched:
        err.print(f"[yellow]predictions without a reference (ignored):[/] {', '.join(unmatched)}")
    summary = summarize(
        ev.rows,
        ev.labels,
        tolerance_mm=tolerance,
        hd95_convention=HD95_CONVENTION,
        label_names={str(k): v for k, v in names.items()},
        missing_predictions=ev.missing,
        unmatched_predictions=unmatched,
        resampled_predictions=ev.resampled,
    )
    print_summary(summary, names, Console())
    if out is not None:
        from medseg.metrics.report import write_report

        write_metrics_csv(ev.rows, out / "metrics.csv")
        write_summary_json(summary, out / "summary.json")
        md, _ = write_report(ev, summary, out, max_cases=qc_cases)
        Console().print(f"wrote {out / 'metrics.csv'}, {out / 'summary.json'}, {md}")


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to the medseg CLI."""
    app.command("evaluate")(evaluate)

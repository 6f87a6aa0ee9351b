"""``medseg evaluate``: score predicted label maps against references, in mm."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from medseg.errors import MedsegError
from medseg.io.outputs import check_output_dir

#: ``EvaluateConfig`` field -> the flag that sets it (errors name the flag).
FLAGS = {
    "labels": "--labels",
    "tolerance_mm": "--tolerance",
    "lesion_labels": "--lesion-labels",
    "connectivity": "--connectivity",
    "lesion_match": "--lesion-match",
    "lesion_iou": "--lesion-iou",
    "instance_labels": "--instances",
    "qc_cases": "--qc-cases",
}


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


def _check_sources(ref: Path | None, manifest: Path | None, data_root: Path | None) -> None:
    """Which flags go together (the values are checked by the library)."""
    if manifest is None and ref is None:
        raise MedsegError("give --ref DIR (reference label maps) or --manifest with --data-root")
    if manifest is not None and data_root is None:
        raise MedsegError("--manifest needs --data-root (the folder its paths are relative to)")


def _named_by_flag(exc: MedsegError) -> MedsegError:
    """``evaluate.tolerance_mm: ...`` -> ``--tolerance: ...`` (the flag the user typed)."""
    found = re.match(r"evaluate\.(\w+): (.*)", exc.message, re.S)
    if found is None or found.group(1) not in FLAGS:
        return exc
    return MedsegError(f"{FLAGS[found.group(1)]}: {found.group(2)}", exc.path)


def _cell(stats: dict[str, Any], digits: int = 4) -> str:
    if stats["mean"] is None:
        return f"inf x{stats['n_inf']}"
    text = f"{stats['mean']:.{digits}f} / {stats['median']:.{digits}f}"
    return text + (f" (inf x{stats['n_inf']})" if stats["n_inf"] else "")


def print_summary(summary: dict[str, Any], names: dict[int, str], console: Console) -> None:
    """Print one row per label: mean / median of the main measures (and, with
    ``--instances``, the dataset-level PQ pooled over cases)."""
    table = Table(title=f"medseg evaluate: {summary['n_cases']} cases (mean / median)")
    pooled = summary.get("panoptic_pooled", {})
    cols = ["label", "Dice", "IoU", "HD95 mm", "ASSD mm", f"NSD@{summary['tolerance_mm']}mm"]
    for col in cols + (["PQ"] if pooled else []):
        table.add_column(col, justify="right" if col != "label" else "left")
    for lab, stats in summary["labels"].items():
        name = f"{lab} {names.get(int(lab), '')}".strip()
        cells = [
            _cell(stats[k], 2 if k in ("hd95", "assd") else 4)
            for k in ("dice", "iou", "hd95", "assd", "nsd")
        ]
        if pooled:
            pq = pooled.get(lab, {}).get("pq")
            cells.append("" if pq is None else f"{pq:.4f}")
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
    instances: str | None = typer.Option(
        None,
        "--instances",
        help="Labels that also get panoptic quality (PQ = SQ x RQ, instances matched at "
        "IoU > 0.5; connected components with --connectivity), e.g. 2.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Report folder: metrics.csv, summary.json, report.md/.html, figures/ (a writable "
        "folder, not --pred/--ref nor inside them). Without it only the table is printed.",
    ),
    qc_cases: int = typer.Option(
        20,
        "--qc-cases",
        help="Overlay figures for at most this many cases, worst Dice first (0: none).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite the report files in --out."),
    allow_outside_root: bool = typer.Option(
        False,
        "--allow-outside-root",
        help="Accept --manifest paths that leave --data-root (refused by default).",
    ),
) -> None:
    """Score predictions against references: Dice, IoU, HD95, ASSD, NSD, lesion-wise, PQ.

    Distances are in mm from the reference's spacing; a prediction on another grid is
    resampled onto the reference's (nearest neighbour) with a warning. A missing prediction
    counts as an empty one (Dice 0). Infinite distances (one mask empty) are counted, not
    averaged. A case that cannot be scored (unreadable, non-overlapping grids, unknown label
    values, no reference) is named and left out; the others are scored and the exit code is 1.

    \b
    Example: medseg evaluate --pred preds/ --ref labelsTs/ --labels 1,2 --out report/
    """
    from medseg.workflows.evaluate import EvaluateConfig, evaluate_folder

    _check_sources(ref, manifest, data_root)
    if out is not None:
        check_output_dir(out, flag="--out", inputs=[("--pred", pred), ("--ref", ref)])
    labs = parse_labels(labels, "--labels")
    try:
        config = EvaluateConfig(
            labels=None if labs is None else tuple(labs),
            tolerance_mm=tolerance,
            lesion_labels=tuple(parse_labels(lesion_labels, "--lesion-labels") or ()),
            connectivity=connectivity,
            lesion_match=lesion_match,  # type: ignore[arg-type]  # checked by EvaluateConfig
            lesion_iou=lesion_iou,
            instance_labels=tuple(parse_labels(instances, "--instances") or ()),
            qc_cases=qc_cases,
            allow_outside_root=allow_outside_root,
        )
    except MedsegError as exc:
        raise _named_by_flag(exc) from exc
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("scoring", total=None)
        result = evaluate_folder(
            pred,
            ref=ref,
            manifest=manifest,
            data_root=data_root,
            out=out,
            config=config,
            force=force,
            progress=lambda _cid, done, total: bar.update(task, completed=done, total=total),
        )
    print_summary(result.summary, result.label_names, Console())
    if result.files:
        csv_path, json_path, md = result.files[:3]
        Console().print(f"wrote {csv_path}, {json_path}, {md}")
    if result.problems:
        typer.secho(f"{len(result.problems)} case(s) not scored (exit code 1):", err=True, fg="red")
        for line in result.problems:
            typer.secho(f"  {line}", err=True, fg="red")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to the medseg CLI."""
    app.command("evaluate")(evaluate)

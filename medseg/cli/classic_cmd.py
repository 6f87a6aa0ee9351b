"""``medseg segment-classic``: classic segmentation baselines (no model), output like predict."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from medseg.classic import ClassicConfig, ClassicSummary, load_classic_config, segment_cases
from medseg.classic.config import METHOD_NAMES
from medseg.errors import MedsegError
from medseg.io.outputs import check_output_dir

logger = logging.getLogger(__name__)
_D = ClassicConfig()  # the defaults quoted in --help
#: ``ClassicConfig`` field -> the flag that sets it, so that a bad flag value names the flag.
FLAGS = {
    "method": "METHOD",
    "classes": "--classes",
    "keep": "--keep",
    "lower": "--lower",
    "upper": "--upper",
    "seeds_ras": "--seed",
    "seeds_voxel": "--seed-voxel",
    "seed_mask": "--seed-mask",
    "smooth_mm": "--smooth",
    "multiplier": "--multiplier",
    "iterations": "--iterations",
    "neighborhood": "--neighborhood",
    "marker_mm": "--marker-mm",
    "gradient_mm": "--gradient-mm",
    "max_samples": "--max-samples",
    "random_seed": "--random-seed",
    "label_value": "--label-value",
    "largest_component": "--largest-component",
    "min_size_mm3": "--min-size",
    "fill_holes": "--fill-holes",
    "closing_mm": "--closing",
    "connectivity": "--connectivity",
}


def parse_triple(text: str, flag: str, kind: type = float) -> tuple[Any, Any, Any]:
    """``"12.5,-30,4"`` -> ``(12.5, -30.0, 4.0)`` (``kind`` int for voxel indices)."""
    parts = [p.strip() for p in text.split(",")]
    what = "x,y,z in RAS mm" if kind is float else "i,j,k voxel indices"
    try:
        if len(parts) != 3:
            raise ValueError(text)
        values = tuple(kind(p) for p in parts)
    except ValueError as exc:
        raise MedsegError(
            f"{flag}: expected {what} (three comma-separated {kind.__name__}s, e.g. "
            f"{'12.5,-30,4' if kind is float else '40,52,17'}), found {text!r}"
        ) from exc
    return values  # type: ignore[return-value]


def parse_keep(text: str | None) -> list[int] | None:
    """``"1,2"`` -> ``[1, 2]``; ``None`` -> ``None``."""
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise MedsegError(
            f"--keep: expected comma-separated class indices like 2 or 1,2, found {text!r}"
        ) from exc


def print_summary(summary: ClassicSummary, console: Console) -> None:
    """A table of every case (status, seconds, mask volume) and the counts."""
    table = Table(title=f"medseg segment-classic {summary.config.method}: {summary.output}")
    for col in ("case", "status", "seconds", "volume (ml)"):
        table.add_column(col, justify="left" if col in ("case", "status") else "right")
    for r in summary.results:
        done = r.status == "done"
        vol = f"{r.volume_mm3 / 1000:.3f}" if done else r.error
        table.add_row(r.name, r.status, f"{r.seconds:.2f}" if done else "", vol)
    console.print(table)
    c = summary.counts()
    console.print(
        f"{c['done']} done, {c['skipped']} skipped, {c['failed']} failed in "
        f"{summary.seconds:.1f} s; summary in {summary.output / 'summary.json'}"
    )


def segment_classic(
    method: str = typer.Argument(..., help=f"One of: {', '.join(METHOD_NAMES)}."),
    input_path: Path = typer.Option(
        ...,
        "--input",
        help="A NIfTI/NRRD/MHA file, a DICOM series folder, or a folder of cases (every image "
        "file and every folder of DICOM files is one case), as for medseg predict.",
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        help="Folder for <case>.nii.gz, <case>.json, summary.json and classic_config.yaml "
        "(a writable folder, neither --input nor inside it).",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML: top-level keys are ClassicConfig fields; flags override."
    ),
    classes: int | None = typer.Option(
        None, "--classes", help="multi-otsu, kmeans, gmm: number of intensity classes (def. 3)."
    ),
    keep: str | None = typer.Option(
        None,
        "--keep",
        help="otsu, multi-otsu, kmeans, gmm: class indices forming the mask, 0 = darkest, "
        "e.g. 2 or 1,2 (default: the brightest class).",
    ),
    lower: float | None = typer.Option(
        None,
        "--lower",
        help="Intensity window, image units (HU for CT), inclusive: thresholds and clustering "
        "use only voxels inside it; region-grow grows through it; watershed's foreground.",
    ),
    upper: float | None = typer.Option(None, "--upper", help="Upper end of that window."),
    seed: list[str] | None = typer.Option(
        None,
        "--seed",
        help="region-grow, confidence-connected, watershed: a seed point x,y,z in world RAS mm "
        "(repeatable; use --seed=-12,4,30 for a negative first value).",
    ),
    seed_voxel: list[str] | None = typer.Option(
        None, "--seed-voxel", help="A seed as voxel indices i,j,k of the file's array (repeat)."
    ),
    seed_mask: Path | None = typer.Option(
        None,
        "--seed-mask",
        help="A label map on the image's grid (or a folder of <case>.nii.gz): non-zero = object "
        "seeds, 2 = background markers (watershed).",
    ),
    smooth: float | None = typer.Option(
        None, "--smooth", help="Gaussian pre-smoothing sigma in mm (default 0: none)."
    ),
    multiplier: float | None = typer.Option(
        None,
        "--multiplier",
        help=f"confidence-connected: mean +/- this many std (default {_D.multiplier}).",
    ),
    iterations: int | None = typer.Option(
        None, "--iterations", help=f"confidence-connected: iterations (default {_D.iterations})."
    ),
    neighborhood: int | None = typer.Option(
        None,
        "--neighborhood",
        help=f"confidence-connected: initial radius around seeds, voxels ({_D.neighborhood}).",
    ),
    marker_mm: float | None = typer.Option(
        None,
        "--marker-mm",
        help="watershed without seeds: markers this deep inside / far outside the foreground, "
        f"mm (default {_D.marker_mm}).",
    ),
    gradient_mm: float | None = typer.Option(
        None, "--gradient-mm", help=f"watershed: gradient sigma in mm (default {_D.gradient_mm})."
    ),
    max_samples: int | None = typer.Option(
        None, "--max-samples", help=f"kmeans, gmm: voxels fitted (default {_D.max_samples})."
    ),
    random_seed: int | None = typer.Option(
        None, "--random-seed", help="kmeans, gmm: seed of the sample and initialisation (0)."
    ),
    label_value: int | None = typer.Option(
        None, "--label-value", help="Value of the mask in the label map (default 1)."
    ),
    largest_component: bool | None = typer.Option(
        None, "--largest-component/--all-components", help="Keep only the largest component."
    ),
    min_size: float | None = typer.Option(
        None, "--min-size", help="Remove components smaller than this, mm^3 (default 0)."
    ),
    fill_holes: bool | None = typer.Option(
        None, "--fill-holes/--no-fill-holes", help="Fill enclosed cavities (3D)."
    ),
    closing: float | None = typer.Option(
        None, "--closing", help="Morphological closing radius in mm (default 0: none)."
    ),
    connectivity: int | None = typer.Option(
        None, "--connectivity", help="Components: 1/2/3 (6/18/26 neighbours; default 3)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Redo cases whose outputs exist (made with any parameters)."
    ),
    series: str | None = typer.Option(
        None, "--series", help="DICOM SeriesInstanceUID (or number) for multi-series folders."
    ),
) -> None:
    """Segment scans with a classic method; masks on each scan's own grid.

    Exit 1 if a case failed (the others are still written).

    \b
    otsu         Otsu threshold (skimage) of voxels in [--lower, --upper]
    multi-otsu   --classes Otsu classes; --keep picks the mask's classes
    kmeans       k-means of intensities (scipy kmeans2); --classes, --keep
    gmm          Gaussian mixture (scikit-learn); --classes, --keep
    region-grow  SimpleITK ConnectedThreshold: from seeds within
                 [--lower, --upper]
    confidence-connected
                 SimpleITK ConfidenceConnected from seeds (--multiplier)
    watershed    skimage watershed of the gradient, from seeds or from
                 markers deep inside / outside the foreground
                 ([--lower, --upper], else above Otsu)
    Then --largest-component, --min-size, --fill-holes, --closing.
    Score it: medseg evaluate --pred OUTPUT --ref LABELS
    """
    from medseg.inference.cases import discover_cases

    overrides: dict[str, Any] = {
        "method": method,
        "classes": classes,
        "keep": parse_keep(keep),
        "lower": lower,
        "upper": upper,
        "seeds_ras": [parse_triple(s, "--seed") for s in seed] if seed else None,
        "seeds_voxel": [parse_triple(s, "--seed-voxel", int) for s in seed_voxel]
        if seed_voxel
        else None,
        "seed_mask": None if seed_mask is None else str(seed_mask),
        "smooth_mm": smooth,
        "multiplier": multiplier,
        "iterations": iterations,
        "neighborhood": neighborhood,
        "marker_mm": marker_mm,
        "gradient_mm": gradient_mm,
        "max_samples": max_samples,
        "random_seed": random_seed,
        "label_value": label_value,
        "largest_component": largest_component,
        "min_size_mm3": min_size,
        "fill_holes": fill_holes,
        "closing_mm": closing,
        "connectivity": connectivity,
    }
    cfg = load_classic_config(config, overrides, flags=FLAGS)
    check_output_dir(
        output, flag="--output", inputs=[("--input", input_path), ("--seed-mask", seed_mask)]
    )
    cases = discover_cases(input_path, exclude=output)  # a bad --input fails before any output
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(cfg.method, total=len(cases))
        summary = segment_cases(
            cases,
            output,
            cfg,
            overwrite=overwrite,
            series=series,
            progress=lambda r, done, _total: bar.update(task, completed=done, description=r.name),
        )
    print_summary(summary, Console())
    if summary.failed:
        names = ", ".join(r.name for r in summary.failed)
        typer.secho(
            f"{len(summary.failed)} case(s) failed: {names} (details in "
            f"{summary.output / 'summary.json'})",
            err=True,
            fg="red",
        )
    raise typer.Exit(1 if summary.failed else 0)


def register(app: typer.Typer) -> None:
    """Add ``medseg segment-classic`` to the CLI."""
    app.command("segment-classic")(segment_classic)

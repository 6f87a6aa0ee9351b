"""``medseg train``: fingerprint, plan, preprocess (cached) and train one or all folds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medseg.errors import MedsegError
from medseg.networks.registry import NETWORKS, network_table

# Run-config key -> the flag that sets it, so that a bad flag value names the flag.
FLAGS = {
    "data.manifest": "--manifest",
    "data.data_root": "--data-root",
    "data.fold": "--fold",
    "data.folds": "--folds",
    "data.allow_outside_root": "--allow-outside-root",
    "plans.model": "--model",
    "plans.configuration": "--configuration",
    "train.epochs": "--epochs",
    "train.time_limit_minutes": "--time-limit",
    "train.device": "--device",
    "train.seed": "--seed",
    "train.deterministic": "--deterministic",
    "train.postprocess_decision": "--no-postprocess-decision",
}


def _fold_value(fold: str) -> int | str:
    if fold == "all":
        return "all"
    try:
        return int(fold)
    except ValueError as exc:
        raise MedsegError(f"--fold: expected an integer or 'all', found {fold!r}") from exc


def train_command(
    manifest: Path = typer.Option(..., "--manifest", help="Dataset manifest (MSD dataset.json)."),
    data_root: Path = typer.Option(
        ..., "--data-root", help="Folder the manifest paths start from."
    ),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or resume)."),
    config: Path | None = typer.Option(
        None, "--config", help="YAML run config (data/plans/augment/train)."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help=f"Network: {' | '.join(NETWORKS)}, or auto (default: unet on CPU, dynunet on "
        "CUDA). The list below says which plans fields each one reads; vnet ignores "
        "plans.channels (fixed widths; planning logs a warning).",
    ),
    configuration: str | None = typer.Option(
        None,
        "--configuration",
        help="3d (default) | 2d | 3d_lowres | auto. 2d: nnU-Net's 2d configuration, a 2D "
        "unet (CPU) or dynunet (CUDA) run slice by slice along the coarsest axis, larger "
        "batches; 3d_lowres: 3D at a coarser spacing, so a patch covers >= 25% of the median "
        "image; auto: trains 2d, 3d (and 3d_lowres when a full-resolution patch covers < 25% "
        "of the median image) in OUT/<configuration>, splits --time-limit equally between "
        "them, compares them and the ensemble of the two best on the pooled cross-validation "
        "predictions, and writes the choice to OUT/configuration.json (predict uses it).",
    ),
    fold: str | None = typer.Option(
        None, "--fold", help="Fold index, or 'all' to train every fold."
    ),
    folds: int | None = typer.Option(
        None, "--folds", help="Number of cross-validation folds (default 5)."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Epochs (each train.iterations_per_epoch steps)."
    ),
    time_limit: float | None = typer.Option(
        None,
        "--time-limit",
        help="Budget of the whole command in MINUTES (folds and post-processing decision): "
        "stops cleanly with a validated best checkpoint.",
    ),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from checkpoint_last.pt."
    ),
    force: bool = typer.Option(False, "--force", help="Train into a non-empty --out anyway."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed."),
    deterministic: bool = typer.Option(
        False, "--deterministic", help="Deterministic algorithms (repeatable weights on CPU)."
    ),
    no_postprocess_decision: bool = typer.Option(
        False,
        "--no-postprocess-decision",
        help="Skip choosing post-processing on the validation cases after training.",
    ),
    no_progress: bool = typer.Option(
        False, "--no-progress", help="Log lines instead of a progress bar."
    ),
    allow_outside_root: bool = typer.Option(
        False,
        "--allow-outside-root",
        help="Accept manifest paths outside --data-root ('..', absolute, symlinks).",
    ),
) -> None:
    """Train a segmentation model into --out (config, plans, splits, fold_<k>/ checkpoints)."""
    from medseg.config import load_config
    from medseg.training.config import RunConfig
    from medseg.workflows.train import train_and_decide

    overrides: dict[str, Any] = {
        "data.manifest": str(manifest),
        "data.data_root": str(data_root),
        "data.fold": _fold_value(fold) if fold is not None else None,
        "data.folds": folds,
        "plans.model": model,
        "plans.configuration": configuration,
        "train.epochs": epochs,
        "train.time_limit_minutes": time_limit,
        "train.device": device,
        "train.seed": seed,
        "train.deterministic": True if deterministic else None,
        "train.postprocess_decision": False if no_postprocess_decision else None,
        "data.allow_outside_root": True if allow_outside_root else None,
    }
    base = config
    if base is None and resume and (out / "config.yaml").is_file():
        base = out / "config.yaml"
    cfg = load_config(RunConfig, base, overrides, "config", flags=FLAGS)
    results = train_and_decide(cfg, out, resume=resume, force=force, progress=not no_progress)
    for name, summary in results.items():
        dice = ", ".join(f"{k} {v:.3f}" for k, v in summary["best_dice"].items() if v is not None)
        typer.echo(
            f"{name}: {summary['epochs']} epochs in {summary['elapsed_s'] / 60:.1f} min; "
            f"best (epoch {summary['best_epoch']}) Dice {dice}; data wait "
            f"{100 * summary['data_wait_share']:.0f}% of step time"
        )
    if results:  # rank 0 (other ranks under torchrun return no summaries)
        from medseg.workflows.configurations import choice_summary

        chosen = choice_summary(out)
        if chosen:
            typer.echo(chosen)
        typer.echo(f"run directory: {out}")


def register(app: typer.Typer) -> None:
    """Add ``train`` to the CLI."""
    app.command("train", epilog="Networks (--model):\n\n" + network_table())(train_command)

"""``medseg export-bundle`` and ``medseg verify-bundle`` over :mod:`medseg.bundle`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

logger = logging.getLogger(__name__)


def export_bundle_cmd(
    run_dir: Path = typer.Argument(..., help="Training run directory (plans.json, fold_<k>/)."),
    out_dir: Path = typer.Argument(..., help="Bundle folder to write."),
    name: str | None = typer.Option(None, "--name", help="Bundle name (default: run folder name)."),
    version: str = typer.Option("0.1.0", "--version", help="Bundle version X.Y.Z."),
    fold: int = typer.Option(-1, "--fold", help="Fold to export (-1: the lowest trained fold)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle folder."),
) -> None:
    """Export one fold of a run as a MONAI bundle that runs with `python -m monai.bundle run`."""
    from medseg.bundle import export_bundle

    out = export_bundle(
        run_dir, out_dir, name=name, version=version, fold=None if fold < 0 else fold, force=force
    )
    typer.echo(f"bundle written to {out}")
    typer.echo(
        f"run it with: python -m monai.bundle run --config_file {out}/configs/inference.json "
        "--dataset_dir IN --output_dir OUT"
    )


def verify_bundle_cmd(
    bundle_dir: Path = typer.Argument(..., help="Bundle folder (configs/metadata.json)."),
) -> None:
    """Check a bundle's metadata against the bundle schema shipped with medseg (offline)."""
    from medseg.bundle import verify_metadata

    verify_metadata(bundle_dir / "configs" / "metadata.json")
    typer.echo(f"{bundle_dir}: metadata follows the MONAI bundle schema")


def register(app: typer.Typer) -> None:
    """Add the bundle commands to the medseg CLI."""
    app.command("export-bundle")(export_bundle_cmd)
    app.command("verify-bundle")(verify_bundle_cmd)

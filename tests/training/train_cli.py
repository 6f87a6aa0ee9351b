"""Arguments of a tiny ``medseg train`` run in a subprocess (DDP and SIGKILL tests)."""

from __future__ import annotations

from pathlib import Path


def train_cli_args(
    tiny_cohort: Path, tmp_path: Path, out: Path, *, epochs: int, iterations: int = 2
) -> list[str]:
    """``medseg train`` arguments (after ``medseg``) for the tiny cohort, run in a subprocess.

    Writes ``tmp_path/run.yaml`` (tiny network, 3 folds, one thread, validation every epoch).
    """
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "plans: {channels: [4, 8, 16], patch_size: [16, 16, 16], batch_size: 2}\n"
        f"data: {{cache_dir: {tmp_path / 'cache'}, folds: 3}}\n"
        f"train: {{iterations_per_epoch: {iterations}, num_workers: 0, threads: 1, val_every: 1}}\n"
    )
    return [
        "train",
        "--manifest",
        str(tiny_cohort),
        "--data-root",
        str(tiny_cohort.parent),
        "--out",
        str(out),
        "--config",
        str(cfg),
        "--epochs",
        str(epochs),
        "--device",
        "cpu",
        "--no-progress",
        "--no-postprocess-decision",
    ]

"""Per-epoch logging of a fold: ``log.csv``, ``tensorboard/`` and a progress bar with ETA.

Only rank 0 logs (``enabled=False`` elsewhere). ``log.csv`` is rewritten from the history
kept in the checkpoint, so after a resume it holds exactly the epochs of the run.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from medseg.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)


class RunLogger:
    """Write the history of a fold and show progress.

    Parameters
    ----------
    fold_dir
        ``RUN_DIR/fold_<k>``.
    labels
        ``{value: name}`` (names the Dice columns).
    enabled
        False on ranks other than 0.
    progress
        Show a rich progress bar (CLI); plain log lines otherwise.
    """

    def __init__(
        self,
        fold_dir: Path,
        labels: dict[int, str],
        *,
        enabled: bool = True,
        progress: bool = False,
    ) -> None:
        self.fold_dir, self.labels, self.enabled = fold_dir, labels, enabled
        self.show_progress = progress and enabled
        self._writer: Any = None
        self._bar: Any = None
        self._task: Any = None

    def start(self, total: float, done: float, unit: str) -> None:
        """Open TensorBoard and the progress bar (``total`` epochs or seconds)."""
        if not self.enabled:
            return
        self.fold_dir.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.fold_dir / "tensorboard"))
        except ImportError:  # tensorboard is a dependency, but keep training without it
            logger.warning("tensorboard not importable; scalars go to log.csv only")
        if self.show_progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
            )
            self._bar.start()
            self._task = self._bar.add_task(
                f"{self.fold_dir.name} ({unit})", total=total, completed=done, info=""
            )

    def epoch(self, row: dict[str, Any], history: list[dict[str, Any]], done: float) -> None:
        """Record one epoch: TensorBoard scalars, ``log.csv``, progress/log line."""
        if not self.enabled:
            return
        if self._writer is not None:
            step = int(row["step"])
            for key, value in row.items():
                if isinstance(value, float | int) and key not in ("epoch", "step"):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()
        self._write_csv(history)
        dice = row.get("val_mean_dice")
        info = f"loss {row['train_loss']:.3f}" + (f" dice {dice:.3f}" if dice is not None else "")
        if self._bar is not None:
            self._bar.update(self._task, completed=done, info=info)
        else:
            logger.info(
                "%s epoch %d: %s (%.1f s)", self.fold_dir.name, row["epoch"], info, row["epoch_s"]
            )

    def _write_csv(self, history: list[dict[str, Any]]) -> None:
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.fold_dir / "log.csv", buf.getvalue())

    def close(self) -> None:
        """Close TensorBoard and the progress bar."""
        if self._writer is not None:
            self._writer.close()
        if self._bar is not None:
            self._bar.stop()

"""``FoldState``: the progress of one fold that a checkpoint saves and ``--resume`` restores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FoldState:
    """Progress that a checkpoint restores."""

    epoch: int = 0
    step: int = 0
    elapsed_s: float = 0.0
    best_metric: float = -1.0
    best_epoch: int = -1
    ema_metric: float = -1.0
    last_dice: dict[int, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

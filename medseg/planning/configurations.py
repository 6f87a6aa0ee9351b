"""The configurations ``medseg train --configuration auto`` trains, and the choice it records.

nnU-Net plans several configurations of one cohort and picks (or ensembles) them on
cross-validation. medseg plans:

* ``3d``: the full-resolution 3D configuration (:func:`medseg.planning.planner.plan`);
* ``2d``: slice-wise along the coarsest axis (:func:`medseg.planning.planner_2d.plan_2d`);
* ``3d_lowres``: 3D at a coarser spacing (:func:`plan_lowres`), planned only when the
  full-resolution patch covers less than :data:`LOWRES_COVERAGE` of the median image's voxels
  (nnU-Net v2's ``lowres_creation_threshold``, 0.25): then the network sees more context per
  window. nnU-Net's cascade (a full-resolution network fed the low-resolution prediction) is
  not implemented.

An ``auto`` run directory holds one ordinary run directory per configuration
(``RUN_DIR/3d``, ``RUN_DIR/2d``, ...) and ``RUN_DIR/configuration.json``
(:class:`ConfigurationChoice`): what was trained, each candidate's pooled cross-validation
Dice, the ensembles tried, the choice and why. ``medseg predict --model RUN_DIR`` uses it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError
from medseg.io.atomic import atomic_write_text
from medseg.io.jsonfile import read_json
from medseg.planning.config import PlansConfig
from medseg.planning.fingerprint import Fingerprint
from medseg.planning.plans import Plans

logger = logging.getLogger(__name__)

CONFIGURATION_FILE = "configuration.json"
# Fraction of the median image's voxels (at full resolution) below which a full-resolution
# patch is thought to see too little context, so that 3d_lowres is worth training
# (nnU-Net v2's threshold).
LOWRES_COVERAGE = 0.25
# Each step of the low-resolution search multiplies the spacing by this factor (nnU-Net's).
LOWRES_SPACING_STEP = 1.03
_MAX_LOWRES_STEPS = 200


def patch_coverage(plans: Plans) -> float:
    """Fraction of the median image's voxels (at ``plans`` spacing) that one patch covers."""
    median = float(np.prod(np.maximum(np.asarray(plans.median_shape, float), 1.0)))
    return min(1.0, float(np.prod(plans.patch_size)) / median)


def plan_lowres(fp: Fingerprint, device: str = "cpu", cfg: PlansConfig | None = None) -> Plans:
    """3D plans at the first spacing (full resolution times ``1.03 ** n``) whose patch covers
    at least :data:`LOWRES_COVERAGE` of the median image, with ``configuration="3d_lowres"``.

    Returns the full-resolution plans (relabelled ``3d_lowres``) when they already cover it.
    """
    from medseg.planning.planner import plan  # planner dispatches here

    cfg = replace(cfg or PlansConfig(), configuration="3d")
    full = plan(fp, device, cfg)
    spacing = np.asarray(full.target_spacing, float)
    plans, factor = full, 1.0
    for _ in range(_MAX_LOWRES_STEPS):
        if patch_coverage(plans) >= LOWRES_COVERAGE:
            break
        factor *= LOWRES_SPACING_STEP
        coarse = tuple(float(s) for s in spacing * factor)
        plans = plan(fp, device, replace(cfg, target_spacing=coarse))  # type: ignore[arg-type]
    logger.info(
        "3d_lowres configuration: spacing %s mm (x%.2f), patch %s covers %.0f%% of the median "
        "image",
        [round(s, 3) for s in plans.target_spacing],
        factor,
        plans.patch_size,
        100 * patch_coverage(plans),
    )
    return replace(plans, configuration="3d_lowres")


def sensible_configurations(full_3d: Plans) -> dict[str, str]:
    """``{configuration: why}`` that ``auto`` trains, given the cohort's full-resolution plans.

    ``3d`` and ``2d`` always (as nnU-Net); ``3d_lowres`` when the full-resolution patch covers
    less than :data:`LOWRES_COVERAGE` of the median image.
    """
    coverage = patch_coverage(full_3d)
    out = {
        "3d": "always planned (full resolution)",
        "2d": "always planned (slice-wise)",
    }
    if coverage < LOWRES_COVERAGE:
        out["3d_lowres"] = (
            f"the full-resolution patch {list(full_3d.patch_size)} covers {coverage:.0%} of the "
            f"median image {list(full_3d.median_shape)} (< {LOWRES_COVERAGE:.0%})"
        )
    return out


@dataclass(frozen=True)
class ConfigurationChoice:
    """``RUN_DIR/configuration.json``: what ``--configuration auto`` trained and chose.

    Attributes
    ----------
    chosen
        The configuration(s) ``predict`` uses: one name, or two whose source-grid class
        probabilities are averaged (an ensemble).
    trained
        ``{configuration: sub-folder}`` of every configuration trained.
    scores
        ``{candidate: {"mean_dice": ..., "dice_per_label": {...}}}``: mean foreground Dice of
        the pooled cross-validation predictions (no post-processing), per candidate
        (``"2d"``, ``"3d"``, ``"2d+3d"`` for an ensemble).
    reason
        One sentence: why ``chosen`` won.
    details
        JSON-ready extras: folds, validation cases, the time budget per configuration.
    """

    chosen: tuple[str, ...]
    trained: dict[str, str]
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def is_ensemble(self) -> bool:
        """True when ``predict`` averages several configurations."""
        return len(self.chosen) > 1

    def folder(self, run_dir: Path, name: str) -> Path:
        """The run directory of configuration ``name`` inside ``run_dir``."""
        return Path(run_dir) / self.trained[name]


def save_choice(choice: ConfigurationChoice, run_dir: Path) -> Path:
    """Write ``RUN_DIR/configuration.json`` atomically; returns its path."""
    path = Path(run_dir) / CONFIGURATION_FILE
    data = {
        "chosen": list(choice.chosen),
        "trained": choice.trained,
        "scores": choice.scores,
        "reason": choice.reason,
        "details": choice.details,
    }
    atomic_write_text(path, json.dumps(data, indent=1))
    return path


def load_choice(run_dir: Path) -> ConfigurationChoice:
    """Read ``RUN_DIR/configuration.json``, checking that each chosen folder is a run.

    Raises
    ------
    MedsegError
        Naming the file when it is not JSON, misses ``chosen``/``trained``, or names a
        configuration whose folder has no ``plans.json``.
    """
    path = Path(run_dir) / CONFIGURATION_FILE
    data = read_json(path)
    if not isinstance(data, dict):
        raise MedsegError("expected a JSON object, found " + type(data).__name__, path)
    chosen, trained = data.get("chosen"), data.get("trained")
    if not isinstance(chosen, list) or not chosen or not isinstance(trained, dict):
        raise MedsegError(
            f"expected 'chosen' (a non-empty list) and 'trained' (an object), found {sorted(data)}",
            path,
        )
    for name in chosen:
        sub = trained.get(name)
        if not isinstance(sub, str) or not (Path(run_dir) / sub / "plans.json").is_file():
            raise MedsegError(
                f"expected configuration '{name}' trained in a sub-folder with plans.json, "
                f"found {sub!r}",
                path,
            )
    return ConfigurationChoice(
        chosen=tuple(str(c) for c in chosen),
        trained={str(k): str(v) for k, v in trained.items()},
        scores=dict(data.get("scores") or {}),
        reason=str(data.get("reason", "")),
        details=dict(data.get("details") or {}),
    )


def is_auto_run(path: Path) -> bool:
    """True for the top folder of a ``--configuration auto`` run (``configuration.json``)."""
    return (Path(path) / CONFIGURATION_FILE).is_file()


def single_configuration_dir(run_dir: Path) -> Path:
    """The run directory of an ``auto`` run's one chosen configuration.

    Raises
    ------
    MedsegError
        When the run chose an ensemble (only ``medseg predict`` averages configurations), or
        ``configuration.json`` is unreadable.
    """
    choice = load_choice(run_dir)
    if choice.is_ensemble:
        sub = ", ".join(str(choice.folder(run_dir, c)) for c in choice.chosen)
        raise MedsegError(
            f"expected one model, found the ensemble {'+'.join(choice.chosen)} chosen by "
            f"--configuration auto; medseg predict runs the ensemble; to export or load one "
            f"network give one configuration's folder: {sub}",
            Path(run_dir) / CONFIGURATION_FILE,
        )
    return choice.folder(run_dir, choice.chosen[0])

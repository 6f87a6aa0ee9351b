"""``medseg train --configuration auto``: train every sensible configuration, choose on
cross-validation, as nnU-Net's ``find_best_configuration`` does.

1. The manifest is validated and the fingerprint computed once; the full-resolution 3D plans
   say which configurations are sensible
   (:func:`medseg.planning.configurations.sensible_configurations`: 3d, 2d, and 3d_lowres
   when a full-resolution patch covers under a quarter of the median image).
2. Each is trained into ``RUN_DIR/<configuration>`` (an ordinary run directory) on the same
   folds and splits; ``train.time_limit_minutes`` is split: :data:`COMPARE_SHARE` of it is
   kept for the comparison and the post-processing decision, the rest is shared equally
   (stated in the log and in ``configuration.json``).
3. The validation cases of the folds trained are pooled, each predicted by the fold that
   held it out, without post-processing, on its source grid; every configuration and the
   ensemble of the two best (probabilities averaged on the source grid) get a mean
   foreground Dice; the highest wins (a tie goes to the single configuration, which
   predicts faster). ``RUN_DIR/configuration.json`` records all of it.
4. The post-processing is decided for the choice: in its own folder for one configuration,
   in ``RUN_DIR/postprocessing.json`` for an ensemble.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import dump_yaml
from medseg.data.loading import load_case_image
from medseg.data.manifest import Manifest, load_manifest
from medseg.data.splits import read_splits, write_splits
from medseg.data.validation import validate_manifest
from medseg.errors import MedsegError
from medseg.inference.config import InferConfig
from medseg.inference.predictor import Predictor
from medseg.io import affines_match, load_volume
from medseg.metrics.overlap import dice_per_label
from medseg.networks.loading import available_folds
from medseg.planning.configurations import (
    CONFIGURATION_FILE,
    ConfigurationChoice,
    load_choice,
    save_choice,
    sensible_configurations,
)
from medseg.planning.fingerprint import Fingerprint
from medseg.planning.planner import plan
from medseg.runtime.device import resolve_device
from medseg.runtime.distributed import env_info
from medseg.training.config import RunConfig
from medseg.training.run import cohort_fingerprint, refuse_non_empty, train
from medseg.workflows.postprocess_decision import decide_run_postprocessing

logger = logging.getLogger(__name__)

# Share of --time-limit kept for comparing the configurations and deciding post-processing.
# Comparing predicts every pooled validation case once per configuration (about one
# decision's worth of prediction each), then the decision predicts them again.
COMPARE_SHARE = 0.15
# Files of the top folder of an auto run (removed by --force along with configuration folders).
_TOP_FILES = (CONFIGURATION_FILE, "postprocessing.json", "config.yaml", "splits.json")
_CONFIG_DIRS = ("3d", "2d", "3d_lowres")


def train_auto(
    cfg: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train each sensible configuration into ``out/<name>``, choose one (or an ensemble).

    Returns ``{"<configuration>/fold_<k>": metrics}`` (``{}`` on DDP ranks other than 0).
    Writes ``out/configuration.json`` (:class:`ConfigurationChoice`), ``out/config.yaml``,
    ``out/splits.json`` and the post-processing decision of the choice.

    Raises
    ------
    MedsegError
        For a non-empty ``out`` without ``resume``/``force``, bad manifests or configs, or
        configurations whose splits differ.
    """
    t_start = time.perf_counter()
    out = Path(out)
    _check_top_dir(out, resume=resume, force=force)
    manifest, fp = _fingerprint(cfg)
    device = resolve_device(cfg.train.device).type
    full = plan(fp, device, dataclasses.replace(cfg.plans, configuration="3d"))
    todo = sensible_configurations(full)
    minutes = _shares(cfg.train.time_limit_minutes, list(todo))
    results: dict[str, Any] = {}
    for name, why in todo.items():
        logger.info("configuration %s (%s): training in %s", name, why, out / name)
        sub = out / name
        again = resume and (sub / "plans.json").is_file()
        sub_cfg = _member_config(cfg, name, minutes.get(name, 0.0))
        trained = train(sub_cfg, sub, resume=again, force=force, progress=progress, fingerprint=fp)
        results.update({f"{name}/{k}": v for k, v in trained.items()})
    if not env_info().is_main:
        return {}
    deadline = t_start + 60 * cfg.train.time_limit_minutes if minutes else math.inf
    folds = _common_folds(out, list(todo))
    _write_common_splits(out, list(todo))
    details = {
        "time_limit_minutes": cfg.train.time_limit_minutes,
        "minutes": minutes,
        "why": todo,
        "folds": folds,
    }
    choice = compare_configurations(out, list(todo), folds, manifest, deadline, details)
    save_choice(choice, out)
    dump_yaml(cfg, out / "config.yaml")
    logger.info("configuration chosen: %s (%s)", "+".join(choice.chosen), choice.reason)
    if cfg.train.postprocess_decision:
        target = out if choice.is_ensemble else choice.folder(out, choice.chosen[0])
        decide_run_postprocessing(
            target,
            folds,
            manifest.path,
            manifest.data_root,
            deadline=deadline,
            allow_outside_root=cfg.data.allow_outside_root,
        )
    return results


def _check_top_dir(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse a non-empty ``out`` unless resuming or forced; ``force`` removes only what an
    auto run writes (its files and configuration folders)."""
    refuse_non_empty(out, resume=resume, force=force)
    if force and not resume and out.is_dir():
        for name in _TOP_FILES:
            (out / name).unlink(missing_ok=True)
        for name in _CONFIG_DIRS:
            if (out / name / "plans.json").is_file():
                shutil.rmtree(out / name)
    out.mkdir(parents=True, exist_ok=True)


def _fingerprint(cfg: RunConfig) -> tuple[Manifest, Fingerprint]:
    """The manifest, validated once, and the cohort's fingerprint (shared by all configurations)."""
    manifest = load_manifest(
        cfg.data.manifest, cfg.data.data_root, allow_outside_root=cfg.data.allow_outside_root
    )
    if not manifest.training:
        raise MedsegError("expected labelled training cases, found none", manifest.path)
    if cfg.data.validate_files:
        validate_manifest(manifest, min_overlap=cfg.data.min_channel_overlap).raise_if_failed()
    return manifest, cohort_fingerprint(cfg, manifest)


def _shares(limit_minutes: float, names: Sequence[str]) -> dict[str, float]:
    """Minutes of training per configuration: the limit less :data:`COMPARE_SHARE`, split
    equally (``{}`` without a limit)."""
    if limit_minutes <= 0:
        logger.info("no time limit: each configuration trains its full schedule")
        return {}
    each = limit_minutes * (1.0 - COMPARE_SHARE) / len(names)
    logger.info(
        "time budget %.1f min: %s; %.1f min for the comparison and post-processing decision",
        limit_minutes,
        ", ".join(f"{n} {each:.1f} min" for n in names),
        limit_minutes * COMPARE_SHARE,
    )
    return {n: each for n in names}


def _member_config(cfg: RunConfig, name: str, minutes: float) -> RunConfig:
    """``cfg`` for one configuration: its name, its time share, no decision of its own, and
    the manifest not validated again."""
    return dataclasses.replace(
        cfg,
        plans=dataclasses.replace(cfg.plans, configuration=name),  # type: ignore[arg-type]
        train=dataclasses.replace(
            cfg.train, time_limit_minutes=minutes, postprocess_decision=False
        ),
        data=dataclasses.replace(cfg.data, validate_files=False),
    )


def _common_folds(out: Path, names: Sequence[str]) -> list[int]:
    """The folds trained in every configuration."""
    sets = [set(available_folds(out / n)) for n in names]
    common = sorted(set.intersection(*sets)) if sets else []
    if not common:
        raise MedsegError(
            f"expected a fold trained in every configuration {list(names)}, found "
            + ", ".join(f"{n}: {sorted(s)}" for n, s in zip(names, sets, strict=True)),
            out,
        )
    return common


def _write_common_splits(out: Path, names: Sequence[str]) -> None:
    """``out/splits.json``, after checking that every configuration has the same splits."""
    splits = [read_splits(out / n / "splits.json") for n in names]
    for n, s in zip(names[1:], splits[1:], strict=True):
        if s != splits[0]:
            raise MedsegError(
                f"expected the splits of configuration '{names[0]}', found different ones",
                out / n / "splits.json",
            )
    write_splits(out / "splits.json", splits[0])


def compare_configurations(
    out: Path,
    names: Sequence[str],
    folds: Sequence[int],
    manifest: Manifest,
    deadline: float = math.inf,
    details: dict[str, Any] | None = None,
) -> ConfigurationChoice:
    """Score each configuration and the ensemble of the two best on the pooled validation
    cases of ``folds`` (each predicted by its own fold, no post-processing); choose the best.

    Dice is averaged over cases per label (a label absent from prediction and reference
    scores 1), then over foreground labels. Cases are scored until ``deadline``; the count is
    recorded.
    """
    dice, cases = _pooled_dice(out, names, folds, manifest, deadline)
    if cases == 0:
        first = "3d" if "3d" in names else names[0]
        reason = "no time was left to compare the configurations; the full-resolution default"
        return _choice(names, (first,), {}, reason, details, cases)
    scores = {cand: _summary(per_case) for cand, per_case in dice.items()}
    singles = sorted(names, key=lambda n: -scores[n]["mean_dice"])
    best = singles[0]
    chosen: tuple[str, ...] = (best,)
    reason = f"highest mean foreground Dice ({scores[best]['mean_dice']:.4f}) of the configurations"
    if len(singles) > 1:
        pair = "+".join(sorted(singles[:2]))
        ens, single = scores[pair]["mean_dice"], scores[best]["mean_dice"]
        if ens > single:
            chosen = tuple(sorted(singles[:2]))
            reason = (
                f"the ensemble of the two best configurations ({ens:.4f}) beats the best "
                f"single one, {best} ({single:.4f})"
            )
        else:
            reason += f"; the ensemble {pair} ({ens:.4f}) does not beat it"
    reason += f", on {cases} pooled validation cases of fold(s) {list(folds)}"
    return _choice(names, chosen, scores, reason, details, cases)


def _choice(
    names: Sequence[str],
    chosen: tuple[str, ...],
    scores: dict[str, dict[str, Any]],
    reason: str,
    details: dict[str, Any] | None,
    cases: int,
) -> ConfigurationChoice:
    return ConfigurationChoice(
        chosen=chosen,
        trained={n: n for n in names},
        scores=scores,
        reason=reason,
        details={
            **(details or {}),
            "validation_cases": cases,
            "rule": "mean foreground Dice, no post-processing; tie -> single",
        },
    )


def _summary(per_case: list[dict[int, float]]) -> dict[str, Any]:
    labels = sorted({k for row in per_case for k in row})
    per_label = {str(k): float(np.mean([row[k] for row in per_case])) for k in labels}
    mean = float(np.mean(list(per_label.values()))) if per_label else 0.0
    return {"mean_dice": round(mean, 6), "dice_per_label": per_label, "cases": len(per_case)}


def _pooled_dice(
    out: Path,
    names: Sequence[str],
    folds: Sequence[int],
    manifest: Manifest,
    deadline: float,
) -> tuple[dict[str, list[dict[int, float]]], int]:
    """``{candidate: [per-case {label: dice}]}`` (singles and every pair) and the case count."""
    splits = read_splits(out / "splits.json")
    by_id = {c.case_id: c for c in manifest.training}
    pairs = ["+".join(p) for p in itertools.combinations(sorted(names), 2)]
    dice: dict[str, list[dict[int, float]]] = {n: [] for n in [*names, *pairs]}
    done, last_s = 0, 0.0
    for k in folds:
        predictors = {n: _fold_predictor(out / n, k) for n in names}
        labels = sorted(v for v in predictors[names[0]].label_names if v != 0)
        for case_id in splits[k]["val"]:
            t0 = time.perf_counter()
            if t0 + last_s > deadline:
                logger.warning("comparison stopped by the time limit after %d cases", done)
                return dice, done
            _score_case(by_id[case_id], predictors, labels, dice)
            done += 1
            last_s = time.perf_counter() - t0
    return dice, done


def _fold_predictor(run: Path, fold: int) -> Predictor:
    infer = InferConfig(folds=(fold,), postprocess="none", crf=False)
    return Predictor.from_path(run, config=infer, kind="run")


def _score_case(
    case: Any,
    predictors: dict[str, Predictor],
    labels: list[int],
    dice: dict[str, list[dict[int, float]]],
) -> None:
    """Add one case's Dice for every single configuration and every pair to ``dice``."""
    first = next(iter(predictors.values()))
    volume = load_case_image(case, first.plans.in_channels)
    ref = load_volume(case.label, allow_empty=True)
    if ref.spatial_shape != volume.spatial_shape or not affines_match(ref.affine, volume.affine):
        raise MedsegError(
            f"expected the label on its image's grid {volume.spatial_shape} ({case.image}), "
            f"found {ref.spatial_shape} with affine {ref.affine.round(3).tolist()}",
            case.label,
        )
    reference = np.asarray(ref.array)
    probs: dict[str, np.ndarray] = {}
    for name, predictor in predictors.items():
        pred = predictor.predict(volume, with_probabilities=True)
        assert pred.probabilities is not None
        probs[name] = pred.probabilities.array
        dice[name].append(dice_per_label(pred.mask.array, reference, labels))
    for pair in [c for c in dice if "+" in c]:
        a, b = pair.split("+")
        mean = probs[a].astype(np.float32) + probs[b].astype(np.float32)
        dice[pair].append(dice_per_label(np.argmax(mean, axis=0), reference, labels))


def choice_summary(out: Path) -> str:
    """One line about ``out/configuration.json`` for the CLI ('' when there is none)."""
    if not (Path(out) / CONFIGURATION_FILE).is_file():
        return ""
    choice = load_choice(Path(out))
    return f"configuration: {'+'.join(choice.chosen)} ({choice.reason})"

"""Accuracy benchmark: soft-tissue sarcoma, CT and CT + PET, medseg defaults vs plain MONAI.

For each manifest (``data_manifests/sts_ct.json``: CT only; ``data_manifests/sts_ct_pet.json``:
CT + FDG-PET, the PET resampled onto the CT grid) and each method, on fold 0 of 5 of the
36 cases under ``../shared/data/sts_ct_pet`` (see its SOURCE.txt):

- ``medseg``: exactly what ``medseg train --manifest M --data-root D --out RUN --fold 0
  --folds 5 --time-limit MINUTES`` does (``medseg.workflows.train.train_and_decide``), then
  the fold-0 validation cases of ``RUN/splits.json`` predicted with
  ``Predictor.from_path(RUN)`` (the decided post-processing applies, as ``medseg predict``).
- ``baseline``: MONAI's spleen-tutorial recipe on the same split for the same minutes
  (``benchmarks/sts_baseline.py`` states every choice: CT window -200..300 HU, PET a fixed
  SUV window 0..10, patch 96 x 96 x 32, ...), its predictions resampled onto each case's
  original CT grid.

Both are scored with the same medseg code against the same ``CT_mask.nii.gz``
(``medseg.metrics.case.compute_case_metrics``: Dice, HD95 in mm, lesion-wise TP/FP/FN and F1
from connected components, 26-neighbourhood, any-overlap matching). A table is printed per
manifest; everything goes to ``benchmarks/results/train_sts.json``.

    .venv/bin/python benchmarks/train_sts.py --minutes 30 --threads 2

Time accounting, the same for both: ``--minutes`` bounds each method's training call from its
start, data loading/caching/preprocessing and validation during training included (medseg
also fits its post-processing decision inside); the final prediction of the validation cases
is outside the budget and reported as ``predict s``. ``train min`` (and the curves) count
training steps plus validation, without the caching.

Targets (issue 18): CT only mean Dice >= 0.65 and HD95 median <= 20 mm; CT + PET mean Dice
>= 0.78 and HD95 median <= 10 mm; medseg's mean Dice at least 0.05 above the baseline's in
the same run. HD95 medians count a case with an empty prediction as infinite.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sts_baseline import BaselineConfig, predict_case, train_baseline

from medseg.config import load_config, to_dict
from medseg.data.loading import load_case_image
from medseg.data.manifest import Case, Manifest, load_manifest
from medseg.data.splits import kfold_splits, read_splits
from medseg.errors import MedsegError
from medseg.inference.predictor import Predictor
from medseg.io.atomic import atomic_write_text
from medseg.io.jsonfile import read_json
from medseg.io.reader import load_volume
from medseg.io.volume import Volume
from medseg.metrics.case import compute_case_metrics
from medseg.training.config import RunConfig, load_run_config
from medseg.workflows.train import train_and_decide

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sts_ct_pet"
MANIFESTS = {"ct": "sts_ct.json", "ctpet": "sts_ct_pet.json"}
TARGETS = {
    "ct": {"mean_dice": 0.65, "hd95_median_mm": 20.0},
    "ctpet": {"mean_dice": 0.78, "hd95_median_mm": 10.0},
}
MARGIN = 0.05  # medseg's mean Dice over the baseline's, same run
METHODS = ("medseg", "baseline")
CASE_KEYS = (
    *("dice", "hd95", "assd", "vol_ref_ml", "vol_pred_ml"),
    *("lesion_n_ref", "lesion_n_pred", "lesion_tp", "lesion_fp", "lesion_fn", "lesion_f1"),
)
Predict = Callable[[Case, Volume], np.ndarray]
logger = logging.getLogger("train_sts")


def _settings(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    """``["a.b=1", "c=[2, 3]"]`` -> ``{"a.b": 1, "c": [2, 3]}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MedsegError(f"{flag}: expected KEY=VALUE, found {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="budget of each method")
    ap.add_argument("--manifests", default="ct,ctpet", help="comma list of: ct, ctpet")
    ap.add_argument("--methods", default="medseg,baseline", help="comma list of: medseg, baseline")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--data-root", type=Path, default=DATA)
    ap.add_argument("--ct-manifest", type=Path, default=ROOT / "data_manifests" / MANIFESTS["ct"])
    ap.add_argument(
        "--ctpet-manifest", type=Path, default=ROOT / "data_manifests" / MANIFESTS["ctpet"]
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/medseg_bench_sts"), help="work folder")
    ap.add_argument("--result", type=Path, default=ROOT / "benchmarks/results/train_sts.json")
    ap.add_argument("--config", type=Path, default=None, help="optional medseg YAML run config")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="medseg run-config override, e.g. train.device=cpu (repeatable)",
    )
    ap.add_argument(
        "--baseline-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="baseline setting, e.g. patch=[64,64,32] (repeatable)",
    )
    args = ap.parse_args(argv)
    args.manifests = [m.strip() for m in args.manifests.split(",") if m.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.manifests if m not in MANIFESTS] + [
        m for m in args.methods if m not in METHODS
    ]
    if bad or not args.manifests or not args.methods:
        ap.error(
            f"expected manifests from {list(MANIFESTS)} and methods from {list(METHODS)}, "
            f"found {bad or 'none'}"
        )
    return args


def medseg_config(manifest: Path, args: argparse.Namespace) -> RunConfig:
    """The run config of ``medseg train --fold 0 --folds 5 --time-limit MINUTES`` (+ --set)."""
    overrides: dict[str, Any] = {
        "data.manifest": str(manifest),
        "data.data_root": str(args.data_root),
        "data.fold": 0,
        "data.folds": 5,
        "train.time_limit_minutes": args.minutes,
        "train.threads": args.threads or None,
    }
    overrides.update(_settings(args.set, "--set"))
    return load_run_config(args.config, overrides)


def fold0_split(run_dir: Path, manifest: Manifest, cfg: RunConfig) -> dict[str, list[str]]:
    """Fold 0 of the medseg run's ``splits.json``; without a run, the split it would write."""
    if (run_dir / "splits.json").is_file():
        return read_splits(run_dir / "splits.json")[0]
    ids = [c.case_id for c in manifest.training]
    return kfold_splits(ids, cfg.data.folds, cfg.data.split_seed)[0]


def foreground_label(manifest: Manifest) -> int:
    """The one foreground label value (the sarcoma manifests have ``1: tumour``)."""
    labels = sorted(k for k in manifest.labels if k > 0)
    if len(labels) != 1:
        raise MedsegError(f"expected one foreground label, found {manifest.labels}", manifest.path)
    return labels[0]


def score_cases(manifest: Manifest, val_ids: Sequence[str], predict: Predict) -> list[dict]:
    """Predict and score each validation case against its label on the label's own grid.

    ``predict(case, reference)`` returns a label map ``(I, J, K)`` on ``reference``'s grid
    (the case's ``CT_mask.nii.gz``: the CT grid, RAS affine in mm); its time is
    ``predict_s`` (image reading included).
    """
    by_id = {c.case_id: c for c in manifest.training}
    label = foreground_label(manifest)
    rows = []
    for cid in val_ids:
        case = by_id[cid]
        if case.label is None:
            raise MedsegError(
                f"[{cid}] expected a label to score against, found none", manifest.path
            )
        ref = load_volume(case.label, allow_empty=True)
        t = time.perf_counter()
        pred = np.asarray(predict(case, ref))
        seconds = time.perf_counter() - t
        if pred.shape != ref.spatial_shape:
            raise MedsegError(
                f"[{cid}] expected a prediction of the label's shape {ref.spatial_shape}, "
                f"found {pred.shape}",
                case.label,
            )
        row = compute_case_metrics(
            pred, np.asarray(ref.array), ref.spacing, [label], lesion_labels=[label]
        )[0]
        rows.append({"case": cid, **{k: row[k] for k in CASE_KEYS}, "predict_s": round(seconds, 2)})
        logger.info("%s: Dice %.3f, HD95 %.1f mm", cid, row["dice"], row["hd95"])
    return rows


def summarise(rows: Sequence[dict]) -> dict[str, Any]:
    """Mean/median Dice, HD95 median (mm; an empty prediction counts as inf), pooled lesion
    detection (TP/FP/FN summed over cases, F1 = 2TP / (2TP + FP + FN)), predict seconds."""
    dice = np.array([r["dice"] for r in rows], float)
    hd95 = np.array([r["hd95"] for r in rows], float)
    tp, fp, fn = (int(sum(r[f"lesion_{k}"] for r in rows)) for k in ("tp", "fp", "fn"))
    return {
        "n_cases": len(rows),
        "mean_dice": float(dice.mean()),
        "median_dice": float(np.median(dice)),
        "hd95_median_mm": float(np.median(hd95)),
        "hd95_n_inf": int(np.isinf(hd95).sum()),
        "lesion_tp": tp,
        "lesion_fp": fp,
        "lesion_fn": fn,
        "lesion_f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "mean_case_lesion_f1": float(np.mean([r["lesion_f1"] for r in rows])),
        "predict_seconds": round(float(sum(r["predict_s"] for r in rows)), 2),
    }


def run_medseg(cfg: RunConfig, run_dir: Path, manifest: Manifest) -> dict[str, Any]:
    """``medseg train`` of fold 0 into ``run_dir``; its validation cases predicted and scored."""
    t0 = time.perf_counter()
    summary = train_and_decide(cfg, run_dir, force=True)["fold_0"]
    wall = time.perf_counter() - t0
    split = read_splits(run_dir / "splits.json")[0]
    predictor = Predictor.from_path(run_dir)

    def predict(case: Case, ref: Volume) -> np.ndarray:
        image = load_case_image(case, manifest.n_channels, min_overlap=cfg.data.min_channel_overlap)
        if not np.allclose(image.affine, ref.affine, atol=1e-3):
            raise MedsegError(f"[{case.case_id}] the label's grid is not the CT's", case.label)
        return predictor.predict(image).mask.array

    rows = score_cases(manifest, split["val"], predict)
    post = run_dir / "postprocessing.json"
    return {
        "command": f"medseg train --manifest {cfg.data.manifest} --data-root {cfg.data.data_root} "
        f"--out {run_dir} --fold 0 --folds 5 --time-limit {cfg.train.time_limit_minutes}",
        "config": (run_dir / "config.yaml").read_text(),
        "budget_minutes": round(wall / 60, 2),
        "training_minutes": round(summary["elapsed_s"] / 60, 2),
        "epochs": summary["epochs"],
        "steps": summary["steps"],
        "data_wait_share": round(summary["data_wait_share"], 4),
        "best_val_dice": summary["best_dice"],
        "curve": summary["curve"],
        "plans": read_json(run_dir / "plans.json", what="a medseg plans.json"),
        "postprocessing": read_json(post)["config"] if post.is_file() else None,
        "summary": summarise(rows),
        "cases": rows,
    }


def run_baseline(
    manifest: Manifest, split: dict[str, list[str]], minutes: float, cfg: BaselineConfig
) -> dict[str, Any]:
    """The MONAI baseline trained on ``split["train"]``, scored on ``split["val"]``."""
    trained = train_baseline(manifest, split["train"], split["val"], minutes, cfg)

    def predict(case: Case, ref: Volume) -> np.ndarray:
        return predict_case(trained, case, ref.affine, ref.spatial_shape, cfg)

    rows = score_cases(manifest, split["val"], predict)
    result = {k: v for k, v in trained.items() if k != "model"}
    result["budget_minutes"] = round(result.pop("budget_s") / 60, 2)
    result["training_minutes"] = round(result.pop("training_s") / 60, 2)
    return {**result, "config": to_dict(cfg), "summary": summarise(rows), "cases": rows}


def verdict(name: str, out: dict[str, Any]) -> dict[str, Any]:
    """Which of the issue's targets each method meets, and medseg's margin over the baseline."""
    target = TARGETS[name]
    found: dict[str, Any] = {}
    for method in METHODS:
        if method in out:
            s = out[method]["summary"]
            found[method] = {
                "mean_dice": s["mean_dice"] >= target["mean_dice"],
                "hd95_median_mm": s["hd95_median_mm"] <= target["hd95_median_mm"],
            }
    if all(m in out for m in METHODS):
        margin = out["medseg"]["summary"]["mean_dice"] - out["baseline"]["summary"]["mean_dice"]
        found["margin"] = {"value": margin, "met": margin >= MARGIN}
    return found


def _fmt(value: float, spec: str = ".3f") -> str:
    return format(value, spec) if math.isfinite(value) else str(value)


def print_tables(name: str, out: dict[str, Any]) -> None:
    """The summary table, the per-case rows and the validation curves of one manifest."""
    t = TARGETS[name]
    print(
        f"\n== {name}: {out['manifest']}  (targets: mean Dice >= {t['mean_dice']}, HD95 median "
        f"<= {t['hd95_median_mm']} mm; medseg >= baseline + {MARGIN})"
    )
    head = "method meanDice medDice HD95med TP FP FN lesF1 trainMin budgetMin steps predictS"
    print("{:<9}{:>9}{:>9}{:>9}{:>5}{:>5}{:>5}{:>7}{:>9}{:>10}{:>7}{:>9}".format(*head.split()))
    methods = [m for m in METHODS if m in out]
    for m in methods:
        s, ok = out[m]["summary"], out["verdict"][m]
        met = (
            "met"
            if all(ok.values())
            else "not met (" + ", ".join(k for k, v in ok.items() if not v) + ")"
        )
        print(
            f"{m:<9}{s['mean_dice']:>9.3f}{s['median_dice']:>9.3f}"
            f"{_fmt(s['hd95_median_mm'], '.1f'):>9}"
            f"{s['lesion_tp']:>5}{s['lesion_fp']:>5}{s['lesion_fn']:>5}{s['lesion_f1']:>7.2f}"
            f"{out[m]['training_minutes']:>9.1f}{out[m]['budget_minutes']:>10.1f}"
            f"{out[m]['steps']:>7}{s['predict_seconds']:>9.1f}  targets {met}"
        )
    if "margin" in out["verdict"]:
        mg = out["verdict"]["margin"]
        print(
            f"medseg - baseline mean Dice: {mg['value']:+.3f} ({'met' if mg['met'] else 'not met'})"
        )
    print("case      " + "".join(f"{m + ' Dice':>16}{m + ' HD95':>16}" for m in methods))
    for i, cid in enumerate(out["split"]["val"]):
        cells = "".join(
            f"{out[m]['cases'][i]['dice']:>16.3f}{_fmt(out[m]['cases'][i]['hd95'], '.1f'):>16}"
            for m in methods
        )
        print(f"{cid:<10}{cells}")
    if "medseg" in out:
        print(
            "medseg curve (minutes: val mean Dice): "
            + ", ".join(f"{p['minutes']:.1f}: {p['mean_dice']:.3f}" for p in out["medseg"]["curve"])
        )
    if "baseline" in out:
        print(
            "baseline curve (minutes: val Dice, loss): "
            + ", ".join(
                f"{p['minutes']:.1f}: {p['val_dice']:.3f}, {_fmt(p['train_loss'] or math.nan)}"
                for p in out["baseline"]["curve"]
            )
        )


def _json_safe(obj: Any) -> Any:
    # Standard JSON has no Infinity/NaN: write them as strings, as medseg summaries do.
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code (0: every run completed, 1: bad input)."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        _run(args)
    except MedsegError as exc:
        logger.error("train_sts: %s", exc)
        return 1
    return 0


def _run(args: argparse.Namespace) -> None:
    bcfg = load_config(
        BaselineConfig, None, _settings(args.baseline_set, "--baseline-set"), "baseline"
    )
    result: dict[str, Any] = {
        "benchmark": "train_sts",
        "minutes": args.minutes,
        "methods": args.methods,
        "time_accounting": "each method's --minutes budget runs from the start of its training "
        "call (data loading and caching, training, validation; medseg's post-processing "
        "decision too) to its last validation; final prediction is outside it (predict_seconds)",
        "machine": platform.processor() or platform.machine(),
        "targets": TARGETS,
        "margin_target": MARGIN,
        "manifests": {},
    }
    paths = {"ct": args.ct_manifest, "ctpet": args.ctpet_manifest}
    for name in args.manifests:
        cfg = medseg_config(paths[name], args)
        manifest = load_manifest(paths[name], args.data_root)
        run_dir = args.out / name / "medseg"
        out: dict[str, Any] = {"manifest": str(paths[name])}
        if "medseg" in args.methods:
            out["medseg"] = run_medseg(cfg, run_dir, manifest)
        out["split"] = fold0_split(run_dir, manifest, cfg)
        if "baseline" in args.methods:
            if args.threads:
                torch.set_num_threads(args.threads)
            out["baseline"] = run_baseline(manifest, out["split"], args.minutes, bcfg)
        out["verdict"] = verdict(name, out)
        result["manifests"][name] = out
        result["torch_threads"] = torch.get_num_threads()
        result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
        args.result.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.result, json.dumps(_json_safe(result), indent=1))
        print_tables(name, out)
    print(f"\nwrote {args.result}")


if __name__ == "__main__":
    raise SystemExit(main())

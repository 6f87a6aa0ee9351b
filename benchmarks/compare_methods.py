"""Issue 22's comparison table: configurations, networks and classic methods on fold 0.

Every row is a chain of ``medseg`` commands run as subprocesses with the same thread
settings (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = ``--threads`` and ``train.threads`` in
the run config):

- ``configuration`` rows (``3d``, ``2d``, ``auto``; default network) and ``network`` rows
  (every registered network, ``--configuration 3d``): ``medseg train --fold 0 --folds 5
  --seed 0 --time-limit MINUTES`` (the limit covers the whole command, preprocessing and the
  post-processing decision included), then ``medseg predict --model RUN`` on fold 0's
  validation images; the network row that is the 3d default (``unet`` on CPU) is the
  ``configuration/3d`` run, not trained twice;
- ``classic`` rows: ``medseg segment-classic METHOD`` on the same images with the options of
  :data:`CLASSIC`, chosen from the modality and anatomy, never from the labels (stored in the
  JSON with the reason). ``region-grow`` and ``confidence-connected`` need seeds and
  ``segment-classic`` has no automatic seeding: they are skipped with that reason (seeds
  from the reference label would be cheating);
- every row is scored by the same ``medseg evaluate --ref`` on those cases: mean Dice per
  label and over labels, median HD95 in mm over finite values (cases with an empty mask are
  counted as ``inf`` beside it), wall minutes of ``train`` and wall seconds of the whole
  ``predict`` / ``segment-classic`` command (``predict_cases_seconds``: the batch alone).

Fold 0's validation cases come from the first trained row's ``RUN/splits.json``; every other
run's split (each configuration's, for ``auto``) must agree, or the row fails. Before the
first timed row of a dataset, :func:`warm_cache` fills the preprocessing cache of each
configuration, so that no row spends its budget on it.

    .venv/bin/python benchmarks/compare_methods.py --smoke --datasets hippocampus
    nice -n 10 .venv/bin/python benchmarks/compare_methods.py --train-minutes 3
    .venv/bin/python benchmarks/compare_methods.py --resume --only classic 'sts_ct/network/*'

``benchmarks/results/compare_methods.json`` (``--smoke``: ``compare_methods_smoke.json``) is
written atomically after every row. ``--resume`` keeps its rows and reruns only the selected
rows that failed or were run with other settings; without it the JSON starts afresh.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.data.manifest import load_manifest
from medseg.data.splits import kfold_splits, read_splits
from medseg.errors import MedsegError
from medseg.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MEDSEG = str(ROOT / ".venv" / "bin" / "medseg")
RESULT = ROOT / "benchmarks" / "results" / "compare_methods.json"
CONFIGURATIONS = ("3d", "2d", "auto")
FOLDS, FOLD, SEED = 5, 0, 0
SMOKE_CASES = 10  # smoke manifests: the first 10 cases, so that fold 0 validates 2
SMOKE_NETWORKS = ("unet", "segresnet")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SEEDED_SKIP = (
    "needs seeds (--seed/--seed-voxel/--seed-mask) and segment-classic has no automatic "
    "seeding; a seed mask from the reference label would be cheating"
)
_POST = ["--smooth", "1.0", "--largest-component", "--fill-holes"]
_CT = ["--lower", "-50", "--upper", "200", *_POST]
_MR3 = (
    ["--classes", "3", "--keep", "1", *_POST],
    "T1 MRI: CSF / grey / white matter; the hippocampus is grey matter, the middle class (1)",
)
_CT3 = (_CT, "CT soft-tissue window -50..200 HU (no fat, no bone), the brightest class")
#: dataset -> classic method -> (segment-classic options, why), or None: skipped (seeds)
CLASSIC: dict[str, dict[str, tuple[list[str], str] | None]] = {
    "hippocampus": {
        "otsu": (_POST, "T1 MRI: tissue above Otsu's threshold (not CSF)"),
        "multi-otsu": _MR3,
        "kmeans": _MR3,
        "gmm": _MR3,
        "region-grow": None,
        "confidence-connected": None,
        "watershed": (
            ["--marker-mm", "2.0", "--gradient-mm", "1.0", *_POST],
            "markers 2 mm inside / outside the above-Otsu foreground (a small structure)",
        ),
    },
    "sts_ct": {
        "otsu": _CT3,
        "multi-otsu": _CT3,
        "kmeans": _CT3,
        "gmm": _CT3,
        "region-grow": None,
        "confidence-connected": None,
        "watershed": (
            [*_CT, "--marker-mm", "5.0", "--gradient-mm", "1.0"],
            "the soft-tissue window as foreground; markers 5 mm deep (3.27 mm slices)",
        ),
    },
}
DATASETS = {  # key -> (manifest, data root, scored labels)
    "hippocampus": (ROOT / "data_manifests/msd_hippocampus.json", DATA / "msd_hippocampus", (1, 2)),
    "sts_ct": (ROOT / "data_manifests/sts_ct.json", DATA / "sts_ct_pet", (1,)),
}


@dataclass
class Context:
    """One dataset: its manifest, its work folder and fold 0's validation cases."""

    key: str
    manifest: Path
    data_root: Path
    labels: tuple[int, ...]
    work: Path
    args: argparse.Namespace
    val: list[str] | None = None
    warmed: bool = False  # warm_cache ran
    info: dict[str, Any] = field(default_factory=dict)  # the JSON's "datasets" entry

    @property
    def inputs(self) -> Path:
        return self.work / "inputs"

    @property
    def refs(self) -> Path:
        return self.work / "references"


def row_id(dataset: str, kind: str, name: str) -> str:
    return f"{dataset}/{kind}/{name}"


def selected(rid: str, patterns: list[str] | None) -> bool:
    """True without patterns, or when one matches the id, its tail or one of its parts."""
    parts = rid.split("/")
    return not patterns or any(
        fnmatch.fnmatch(rid, p) or fnmatch.fnmatch(rid, f"*/{p}") or p in parts for p in patterns
    )


def row_specs(dataset: str, args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """``(kind, name, train flags)`` of every row in run order (``configuration/3d`` first)."""
    from medseg.networks.registry import NETWORKS  # what `medseg train --help` lists

    networks = args.networks or (list(SMOKE_NETWORKS) if args.smoke else list(NETWORKS))
    specs = [("configuration", c, ["--configuration", c]) for c in args.configurations]
    specs += [("network", n, ["--configuration", "3d", "--model", n]) for n in networks]
    return specs + [("classic", m, []) for m in CLASSIC[dataset]]


def split_agreement(reference: list[str], splits: list[dict[str, list[str]]]) -> str | None:
    """``None`` when fold 0's validation ids are ``reference``, else what differs."""
    if len(splits) <= FOLD:
        return f"splits.json has {len(splits)} folds, expected fold {FOLD}"
    val = set(splits[FOLD]["val"])
    if val == set(reference):
        return None
    extra, missing = sorted(val - set(reference)), sorted(set(reference) - val)
    return f"fold {FOLD} validation differs: extra {extra[:5]}, missing {missing[:5]}"


def run_command(cmd: list[str], log: Path, ctx: Context, timeout: float) -> tuple[int, float]:
    """Run ``cmd`` with its output in ``log``; (exit code, wall seconds); 124 on timeout."""
    env = {**os.environ, **{v: str(ctx.args.threads) for v in THREAD_VARIABLES}}
    env.update(COLUMNS="160", TERM="dumb", NO_COLOR="1")
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=timeout,
            check=False,
        )
        rc, output = done.returncode, done.stdout or b""
    except subprocess.TimeoutExpired as exc:
        rc, output = 124, exc.output or b""
    text = output.decode("utf-8", errors="replace")
    atomic_write_text(log, " ".join(cmd) + "\n" + text)
    return rc, time.perf_counter() - t0


def log_tail(log: Path, lines: int = 3) -> str:
    """The last non-empty lines of a log (where medseg prints its error), on one line."""
    text = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    kept = [t.strip() for t in text if t.strip() and not set(t.strip()) <= set("─━-=│┃ ")]
    return " | ".join(kept[-lines:])[-400:]


def fail(row: dict[str, Any], stage: str, rc: int, log: Path) -> dict[str, Any]:
    why = "timed out" if rc == 124 else f"exit {rc}"
    row.update(status="failed", error=f"{stage} {why}: {log_tail(log)}", log=str(log))
    return row


def set_split(ctx: Context, val: list[str], source: str) -> None:
    """Adopt fold 0's validation cases; link their images and labels for every command."""
    ctx.val = sorted(val)
    ctx.info.update(validation_cases=ctx.val, split_source=source, n_validation=len(ctx.val))
    by_id = {c.case_id: c for c in load_manifest(ctx.manifest, ctx.data_root).training}
    for folder in (ctx.inputs, ctx.refs):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for cid in ctx.val:
        label = by_id[cid].label
        if label is None:  # training cases of a valid manifest always have one
            raise MedsegError(f"case {cid}: expected a label, found none", ctx.manifest)
        for folder, src in ((ctx.inputs, by_id[cid].image), (ctx.refs, label)):
            suffix = ".nii.gz" if src.name.endswith(".nii.gz") else src.suffix
            (folder / f"{cid}{suffix}").symlink_to(src.resolve())


def ensure_split(ctx: Context) -> None:
    """Without a trained row or a resumed split: ``kfold_splits`` as ``medseg train`` calls it."""
    if ctx.val is None:
        from medseg.training.config import DataConfig

        ids = [c.case_id for c in load_manifest(ctx.manifest, ctx.data_root).training]
        split = kfold_splits(ids, FOLDS, DataConfig().split_seed)[FOLD]
        set_split(ctx, split["val"], "medseg.data.splits.kfold_splits (no trained row yet)")


def check_split(ctx: Context, run: Path) -> str | None:
    """Adopt (first run) or check the run's fold 0 split: the problem, or ``None``."""
    files = [p for p in [run / "splits.json", *sorted(run.glob("*/splits.json"))] if p.is_file()]
    if not files:
        return f"no splits.json in {run}"
    for path in files:
        splits = read_splits(path)
        if ctx.val is None:
            set_split(ctx, splits[FOLD]["val"], str(path.relative_to(ctx.work)))
        problem = split_agreement(ctx.val or [], splits)
        if problem:
            return f"{path}: {problem}"
    return None


def score(ctx: Context, row: dict[str, Any], pred: Path, name: str) -> None:
    """``medseg evaluate --ref`` on the validation cases; Dice and HD95 into ``row``."""
    out = ctx.work / "evaluate" / name
    cmd = [MEDSEG, "evaluate", "--pred", str(pred), "--ref", str(ctx.refs), "--labels"]
    cmd += [",".join(map(str, ctx.labels)), "--out", str(out), "--qc-cases", "0", "--force"]
    row["commands"]["evaluate"] = " ".join(cmd)
    log = ctx.work / "logs" / f"{name}_evaluate.log"
    rc, _ = run_command(cmd, log, ctx, 1800)
    if not (out / "summary.json").is_file():
        fail(row, "evaluate", rc, log)
        return
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    per = {str(k): summary["labels"][str(k)] for k in ctx.labels}
    row["dice"] = {k: v["dice"]["mean"] for k, v in per.items()}
    row["dice_mean"] = sum(v or 0.0 for v in row["dice"].values()) / len(per)
    row["hd95_median_mm"] = {k: v["hd95"]["median"] for k, v in per.items()}
    row["hd95_n_inf"] = {k: v["hd95"]["n_inf"] for k, v in per.items()}
    row["n_cases"] = summary["n_cases"]
    row["missing_predictions"] = summary.get("missing_predictions", [])
    if rc != 0 and row["status"] == "ok":
        row.update(status="partial", error=f"evaluate exit {rc}: {log_tail(log)}")


def segment(ctx: Context, row: dict[str, Any], cmd: list[str], out: Path, stage: str) -> bool:
    """Run ``predict`` / ``segment-classic`` into a fresh ``out``; True when masks came out."""
    shutil.rmtree(out, ignore_errors=True)
    row.setdefault("commands", {})[stage] = " ".join(cmd)
    log = ctx.work / "logs" / f"{out.name}_{stage}.log"
    rc, seconds = run_command(cmd, log, ctx, 3600)
    row["predict_seconds"] = round(seconds, 1)
    summary = out / "summary.json"  # the batch alone, without start-up and model loading
    if summary.is_file():
        row["predict_cases_seconds"] = json.loads(summary.read_text(encoding="utf-8"))["seconds"]
    if rc != 0 and not list(out.glob("*.nii.gz")):
        fail(row, stage, rc, log)
        return False
    if rc != 0:
        row.update(status="partial", error=f"{stage} exit {rc}: {log_tail(log)}")
    return True


def describe_run(run: Path) -> dict[str, Any]:
    """Network(s), fold 0's steps and training seconds, and an ``auto`` run's choice."""
    found: dict[str, Any] = {"network": [], "folds": {}}
    for plans in [run / "plans.json", *sorted(run.glob("*/plans.json"))]:
        if plans.is_file():
            found["network"].append(json.loads(plans.read_text())["network"]["name"])
            metrics = plans.parent / f"fold_{FOLD}" / "metrics.json"
            m = json.loads(metrics.read_text()) if metrics.is_file() else {}
            key = "." if plans.parent == run else plans.parent.name
            found["folds"][key] = {"steps": m.get("steps"), "elapsed_s": m.get("elapsed_s")}
    if (run / "configuration.json").is_file():
        choice = json.loads((run / "configuration.json").read_text(encoding="utf-8"))
        found["configuration_choice"] = {k: choice.get(k) for k in ("chosen", "reason", "scores")}
    return found


def train_command(ctx: Context, run: Path, minutes: float, folds: int = FOLDS) -> list[str]:
    """``medseg train`` of fold 0 into a fresh ``run`` (flags for the row still to add)."""
    shutil.rmtree(run, ignore_errors=True)
    cmd = [MEDSEG, "train", "--manifest", str(ctx.manifest), "--data-root", str(ctx.data_root)]
    cmd += ["--out", str(run), "--fold", str(FOLD), "--folds", str(folds), "--seed", str(SEED)]
    cmd += ["--time-limit", f"{minutes:g}", "--config", str(ctx.work / "train_config.yaml")]
    return [*cmd, "--no-progress"]


def warm_cache(ctx: Context) -> None:
    """Fill the preprocessing cache of each configuration before the first timed row.

    ``--time-limit`` covers preprocessing, so without this the first row of a configuration
    would spend part of its budget on it. One step and one validation (of a single case: as
    many folds as cases) per configuration, ``3d_lowres`` included (``auto`` plans it for large
    images), not scored; ``auto`` runs reuse these caches.
    """
    n_cases = len(load_manifest(ctx.manifest, ctx.data_root).training)
    confs = [c for c in ctx.args.configurations if c != "auto"]
    if "auto" in ctx.args.configurations:
        confs.append("3d_lowres")  # auto plans it for large images (same cache as 3d if not)
    for conf in confs:
        cmd = train_command(ctx, ctx.work / "warmup" / conf, 0.05, folds=n_cases)
        cmd += ["--no-postprocess-decision", "--configuration", conf]
        rc, seconds = run_command(cmd, ctx.work / "logs" / f"warmup_{conf}.log", ctx, 3600)
        ctx.info.setdefault("cache_warmup", {})[conf] = {
            "exit": rc,
            "minutes": round(seconds / 60, 2),
        }
    ctx.warmed = True


def train_row(ctx: Context, row: dict[str, Any], flags: list[str]) -> dict[str, Any]:
    """Train fold 0 within the budget, check its split, predict the validation images, score."""
    if not ctx.warmed:
        warm_cache(ctx)
    name = f"{row['kind']}_{row['name']}"
    run = ctx.work / "runs" / name
    auto = row["kind"] == "configuration" and row["name"] == "auto"
    minutes = ctx.args.auto_minutes if auto else ctx.args.train_minutes
    row["budget_minutes"] = minutes
    cmd = [*train_command(ctx, run, minutes), *flags]
    row.update(commands={"train": " ".join(cmd)}, run_dir=str(run))
    log = ctx.work / "logs" / f"{name}_train.log"
    rc, seconds = run_command(cmd, log, ctx, minutes * 90 + 600)
    row["train_minutes"] = round(seconds / 60, 2)
    if rc != 0:
        return fail(row, "train", rc, log)
    row.update(describe_run(run))
    problem = check_split(ctx, run)
    if problem:
        return {**row, "status": "failed", "error": f"split: {problem}"}
    pred = ctx.work / "predictions" / name
    cmd = [MEDSEG, "predict", "--model", str(run), "--input", str(ctx.inputs), "--output"]
    if segment(ctx, row, [*cmd, str(pred)], pred, "predict"):
        score(ctx, row, pred, name)
    return row


def classic_row(ctx: Context, row: dict[str, Any]) -> dict[str, Any]:
    """``medseg segment-classic`` on the validation images, scored like the models."""
    spec = CLASSIC[ctx.key][row["name"]]
    if spec is None:
        return {**row, "status": "skipped", "error": SEEDED_SKIP}
    row["options"], row["why"] = spec
    if len(ctx.labels) > 1:
        row["note"] = f"writes label 1 only; labels {list(ctx.labels[1:])} score as empty"
    ensure_split(ctx)
    name = f"classic_{row['name']}"
    out = ctx.work / "predictions" / name
    cmd = [MEDSEG, "segment-classic", row["name"], "--input", str(ctx.inputs), "--output"]
    if segment(ctx, row, [*cmd, str(out), *spec[0]], out, "segment-classic"):
        score(ctx, row, masks_only(out) if len(ctx.labels) > 1 else out, name)
    return row


def masks_only(folder: Path) -> Path:
    """Links to the masks of ``folder`` without their ``<case>.json`` sidecars.

    ``medseg evaluate`` refuses a case whose reference holds a label beyond the sidecar's
    ``labels`` even when ``--labels`` names it, so a one-label classic mask could not be
    scored on a two-label reference; without the sidecar the absent label scores as empty.
    """
    links = folder.with_name(folder.name + "_masks")
    shutil.rmtree(links, ignore_errors=True)
    links.mkdir(parents=True)
    for mask in sorted(folder.glob("*.nii.gz")):
        (links / mask.name).symlink_to(mask.resolve())
    return links


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What a reused (``--resume``) row must have been run with."""
    keys = ("train_minutes", "auto_minutes", "threads", "smoke")
    return {**{k: getattr(args, k) for k in keys}, "fold": FOLD, "folds": FOLDS, "seed": SEED}


def run_row(ctx: Context, kind: str, name: str, flags: list[str], done: dict[str, Any]) -> dict:
    """One row; the network row of the 3d default network is the ``configuration/3d`` run."""
    rid = row_id(ctx.key, kind, name)
    row: dict[str, Any] = {"id": rid, "dataset": ctx.key, "kind": kind, "name": name}
    row.update(status="ok", error="", settings=settings(ctx.args))
    if kind == "classic":
        return classic_row(ctx, row)
    same = done.get(row_id(ctx.key, "configuration", "3d"))
    if kind == "network" and same and same["status"] != "failed" and same.get("network") == [name]:
        keep = {k: v for k, v in same.items() if k not in ("id", "kind", "name")}
        return {**row, **keep, "same_run_as": same["id"]}
    return train_row(ctx, row, flags)


def cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def hd95_cell(row: dict[str, Any]) -> str:
    """``1.6 / 1.7`` (median mm per label; ``inf``: no finite value) and ``(k inf)``."""
    med, n_inf = row.get("hd95_median_mm") or {}, row.get("hd95_n_inf") or {}
    text = " / ".join("inf" if v is None else f"{v:.1f}" for v in med.values())
    infs = sum(n_inf.values())
    return (text + (f" ({infs} inf)" if infs else "")) if med else "-"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison table, one line per row (the JSON holds every detail)."""
    head = "| dataset | kind | name | Dice per label | mean Dice | HD95 median mm | train min |"
    lines = [head + " predict s | status |", "|---" * 9 + "|"]
    for r in rows:
        dice = " / ".join(cell(v, 3) for v in (r.get("dice") or {}).values()) or "-"
        status = r["status"] + (f": {r['error'][:90]}" if r.get("error") else "")
        status += f" (= {r['same_run_as']})" if r.get("same_run_as") else ""
        lines.append(
            f"| {r['dataset']} | {r['kind']} | {r['name']} | {dice} | "
            f"{cell(r.get('dice_mean'), 3)} | {hd95_cell(r)} | "
            f"{cell(r.get('train_minutes'), 1)} | {cell(r.get('predict_seconds'), 1)} | "
            f"{status.replace('|', '/')} |"
        )
    return "\n".join(lines)


def make_context(key: str, args: argparse.Namespace, info: dict[str, Any]) -> Context:
    """The dataset's work folder, its (smoke) manifest and the run config of every row."""
    manifest, root, labels = DATASETS[key]
    work = args.work / key
    work.mkdir(parents=True, exist_ok=True)
    if args.smoke:  # the first SMOKE_CASES cases, same paths relative to the data root
        data = json.loads(manifest.read_text(encoding="utf-8"))
        data["training"] = data["training"][:SMOKE_CASES]
        data["numTraining"] = len(data["training"])
        manifest = atomic_write_text(work / "smoke_manifest.json", json.dumps(data, indent=1))
    train_cfg = f"train:\n  threads: {args.threads}\n"
    atomic_write_text(work / "train_config.yaml", train_cfg)
    info.update(manifest=str(manifest), data_root=str(root), labels=list(labels))
    info.update(train_config=train_cfg, thread_variables=list(THREAD_VARIABLES))
    ctx = Context(key, manifest, root, labels, work, args, info=info)
    if info.get("validation_cases"):  # --resume: later runs are checked against this split
        set_split(ctx, info["validation_cases"], info.get("split_source", "json"))
    return ctx


def ordered(rows: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    """Rows in the order of ``order`` (dataset, then spec order), others after them."""
    rank = {rid: i for i, rid in enumerate(order)}
    return sorted(rows.values(), key=lambda r: rank.get(r["id"], len(rank)))


def main(argv: list[str] | None = None) -> int:
    """Run the selected rows, print the table; 0 (failed rows are recorded, not fatal)."""
    args = parse_args(argv)
    old = json.loads(args.result.read_text()) if args.resume and args.result.is_file() else {}
    rows: dict[str, Any] = {r["id"]: r for r in old.get("rows", [])}
    result: dict[str, Any] = {"benchmark": "compare_methods", "settings": settings(args)}
    result["cpus"] = os.cpu_count()
    result.update(machine=platform.processor() or platform.machine())
    result.update(datasets=old.get("datasets", {}), rows=[])
    order = [row_id(k, *s[:2]) for k in DATASETS for s in row_specs(k, args)]
    args.result.parent.mkdir(parents=True, exist_ok=True)
    for key in args.datasets:
        ctx = make_context(key, args, result["datasets"].setdefault(key, {}))
        for kind, name, flags in row_specs(key, args):
            rid, prev = row_id(key, kind, name), rows.get(row_id(key, kind, name))
            if not selected(rid, args.only) or (
                prev
                and prev["status"] in ("ok", "skipped")
                and prev.get("settings") == settings(args)
            ):
                continue
            print(f"== {rid}", flush=True)
            rows[rid] = run_row(ctx, kind, name, flags, rows)
            print(f"   {rows[rid]['status']} {rows[rid]['error'][:200]}", flush=True)
            result["rows"] = ordered(rows, order)
            atomic_write_text(args.result, json.dumps(result, indent=1))
    result["rows"] = ordered(rows, order)
    atomic_write_text(args.result, json.dumps(result, indent=1))
    print(markdown_table(result["rows"]))
    print(f"\nwrote {args.result}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    only = "rows: DATASET/KIND/NAME globs or one part, e.g. classic 2d 'sts_ct/network/*'"
    ap.add_argument("--only", nargs="+", metavar="PATTERN", help=only)
    ap.add_argument("--train-minutes", type=float, help="training budget (default 3; smoke 0.3)")
    ap.add_argument(
        "--auto-minutes",
        type=float,
        help="budget of the auto row (default 3x --train-minutes: auto trains 2-3 configurations "
        "and compares them within it)",
    )
    ap.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS))
    ap.add_argument("--networks", nargs="+", help="default: all registered (smoke: unet segresnet)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="default: all CPUs")
    ap.add_argument("--smoke", action="store_true", help="10-case manifests, tiny budgets")
    ap.add_argument("--resume", action="store_true", help="keep the JSON's rows, reuse done ones")
    ap.add_argument("--work", type=Path, help="runs/predictions/logs (benchmarks/results/...)")
    ap.add_argument("--result", type=Path, help=f"the JSON (default {RESULT.name})")
    args = ap.parse_args(argv)
    if args.train_minutes is None:
        args.train_minutes = 0.3 if args.smoke else 3.0
    if args.auto_minutes is None:
        args.auto_minutes = 3.0 * args.train_minutes
    suffix = "_smoke" if args.smoke else ""
    args.work = (args.work or ROOT / f"benchmarks/results/compare_work{suffix}").resolve()
    args.result = args.result or RESULT.with_name(f"compare_methods{suffix}.json")
    return args


if __name__ == "__main__":
    raise SystemExit(main())

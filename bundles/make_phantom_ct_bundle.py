"""Reproduce the shipped example bundle ``bundles/phantom_ct``.

How it is made (all with the ``medseg`` commands a user would run, seeds fixed):

1. ``medseg synth-ct``: 24 training phantoms (seed 0) and 6 held-out test phantoms (seed 1),
   64x64x48 voxels at 1.5x1.5x3 mm, labels liver, kidney, spleen, bone, lesion.
2. ``medseg train``: fold 0 of 5 with ``bundles/phantom_ct_train.yaml`` (a light UNet
   16..128, patch 48x48x32) for ``--minutes`` (default 12) on the CPU.
3. ``medseg predict`` + ``medseg evaluate`` on the 6 held-out phantoms.
4. ``medseg export-bundle`` into ``bundles/phantom_ct``; the held-out scores are added to
   its ``docs/README.md`` and ``docs/heldout_metrics.json``.

Usage::

    .venv/bin/python bundles/make_phantom_ct_bundle.py --minutes 12 --work /tmp/phantom_ct_bundle
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from medseg.demo import run

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "phantom_ct_train.yaml"


def heldout_table(summary: dict) -> str:
    """Markdown table of mean Dice / HD95 per label from an evaluate ``summary.json``."""
    names = summary.get("label_names", {})
    rows = ["| label | Dice (mean) | HD95 mm (median) | cases |", "|---|---|---|---|"]
    for label, stats in summary.get("labels", {}).items():
        dice, hd95 = stats.get("dice", {}), stats.get("hd95", {})
        rows.append(
            f"| {label} {names.get(label, '')} | {dice.get('mean', float('nan')):.3f} | "
            f"{hd95.get('median', float('nan')):.2f} | {dice.get('n', '')} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Build the bundle; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/phantom_ct_bundle"))
    ap.add_argument("--out", type=Path, default=HERE / "phantom_ct")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    work = args.work
    if work.exists():
        shutil.rmtree(work)
    train, test = work / "train", work / "test"
    run(["synth-ct", str(train), "--cases", "24", "--seed", "0"])
    run(["synth-ct", str(test), "--cases", "6", "--seed", "1"])
    run([
        "train", "--manifest", str(train / "dataset.json"), "--data-root", str(train),
        "--out", str(work / "run"), "--config", str(CONFIG), "--fold", "0", "--folds", "5",
        "--time-limit", str(args.minutes), "--seed", "0", "--no-progress",
    ])  # fmt: skip
    run(["predict", "--model", str(work / "run"), "--input", str(test / "imagesTr"),
         "--output", str(work / "masks")])  # fmt: skip
    run([
        "evaluate", "--pred", str(work / "masks"), "--manifest", str(test / "dataset.json"),
        "--data-root", str(test), "--lesion-labels", "5", "--out", str(work / "report"),
        "--qc-cases", "0",
    ])  # fmt: skip
    run([
        "export-bundle", str(work / "run"), str(args.out), "--name", "phantom_ct",
        "--version", "0.1.0", "--force",
    ])  # fmt: skip
    summary = json.loads((work / "report" / "summary.json").read_text())
    docs = args.out / "docs"
    (docs / "heldout_metrics.json").write_text(json.dumps(summary, indent=2))
    with (docs / "README.md").open("a", encoding="utf-8") as fh:
        fh.write(
            "\n## Held-out test scores (6 synthetic phantoms, seed 1)\n\n"
            f"Trained for {args.minutes:g} minutes on 2 CPU cores by "
            "`bundles/make_phantom_ct_bundle.py`.\n\n" + heldout_table(summary) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

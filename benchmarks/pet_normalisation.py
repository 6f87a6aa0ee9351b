"""Which PET normalisation keeps the tumour signal comparable across cases?

For each of the 36 sarcoma cases (``../shared/data/sts_ct_pet``) the PET is resampled onto
the CT grid (:func:`medseg.io.channels.load_channels`) and normalised by each candidate
scheme; then ONE threshold, shared by all cases, is chosen to maximise the mean Dice of
``pet > threshold`` against the expert tumour mask. A scheme under which one threshold works
for every case keeps "how avid" comparable between patients, which is what a network trained
on a cohort can learn; per-case thresholds would hide that.

Schemes: ``dataset`` (clip to the dataset's foreground 0.5-99.5 percentiles, then z-score
with the dataset foreground mean/std: medseg's ``ct`` scheme, i.e. SUV kept up to one linear
map), ``zscore`` (per-image z-score over all voxels: nnU-Net's default for non-CT),
``zscore_nonzero`` (per-image over non-zero voxels).

Run: ``.venv/bin/python benchmarks/pet_normalisation.py [--out FILE.json]``
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from medseg.io import load_volume
from medseg.io.atomic import atomic_write_text
from medseg.io.channels import load_channels

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sts_ct_pet"


def _cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for d in sorted(DATA.glob("STS_*")):
        vol = load_channels([d / "CT_image.nii.gz", d / "PET_image.nii.gz"])
        mask = np.asarray(load_volume(d / "CT_mask.nii.gz", allow_empty=True).array) > 0
        out.append((d.name, vol.array[1].astype(np.float32), mask))
    return out


def _normalise(cases: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    fg = np.concatenate([p[m][:: max(1, int(m.sum()) // 10000)] for _, p, m in cases])
    lo, hi = np.percentile(fg, [0.5, 99.5])
    mean, std = float(fg.mean()), float(fg.std())
    schemes: dict[str, list[np.ndarray]] = {"dataset": [], "zscore": [], "zscore_nonzero": []}
    for _, p, _ in cases:
        schemes["dataset"].append((np.clip(p, lo, hi) - mean) / std)
        schemes["zscore"].append((p - p.mean()) / (p.std() + 1e-8))
        nz = p[p != 0]
        schemes["zscore_nonzero"].append((p - nz.mean()) / (nz.std() + 1e-8))
    return schemes


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    inter = np.count_nonzero(pred & ref)
    return 2.0 * inter / max(np.count_nonzero(pred) + np.count_nonzero(ref), 1)


def _best_shared_threshold(images: list[np.ndarray], masks: list[np.ndarray]) -> dict:
    allv = np.concatenate([im.ravel()[::97] for im in images])
    candidates = np.unique(np.percentile(allv, np.linspace(50, 99.9, 120)))
    best = {"mean_dice": -1.0}
    for t in candidates:
        dice = [_dice(im > t, m) for im, m in zip(images, masks, strict=True)]
        if np.mean(dice) > best["mean_dice"]:
            best = {
                "threshold": float(t),
                "mean_dice": float(np.mean(dice)),
                "median_dice": float(np.median(dice)),
                "min_dice": float(np.min(dice)),
            }
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "pet_normalisation.json"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found")
    cases = _cases()
    masks = [m for _, _, m in cases]
    results = {
        name: _best_shared_threshold(imgs, masks) for name, imgs in _normalise(cases).items()
    }
    print(f"{'scheme':16s} {'threshold':>10s} {'mean Dice':>10s} {'median':>8s} {'min':>6s}")
    for name, r in results.items():
        print(
            f"{name:16s} {r['threshold']:10.3f} {r['mean_dice']:10.3f} "
            f"{r['median_dice']:8.3f} {r['min_dice']:6.3f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"n_cases": len(cases), "schemes": results}, indent=1))


if __name__ == "__main__":
    main()

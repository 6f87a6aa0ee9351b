"""``benchmarks/train_sts.py`` end to end on a synthetic CT + PET cohort (tiny budget and
networks), and the baseline's way back onto the original CT grid."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from medseg.data.ct_pet import write_ct_pet_cohort
from medseg.data.manifest import load_manifest
from medseg.data.splits import read_splits
from medseg.io.reader import load_volume
from medseg.metrics.case import compute_case_metrics

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

MEDSEG_TINY = [
    "data.folds=2",
    "plans.channels=[4, 8, 16]",
    "plans.patch_size=[32, 32, 16]",
    "plans.batch_size=2",
    "train.iterations_per_epoch=2",
    "train.num_workers=0",
    "train.device=cpu",
]
BASELINE_TINY = [
    "patch=[32, 32, 16]",
    "channels=[4, 8, 16]",
    "strides=[2, 2]",
    "num_res_units=1",
    "num_samples=2",
    "cache_workers=0",
    "device=cpu",
]


@pytest.fixture
def benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``train_sts`` and ``sts_baseline`` importable (scripts, not a package)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def _cohort(root: Path) -> tuple[Path, Path]:
    """Four LPS-oriented CT + PET cases (the real data's orientation) and a CT-only manifest."""
    ctpet = write_ct_pet_cohort(root, 4, seed=7, axcodes="LPS")
    doc = json.loads(ctpet.read_text())
    doc["modality"] = {"0": "CT"}
    for case in doc["training"]:
        case["image"] = case["image"][0]
    ct = root / "ct.json"
    ct.write_text(json.dumps(doc))
    return ct, ctpet


def test_benchmark_scores_both_methods_on_the_same_split(tmp_path: Path, benchmarks: None) -> None:
    import train_sts

    ct, ctpet = _cohort(tmp_path / "data")
    result = tmp_path / "train_sts.json"
    argv = ["--minutes", "0.05", "--threads", "1", "--data-root", str(tmp_path / "data")]
    argv += ["--ct-manifest", str(ct), "--ctpet-manifest", str(ctpet)]
    argv += ["--out", str(tmp_path / "out"), "--result", str(result)]
    argv += ["--set", f"data.cache_dir={tmp_path / 'cache'}"]
    for pair in MEDSEG_TINY:
        argv += ["--set", pair]
    for pair in BASELINE_TINY:
        argv += ["--baseline-set", pair]
    assert train_sts.main(argv) == 0
    doc = json.loads(result.read_text())
    assert set(doc["manifests"]) == {"ct", "ctpet"}
    for name, out in doc["manifests"].items():
        # the baseline trained and was scored on the medseg run's own fold-0 split
        split = read_splits(tmp_path / "out" / name / "medseg" / "splits.json")[0]
        assert out["split"] == split and len(split["val"]) == 2
        for method in ("medseg", "baseline"):
            summary = out[method]["summary"]
            assert math.isfinite(summary["mean_dice"]) and 0.0 <= summary["mean_dice"] <= 1.0
            assert [r["case"] for r in out[method]["cases"]] == split["val"]
            assert summary["lesion_tp"] + summary["lesion_fn"] == 2  # one tumour per case
            assert out[method]["steps"] >= 1 and out[method]["curve"]
        assert out["baseline"]["curve"][-1]["val_dice"] >= 0.0
        assert set(out["verdict"]) == {"medseg", "baseline", "margin"}
    assert doc["manifests"]["ctpet"]["medseg"]["plans"]["input_channels"][1]["modality"] == "PET"


def test_baseline_predictions_land_on_the_original_ct_grid(
    tmp_path: Path, benchmarks: None
) -> None:
    import sts_baseline as sb

    _, ctpet = _cohort(tmp_path / "data")
    manifest = load_manifest(ctpet, tmp_path / "data")
    case = manifest.training[0]
    cfg = sb.BaselineConfig(patch=(32, 32, 16))
    keys = sb.channel_keys(manifest)
    assert keys == ["ct", "pet"]
    spacing = sb.median_spacing(manifest.training)
    assert spacing == pytest.approx((1.0, 1.0, 3.0))
    ref = load_volume(case.label, allow_empty=True)
    # the preprocessed label (RAS, cropped) mapped back through the affines is the label
    d = Compose(sb.preprocessing(keys, spacing, cfg, label=True))(sb.case_dict(case, keys))
    one_hot = torch.nn.functional.one_hot(d["label"].as_tensor()[0].long(), 2)
    back = sb.to_reference_grid(
        one_hot.permute(3, 0, 1, 2).float(),
        np.asarray(d["image"].affine),
        ref.affine,
        ref.spatial_shape,
    )
    assert np.array_equal(back, np.asarray(ref.array))
    # a "network" that thresholds the PET channel (SUV 2, 0.2 after the 0..10 window) finds
    # the tumour on the original grid: the PET was resampled onto the CT by world position

    class PetThreshold(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pet = x[:, 1:2]
            return torch.cat([0.2 - pet, pet - 0.2], dim=1) * 50.0

    trained = {"keys": keys, "model": PetThreshold(), "spacing": spacing}
    pred = sb.predict_case(trained, case, ref.affine, ref.spatial_shape, cfg)
    row = compute_case_metrics(pred, np.asarray(ref.array), ref.spacing, [1])[0]
    assert row["dice"] > 0.8  # 0.885 with medseg's own PET resampling (load_channels)

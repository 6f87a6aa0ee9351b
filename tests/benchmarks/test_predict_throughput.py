"""Helpers of ``benchmarks/predict_throughput.py``: pass order, the crop's share of the gain,
the table, the air-padded phantoms' geometry, per-label Dice of two mask folders, and that the
plain MONAI script and ``medseg predict`` without the body crop write the same masks."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest

from medseg.data.synthetic import make_ct_phantom
from medseg.io import load_volume, write_nifti

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pt() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "predict_throughput", ROOT / "benchmarks" / "predict_throughput.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_pass_order_reverses_odd_rounds(pt: ModuleType) -> None:
    assert pt.pass_order(["a", "b", "c"], 1) == ["a", "b", "c"]
    assert pt.pass_order(["a", "b", "c"], 3) == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]


@pytest.mark.parametrize(
    ("plain", "nocrop", "crop", "share"),
    [(8.0, 4.0, 2.0, 0.5), (4.0, 4.0, 2.0, 1.0), (8.0, 2.0, 2.0, 0.0)],
)
def test_crop_share_splits_the_gain_on_a_log_scale(
    pt: ModuleType, plain: float, nocrop: float, crop: float, share: float
) -> None:
    out = pt.crop_share(plain, nocrop, crop)
    assert out["speedup_total"] == pytest.approx(plain / crop)
    assert out["speedup_without_crop"] * out["speedup_of_crop"] == pytest.approx(plain / crop)
    assert out["crop_share_of_gain_log"] == pytest.approx(share)


def test_crop_share_without_any_gain_is_undefined(pt: ModuleType) -> None:
    assert math.isnan(pt.crop_share(2.0, 2.0, 2.0)["crop_share_of_gain_log"])


def test_table_rows_and_markdown(pt: ModuleType) -> None:
    seconds = {"monai": 20.0, "medseg_nocrop": 16.0, "torch": 8.0}
    dice = {"medseg_nocrop": {"1": 1.0, "2": 1.0}, "torch": {"1": 0.99, "2": 0.995}}
    rows = pt.table_rows(seconds, 2, dice, {}, {}, {"torch": 0.0})
    assert [r["seconds_per_case"] for r in rows] == [10.0, 8.0, 4.0]
    assert [r["speedup_vs_plain"] for r in rows] == [1.0, 1.25, 2.5]
    text = pt.markdown(rows)
    assert "| torch | 4.00 | 2.50x | 0.99000 | - | 0.0e+00 | - |" in text
    assert "| monai | 10.00 | 1.00x | - | - | - | - |" in text


def test_air_padded_phantom_keeps_the_anatomy_in_place(pt: ModuleType) -> None:
    shape, spacing = (40, 36, 8), (2.0, 2.0, 3.0)
    img, lab = pt.phantom_with_air(shape, spacing, air_mm=8.0, seed=0)
    assert img.array.shape == lab.array.shape == shape
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    np.testing.assert_array_equal(img.affine, lab.affine)
    core, core_lab = make_ct_phantom((32, 28, 8), spacing, seed=0, axcodes="RAS")
    # the same labelled voxels at the same world positions as the unpadded phantom
    world = lab.affine @ np.c_[np.argwhere(lab.array > 0), np.ones(int((lab.array > 0).sum()))].T
    ref = core.affine @ np.c_[np.argwhere(core_lab.array > 0), np.ones(world.shape[1])].T
    np.testing.assert_allclose(
        np.sort(world[:3].round(3), axis=1), np.sort(ref[:3].round(3), axis=1)
    )
    # 4 voxels (8 mm) of air and no label on each R/A side
    assert lab.array[:4].max() == 0 and lab.array[:, -4:].max() == 0
    assert img.array[:4].max() < -900


def test_min_dice_is_the_worst_case_per_label(pt: ModuleType, tmp_path: Path) -> None:
    affine = np.eye(4)
    a = np.zeros((4, 4, 4), np.uint8)
    a[:2] = 1
    a[2:] = 2
    b = a.copy()
    b[0] = 2  # case1: half of label 1 lost to label 2
    for folder, arrays in (("a", (a, a)), ("b", (a, b))):
        for n, arr in enumerate(arrays):
            write_nifti(arr, affine, tmp_path / folder / f"case{n}.nii.gz")
    worst = pt.min_dice(tmp_path / "a", tmp_path / "b", ["case0.nii.gz", "case1.nii.gz"], [1, 2])
    assert worst["1"] == pytest.approx(2 * 16 / (32 + 16))
    assert worst["2"] == pytest.approx(2 * 32 / (32 + 48))


def test_plain_monai_and_medseg_without_crop_write_the_same_masks(
    pt: ModuleType, tmp_path: Path
) -> None:
    plans = pt.light_unet_plans((32, 32, 16), (2.0, 2.0, 2.0))
    pt.make_run(tmp_path / "run", plans)
    inputs = pt.write_phantoms(tmp_path / "in", 1, (40, 36, 20), (1.5, 1.5, 2.5), 6.0)
    (tmp_path / "nocrop.yaml").write_text("body_crop: false\n")
    stages: dict[str, float] = {}
    pt.plain_monai(tmp_path / "run", inputs, tmp_path / "plain", 0.5, 2, stages)
    assert set(stages) == {"load_model", "preprocess", "sliding_window", "invertd", "argmax_write"}
    pt.run_medseg(
        tmp_path / "run", tmp_path / "in", tmp_path / "medseg", overlap=0.5, sw=2,
        config=tmp_path / "nocrop.yaml",
    )  # fmt: skip
    plain = load_volume(tmp_path / "plain" / "case0.nii.gz", allow_empty=True)
    medseg = load_volume(tmp_path / "medseg" / "case0.nii.gz", allow_empty=True)
    np.testing.assert_array_equal(plain.affine, medseg.affine)
    assert plain.array.shape == (40, 36, 20)
    worst = pt.min_dice(tmp_path / "plain", tmp_path / "medseg", ["case0.nii.gz"], [1, 2, 3, 4])
    assert min(worst.values()) >= 0.999

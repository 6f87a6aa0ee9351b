"""Bad manifests, data and flags for ``medseg validate-manifest`` and ``medseg train``.

Each kind of bad input a hospital data dump (or a typo) produces is refused cleanly: exit 1,
the message names the file / case / flag and says what was expected, the inputs are
byte-identical afterwards and ``train`` leaves no run directory and no cache behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from refusal import assert_clean_refusal

from medseg.data.cohorts import write_mr_cohort


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    """A private 3-case MR cohort (labels 0, 1, 2) in ``tmp_path/data``; returns its root."""
    root = tmp_path / "data"
    write_mr_cohort(root, 3, seed=5, shape=(16, 16, 16), spacing=(1.0, 1.0, 1.0))
    return root


def _doc(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def _write(root: Path, doc: dict) -> Path:
    path = root / "bad.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


def _relabel(
    root: Path, case: int, name: str, change: Callable[[np.ndarray, np.ndarray], tuple]
) -> str:
    """Write ``labelsTr/<name>`` from case ``case``'s label: ``change(array, affine)``."""
    src = nib.load(root / "labelsTr" / f"phantom_{case:03d}.nii.gz")
    array, affine = change(np.asarray(src.dataobj), src.affine.copy())
    nib.save(nib.Nifti1Image(array, affine), root / "labelsTr" / name)
    return f"./labelsTr/{name}"


def _set_label(root: Path, case: int, value: str) -> Path:
    doc = _doc(root)
    doc["training"][case]["label"] = value
    return _write(root, doc)


# Each maker damages the cohort at ``root`` and returns (manifest, strings the message names).
Maker = Callable[[Path], tuple[Path, list[str]]]


def not_json(root: Path) -> tuple[Path, list[str]]:
    path = root / "bad.json"
    path.write_text("training: phantom_000.nii.gz\n")  # YAML-ish text, not JSON
    return path, [str(path), "not valid JSON"]


def trailing_comma(root: Path) -> tuple[Path, list[str]]:
    path = root / "bad.json"
    path.write_text((root / "dataset.json").read_text().replace('"test": []', '"test": [],'))
    return path, [str(path), "trailing comma"]


def labels_not_from_zero(root: Path) -> tuple[Path, list[str]]:
    doc = _doc(root)
    doc["labels"] = {"1": "oedema", "2": "core"}
    path = _write(root, doc)
    return path, [str(path), 'labels: expected key "0"']


def non_integer_label_keys(root: Path) -> tuple[Path, list[str]]:
    doc = _doc(root)
    doc["labels"] = {"0": "background", "oedema": "1", "core": "2"}
    path = _write(root, doc)
    return path, [str(path), "labels: expected non-negative integer keys", "'oedema'"]


def label_value_not_named(root: Path) -> tuple[Path, list[str]]:
    def seven(a: np.ndarray, aff: np.ndarray) -> tuple:
        a = a.copy()
        a[0, 0, 0] = 7
        return a, aff

    rel = _relabel(root, 1, "seven.nii.gz", seven)
    return _set_label(root, 1, rel), [str(root / rel), "[phantom_001]", "[7] not named"]


def shape_mismatch(root: Path) -> tuple[Path, list[str]]:
    rel = _relabel(root, 0, "short.nii.gz", lambda a, aff: (a[:, :, :-2], aff))
    return _set_label(root, 0, rel), [str(root / rel), "[phantom_000]", "(16, 16, 14)"]


def spacing_mismatch(root: Path) -> tuple[Path, list[str]]:
    def coarse(a: np.ndarray, aff: np.ndarray) -> tuple:
        aff[:3, :3] *= 1.5  # same shape, 1.5 mm voxels instead of 1 mm
        return a, aff

    rel = _relabel(root, 2, "coarse.nii.gz", coarse)
    return _set_label(root, 2, rel), [str(root / rel), "[phantom_002]", "label affine differs"]


def float_label_with_halves(root: Path) -> tuple[Path, list[str]]:
    def halves(a: np.ndarray, aff: np.ndarray) -> tuple:
        a = a.astype(np.float32)
        a[a == 1] = 0.5
        return a, aff

    rel = _relabel(root, 0, "float.nii.gz", halves)
    return _set_label(root, 0, rel), [str(root / rel), "[phantom_000]", "non-integer", "0.5"]


def duplicate_case_id(root: Path) -> tuple[Path, list[str]]:
    doc = _doc(root)
    doc["training"].append(dict(doc["training"][1]))
    path = _write(root, doc)
    return path, [str(path), "duplicate case id phantom_001 (2 times)"]


def missing_file(root: Path) -> tuple[Path, list[str]]:
    doc = _doc(root)
    doc["training"][2]["image"] = "./imagesTr/phantom_099.nii.gz"
    path = _write(root, doc)
    return path, [str(root / "imagesTr" / "phantom_099.nii.gz"), "[phantom_099]", "not found"]


def zero_training_cases(root: Path) -> tuple[Path, list[str]]:
    doc = _doc(root)
    doc["test"] = [c["image"] for c in doc["training"]]
    doc["training"] = []
    path = _write(root, doc)
    return path, [str(path), "expected labelled training cases, found none"]


def label_is_a_number(root: Path) -> tuple[Path, list[str]]:
    doc = _doc(root)
    doc["training"][1]["label"] = 12
    path = _write(root, doc)
    return path, [str(path), "training[1].label: expected a string path, found int 12"]


def _outside(root: Path) -> Path:
    out = root.parent / "elsewhere"
    out.mkdir(exist_ok=True)
    for kind in ("images", "labels"):
        shutil.copy(root / f"{kind}Tr" / "phantom_000.nii.gz", out / f"{kind}.nii.gz")
    return out


def outside_root_dotdot(root: Path) -> tuple[Path, list[str]]:
    _outside(root)
    doc = _doc(root)
    doc["training"][0] = {
        "image": "../elsewhere/images.nii.gz",
        "label": "../elsewhere/labels.nii.gz",
    }
    path = _write(root, doc)
    return path, [
        str(path), "2 path(s) outside the data root", "--allow-outside-root",
        "[images] training[0].image: ../elsewhere/images.nii.gz",
        "[images] training[0].label: ../elsewhere/labels.nii.gz",
    ]  # fmt: skip


def outside_root_absolute(root: Path) -> tuple[Path, list[str]]:
    out = _outside(root)
    doc = _doc(root)
    doc["training"][1]["image"] = str(out / "images.nii.gz")
    path = _write(root, doc)
    return path, [f"[images] training[1].image: {out / 'images.nii.gz'}", "--allow-outside-root"]


def outside_root_symlink(root: Path) -> tuple[Path, list[str]]:
    out = _outside(root)
    (root / "labelsTr" / "linked.nii.gz").symlink_to(out / "labels.nii.gz")
    path = _set_label(root, 2, "./labelsTr/linked.nii.gz")
    return path, ["[phantom_002] training[2].label: ./labelsTr/linked.nii.gz (a symlink to"]


DATA_KINDS: list[Maker] = [
    not_json, trailing_comma, labels_not_from_zero, non_integer_label_keys,
    label_value_not_named, shape_mismatch, spacing_mismatch, float_label_with_halves,
    duplicate_case_id, missing_file, zero_training_cases, label_is_a_number,
    outside_root_dotdot, outside_root_absolute, outside_root_symlink,
]  # fmt: skip


def _inputs(root: Path) -> list[Path]:
    return [root, root.parent / "elsewhere"]


@pytest.mark.parametrize("make", DATA_KINDS, ids=lambda m: m.__name__)
def test_validate_manifest_refuses(
    make: Maker, cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    manifest, names = make(cohort)
    report = tmp_path / "report.json"
    args = ["validate-manifest", str(manifest), "--data-root", str(cohort)]
    text = assert_clean_refusal(args, capsys, names=names, inputs=_inputs(cohort))
    if "outside the data root" in text:  # refused before any file was opened: no report
        assert_clean_refusal([*args, "--json", str(report)], capsys, names=names, absent=[report])


def _train(cohort: Path, manifest: Path, tmp_path: Path, *flags: str) -> list[str]:
    config = tmp_path / "run.yaml"
    if not config.exists():
        config.write_text(f"data: {{cache_dir: {tmp_path / 'cache'}}}\ntrain: {{seed: 1}}\n")
    return [
        "train", "--manifest", str(manifest), "--data-root", str(cohort), "--out",
        str(tmp_path / "run"), "--config", str(config), "--device", "cpu", "--no-progress",
        "--no-postprocess-decision", *flags,
    ]  # fmt: skip


@pytest.mark.parametrize("make", DATA_KINDS, ids=lambda m: m.__name__)
def test_train_refuses_bad_data_before_any_work(
    make: Maker, cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    manifest, names = make(cohort)
    assert_clean_refusal(
        _train(cohort, manifest, tmp_path),
        capsys,
        names=names,
        inputs=[*_inputs(cohort), tmp_path / "run.yaml"],
        absent=[tmp_path / "run", tmp_path / "cache"],
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fold", "7"], "--fold: expected 0..4 or 'all', found 7"),
        (["--fold", "7", "--folds", "5"], "--fold: expected 0..4 or 'all', found 7"),
        (["--fold", "two"], "--fold: expected an integer or 'all', found 'two'"),
        (["--folds", "1"], "--folds: expected >= 2, found 1"),
        (["--time-limit", "-1"], "--time-limit: expected >= 0, found -1.0"),
        (["--epochs", "0"], "--epochs: expected epochs >= 1"),
        (["--model", "resnet"], "--model: expected one of ['auto', 'unet'"),
        (["--device", "gpu"], "--device: expected one of ['auto', 'cpu', 'cuda'], found 'gpu'"),
    ],
    ids=lambda v: "_".join(v) if isinstance(v, list) else "",
)
def test_bad_train_flag_names_the_flag_not_the_config(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str
) -> None:
    # these used to be reported as errors of the --config file ("run.yaml: train.time_...")
    args = _train(cohort, cohort / "dataset.json", tmp_path, *flags)
    config = tmp_path / "run.yaml"
    text = assert_clean_refusal(
        args, capsys, names=[message], inputs=[cohort, config],
        absent=[tmp_path / "run", tmp_path / "cache"],
    )  # fmt: skip
    assert str(config) not in text


def test_unknown_config_key_names_the_file_and_suggests(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{cache_dir: {tmp_path / 'cache'}}}\ntrain: {{epoch: 3}}\n")
    assert_clean_refusal(
        _train(cohort, cohort / "dataset.json", tmp_path),
        capsys,
        names=[str(config), "unknown key 'epoch' (did you mean 'epochs'?)"],
        inputs=[cohort, config],
        absent=[tmp_path / "run", tmp_path / "cache"],
    )


def test_negative_tolerance_is_a_usage_error(cohort: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["validate-manifest", str(cohort / "dataset.json"), "--data-root", str(cohort)]
    assert_clean_refusal(
        [*args, "--tolerance-mm", "-1"], capsys, names=["--tolerance-mm"], inputs=[cohort],
        expected=False, exit_codes=(2,),
    )  # fmt: skip


def test_train_allow_outside_root_reaches_the_run_config(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medseg.workflows.train
    from medseg.cli import main

    seen = []
    monkeypatch.setattr(
        medseg.workflows.train, "train_and_decide", lambda cfg, out, **kw: seen.append(cfg) or {}
    )
    manifest, _ = outside_root_dotdot(cohort)
    assert main(_train(cohort, manifest, tmp_path, "--allow-outside-root")) == 0
    assert seen[0].data.allow_outside_root is True

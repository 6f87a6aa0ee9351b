"""Bad input to ``medseg predict``, ``medseg evaluate`` and ``medseg export-bundle``: each kind is
refused cleanly (issue #21): exit 1, the message names the file or flag and says what was
expected, no traceback, no partial output, inputs byte-identical.

A batch (a folder of cases) refuses the bad case only: it is named in the output (and in
``summary.json``), the other cases are done, and the exit code is 1.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from inference_helpers import phantom
from refusal import assert_clean_refusal

from medseg.io import write_nifti


@dataclass
class Case:
    """One bad input: the command line and what the refusal must show."""

    args: list[str]
    names: list[str | Path]
    inputs: list[Path]
    absent: list[Path] = field(default_factory=list)


@dataclass
class World:
    """A tiny trained run, a folder of two scans and their reference label maps."""

    tmp: Path
    run: Path
    scans: Path
    refs: Path

    def predict(self, model: Path, out: Path | None = None, *extra: str) -> list[str]:
        out = out or self.tmp / "out"
        return [
            "predict",
            "--model",
            str(model),
            "--input",
            str(self.scans),
            "--output",
            str(out),
            "--device",
            "cpu",
            *extra,
        ]

    def copy_run(self, name: str) -> Path:
        import shutil

        return Path(shutil.copytree(self.run, self.tmp / name))

    def checkpoint(self, run: Path) -> Path:
        return run / "fold_0" / "checkpoint_best.pt"


@pytest.fixture
def world(tmp_path: Path, run_dir: Path) -> World:
    scans, refs = tmp_path / "scans", tmp_path / "refs"
    for seed in (0, 1):
        img, lab = phantom(seed=seed)
        write_nifti(img.array, img.affine, scans / f"case{seed}.nii.gz")
        write_nifti(lab.array, lab.affine, refs / f"case{seed}.nii.gz")
    return World(tmp_path, run_dir, scans, refs)


class _WritesAMarker:
    """A pickle payload that would create a file if unpickled with ``weights_only=False``."""

    marker: Path = Path("/nonexistent")

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------- --model: what it points at
def _model_empty_folder(w: World) -> Case:
    empty = w.tmp / "empty_model"
    empty.mkdir()
    return Case(w.predict(empty), [empty, "empty folder"], [empty, w.scans], [w.tmp / "out"])


def _model_plain_file(w: World) -> Case:
    plain = w.tmp / "model.txt"
    plain.write_text("not a model")
    return Case(w.predict(plain), [plain, "found a file"], [plain, w.scans], [w.tmp / "out"])


def _model_run_without_folds(w: World) -> Case:
    run = w.copy_run("no_folds")
    import shutil

    shutil.rmtree(run / "fold_0")
    return Case(
        w.predict(run), [run, "fold_<k>/checkpoint_best.pt"], [run, w.scans], [w.tmp / "out"]
    )


def _model_plans_not_json(w: World) -> Case:
    run = w.copy_run("bad_plans")
    (run / "plans.json").write_text('{"modality": "MR", ')
    return Case(w.predict(run), [run / "plans.json", "JSON"], [run, w.scans], [w.tmp / "out"])


def _folds_not_trained(w: World) -> Case:
    args = w.predict(w.run, None, "--folds", "0,3")
    return Case(args, [w.run, "--folds", "[3]"], [w.run, w.scans], [w.tmp / "out"])


# ----------------------------------------------------------------- checkpoints and weights
def _checkpoint_garbage(w: World) -> Case:
    run = w.copy_run("garbage_ckpt")
    w.checkpoint(run).write_bytes(b"\x00\x01 this is not a checkpoint \xff" * 10)
    names = [w.checkpoint(run), "PyTorch weights file"]
    return Case(w.predict(run), names, [run, w.scans], [w.tmp / "out"])


def _checkpoint_empty(w: World) -> Case:
    run = w.copy_run("empty_ckpt")
    w.checkpoint(run).write_bytes(b"")
    names = [w.checkpoint(run), "empty or truncated"]
    return Case(w.predict(run), names, [run, w.scans], [w.tmp / "out"])


def _checkpoint_truncated(w: World) -> Case:
    run = w.copy_run("truncated_ckpt")
    data = w.checkpoint(run).read_bytes()
    w.checkpoint(run).write_bytes(data[: len(data) // 2])
    names = [w.checkpoint(run), "PyTorch weights file"]
    return Case(w.predict(run), names, [run, w.scans], [w.tmp / "out"])


def _checkpoint_plain_pickle(w: World) -> Case:
    run = w.copy_run("pickle_ckpt")
    w.checkpoint(run).write_bytes(pickle.dumps({"model": {"weight": [1.0, 2.0]}}))
    names = [w.checkpoint(run), "a pickle that is not a weights file"]
    return Case(w.predict(run), names, [run, w.scans], [w.tmp / "out"])


def _checkpoint_custom_class(w: World) -> Case:
    run = w.copy_run("class_ckpt")
    state = torch.load(w.checkpoint(run), weights_only=True)
    state["extra"] = _WritesAMarker()  # a torch zip archive that needs a Python class
    torch.save(state, w.checkpoint(run))
    names = [w.checkpoint(run), "needs the Python object", "posix.system"]
    return Case(w.predict(run), names, [run, w.scans], [w.tmp / "out"])


def _checkpoint_without_model(w: World) -> Case:
    run = w.copy_run("no_model_key")
    state = torch.load(w.checkpoint(run), weights_only=True)
    del state["model"]
    torch.save(state, w.checkpoint(run))
    names = [w.checkpoint(run), "'model' entry", "epoch"]
    return Case(w.predict(run), names, [run, w.scans], [w.tmp / "out"])


def _checkpoint_missing_keys(w: World) -> Case:
    run = w.copy_run("missing_keys")
    state = torch.load(w.checkpoint(run), weights_only=True)
    state["model"] = dict(list(state["model"].items())[:2])
    torch.save(state, w.checkpoint(run))
    names = [w.checkpoint(run), "Missing key(s)"]
    return Case(w.predict(run), names, [run, w.scans], [w.tmp / "out"])


def _checkpoint_wrong_shape(w: World) -> Case:
    run = w.copy_run("wrong_shape")
    state = torch.load(w.checkpoint(run), weights_only=True)
    state["model"] = {k: torch.zeros(2, *v.shape) for k, v in state["model"].items()}
    torch.save(state, w.checkpoint(run))
    names = [w.checkpoint(run), "size mismatch"]
    return Case(w.predict(run), names, [run, w.scans], [w.tmp / "out"])


def _bundle(w: World) -> Path:
    from medseg.cli import main

    bundle = w.tmp / "bundle"
    assert main(["export-bundle", str(w.run), str(bundle)]) == 0
    return bundle


def _bundle_without_models(w: World) -> Case:
    import shutil

    bundle = _bundle(w)
    shutil.rmtree(bundle / "models")
    names = [bundle, "models/"]
    return Case(w.predict(bundle), names, [bundle, w.scans], [w.tmp / "out"])


def _bundle_garbage_weights(w: World) -> Case:
    bundle = _bundle(w)
    (bundle / "models" / "model.pt").write_bytes(b"PK\x03\x04 not really a zip")
    names = [bundle / "models" / "model.pt", "PyTorch weights file"]
    return Case(w.predict(bundle), names, [bundle, w.scans], [w.tmp / "out"])


# ----------------------------------------------------------------- flags and --output
def _overlap_out_of_range(w: World) -> Case:
    args = w.predict(w.run, None, "--overlap", "1.5")
    return Case(args, ["--overlap", "1.5"], [w.run, w.scans], [w.tmp / "out"])


def _sw_batch_size_zero(w: World) -> Case:
    args = w.predict(w.run, None, "--sw-batch-size", "0")
    return Case(args, ["--sw-batch-size", ">= 1"], [w.run, w.scans], [w.tmp / "out"])


def _output_is_a_file(w: World) -> Case:
    target = w.tmp / "out.nii.gz"
    target.write_bytes(b"keep me")
    return Case(w.predict(w.run, target), ["--output", target, "existing file"], [target, w.scans])


def _output_is_the_input(w: World) -> Case:
    names = ["--output", "--input", w.scans]
    return Case(w.predict(w.run, w.scans), names, [w.scans, w.run], [w.scans / "summary.json"])


def _output_inside_the_input(w: World) -> Case:
    out = w.scans / "masks"
    return Case(w.predict(w.run, out), ["--output", out, "--input"], [w.scans, w.run], [out])


def _output_is_the_folder_of_the_input_file(w: World) -> Case:
    scan = w.scans / "case0.nii.gz"  # the mask case0.nii.gz used to overwrite this scan
    args = w.predict(w.run, w.scans)
    args[args.index("--input") + 1] = str(scan)
    return Case(args, ["--output", scan, "overwrite"], [w.scans], [w.scans / "summary.json"])


def _output_under_a_file(w: World) -> Case:
    blocker = w.tmp / "blocker"
    blocker.write_text("a file where a folder should be")
    out = blocker / "masks"
    return Case(w.predict(w.run, out), ["--output", out, "is a file"], [blocker, w.scans])


# ----------------------------------------------------------------- export-bundle
def _export_into_existing_folder(w: World) -> Case:
    out = w.tmp / "existing"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["export-bundle", str(w.run), str(out)]
    return Case(args, [out, "--force", "notes.txt"], [out, w.run])


def _export_fold_without_checkpoint(w: World) -> Case:
    (w.run / "fold_1").mkdir()
    (w.run / "fold_1" / "log.csv").write_text("epoch,loss\n")
    out = w.tmp / "bundle_f1"
    args = ["export-bundle", str(w.run), str(out), "--fold", "1"]
    return Case(args, [w.run, "--fold 1", "checkpoint_best.pt"], [w.run], [out])


def _export_over_the_run(w: World) -> Case:
    args = ["export-bundle", str(w.run), str(w.run), "--force"]  # used to delete the run
    return Case(args, ["OUT_DIR", "RUN_DIR", w.run], [w.run])


def _export_over_a_parent_of_the_run(w: World) -> Case:
    args = ["export-bundle", str(w.run), str(w.tmp), "--force"]
    return Case(args, ["OUT_DIR", "RUN_DIR", "delete"], [w.run, w.scans])


def _export_garbage_checkpoint(w: World) -> Case:
    run = w.copy_run("garbage_export")
    w.checkpoint(run).write_bytes(b"garbage")
    out = w.tmp / "bundle_garbage"
    args = ["export-bundle", str(run), str(out)]
    return Case(args, [w.checkpoint(run), "PyTorch weights file"], [run], [out])


# ----------------------------------------------------------------- evaluate
def _evaluate(w: World, pred: Path, ref: Path, out: Path | None, *extra: str) -> list[str]:
    args = ["evaluate", "--pred", str(pred), "--ref", str(ref), "--qc-cases", "0", *extra]
    return args + (["--out", str(out)] if out is not None else [])


def _evaluate_pred_without_masks(w: World) -> Case:
    pred = w.tmp / "no_masks"
    pred.mkdir()
    (pred / "summary.json").write_text("{}")
    out = w.tmp / "report"
    args = _evaluate(w, pred, w.refs, out)
    return Case(args, [pred, "predicted label maps"], [pred, w.refs], [out])


def _evaluate_out_is_a_file(w: World) -> Case:
    target = w.tmp / "report.html"
    target.write_text("<html></html>")
    args = _evaluate(w, w.refs, w.refs, target)
    return Case(args, ["--out", target, "existing file"], [target, w.refs])


def _evaluate_out_is_the_pred_folder(w: World) -> Case:
    args = _evaluate(w, w.refs, w.refs, w.refs)
    return Case(args, ["--out", "--pred", w.refs], [w.refs], [w.refs / "metrics.csv"])


def _evaluate_bad_tolerance(w: World) -> Case:
    args = _evaluate(w, w.refs, w.refs, w.tmp / "report", "--tolerance", "-1")
    return Case(args, ["--tolerance", "-1"], [w.refs], [w.tmp / "report"])


KINDS: dict[str, Callable[[World], Case]] = {
    "model-empty-folder": _model_empty_folder,
    "model-plain-file": _model_plain_file,
    "model-run-without-folds": _model_run_without_folds,
    "model-plans-json-corrupt": _model_plans_not_json,
    "folds-not-trained": _folds_not_trained,
    "checkpoint-garbage": _checkpoint_garbage,
    "checkpoint-empty": _checkpoint_empty,
    "checkpoint-truncated": _checkpoint_truncated,
    "checkpoint-plain-pickle": _checkpoint_plain_pickle,
    "checkpoint-custom-class": _checkpoint_custom_class,
    "checkpoint-without-model": _checkpoint_without_model,
    "checkpoint-missing-keys": _checkpoint_missing_keys,
    "checkpoint-wrong-shape": _checkpoint_wrong_shape,
    "bundle-without-models": _bundle_without_models,
    "bundle-garbage-weights": _bundle_garbage_weights,
    "overlap-1.5": _overlap_out_of_range,
    "sw-batch-size-0": _sw_batch_size_zero,
    "output-is-a-file": _output_is_a_file,
    "output-is-the-input": _output_is_the_input,
    "output-inside-the-input": _output_inside_the_input,
    "output-is-the-folder-of-the-input-file": _output_is_the_folder_of_the_input_file,
    "output-under-a-file": _output_under_a_file,
    "export-existing-folder": _export_into_existing_folder,
    "export-fold-without-checkpoint": _export_fold_without_checkpoint,
    "export-over-the-run": _export_over_the_run,
    "export-over-a-parent-of-the-run": _export_over_a_parent_of_the_run,
    "export-garbage-checkpoint": _export_garbage_checkpoint,
    "evaluate-pred-without-masks": _evaluate_pred_without_masks,
    "evaluate-out-is-a-file": _evaluate_out_is_a_file,
    "evaluate-out-is-the-pred-folder": _evaluate_out_is_the_pred_folder,
    "evaluate-tolerance-negative": _evaluate_bad_tolerance,
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_refused_cleanly(kind: str, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    case = KINDS[kind](world)
    capsys.readouterr()  # drop what building the case printed
    assert_clean_refusal(
        case.args, capsys, names=case.names, inputs=case.inputs, absent=case.absent
    )


def test_a_pickle_that_runs_code_is_never_run(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``weights_only=True`` stays on: a checkpoint whose unpickling calls ``os.system`` (to
    create a marker file) is refused cleanly and the call never happens."""
    control = world.tmp / "MARKER_control"
    monkeypatch.setattr(_WritesAMarker, "marker", control)
    pickle.loads(pickle.dumps(_WritesAMarker()))
    assert control.is_file(), "the payload must be able to create its marker"
    marker = world.tmp / "MARKER_code_ran"
    monkeypatch.setattr(_WritesAMarker, "marker", marker)
    run = world.copy_run("evil")
    evil = pickle.dumps(_WritesAMarker())
    for payload in ("plain-pickle", "torch-zip"):
        if payload == "plain-pickle":
            world.checkpoint(run).write_bytes(evil)
        else:
            torch.save({"model": _WritesAMarker()}, world.checkpoint(run))
        text = assert_clean_refusal(
            world.predict(run), capsys, names=[world.checkpoint(run)], inputs=[world.scans]
        )
        assert "weights file" in text
        assert not marker.exists(), f"{payload}: unpickling ran code"
    assert not (world.tmp / "out").exists()


def test_output_not_writable_is_refused_before_work(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only output folder is refused up front (it used to fail every case and then
    crash in the summary writer with a traceback). The tests run as root, for whom chmod
    does not bite, so the folder's permission is reported read-only the way a read-only
    mount reports it (``os.access``); ``test_output_location.py`` checks a real chmod."""
    out = world.tmp / "readonly"
    out.mkdir()
    real = os.access

    def access(path: object, mode: int, **kw: object) -> bool:
        if Path(str(path)).resolve() == out.resolve() and mode & os.W_OK:
            return False
        return real(path, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    for args in (
        world.predict(world.run, out),
        _evaluate(world, world.refs, world.refs, out),
        ["export-bundle", str(world.run), str(out)],
    ):
        flag = {"predict": "--output", "evaluate": "--out", "export-bundle": "OUT_DIR"}[args[0]]
        assert_clean_refusal(args, capsys, names=[flag, out, "not writable"], inputs=[world.scans])
        assert list(out.iterdir()) == []


# ----------------------------------------------------------------- batches: one bad case
def _write_bad_case(folder: Path, kind: str) -> Path:
    img, _ = phantom(seed=5)
    path = folder / f"bad_{kind}.nii.gz"
    if kind == "corrupt":
        path.write_bytes(b"\x1f\x8b\x08 this gzip stream stops here")
    elif kind == "4d":
        nib.save(nib.Nifti1Image(np.stack([img.array] * 2, -1), img.affine), path)
    elif kind == "2d":
        nib.save(nib.Nifti1Image(img.array[:, :, 7], img.affine), path)
    elif kind == "nan":
        arr = img.array.copy()
        arr[4, 5, 6] = np.nan
        nib.save(nib.Nifti1Image(arr, img.affine), path)
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("corrupt", "expected"),
        ("4d", "4D"),
        ("2d", "2D"),
        ("nan", "NaN"),
    ],
)
def test_batch_refuses_the_bad_case_and_predicts_the_others(
    kind: str, says: str, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write_bad_case(world.scans, kind)
    name = bad.name.removesuffix(".nii.gz")
    out = world.tmp / "out"
    assert_clean_refusal(
        world.predict(world.run, out),
        capsys,
        names=[name, bad, says],
        inputs=[world.scans, world.run],
        absent=[out / f"{name}.nii.gz", out / f"{name}.json"],
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    assert [f["case"] for f in summary["failures"]] == [name]
    assert str(bad) in summary["failures"][0]["error"]
    for good in ("case0", "case1"):
        assert (out / f"{good}.nii.gz").is_file() and (out / f"{good}.json").is_file()


def _sidecar(pred: Path, case: str, labels: dict[str, str]) -> None:
    doc = {"case": case, "mask": f"{case}.nii.gz", "labels": labels}
    (pred / f"{case}.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("kind", ["unknown-label", "other-geometry", "no-reference", "corrupt"])
def test_evaluate_refuses_the_bad_case_and_scores_the_others(
    kind: str, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Predictions as ``medseg predict`` writes them (mask + sidecar naming the model's
    labels); one case is bad, the other is scored, the report is written, exit 1."""
    pred, refs = world.tmp / "pred", world.tmp / "ref"
    labels = {"0": "background", "1": "organ", "2": "core"}
    for seed, case in ((0, "good"), (1, "bad")):
        _, lab = phantom(seed=seed)
        write_nifti(lab.array, lab.affine, pred / f"{case}.nii.gz")
        write_nifti(lab.array, lab.affine, refs / f"{case}.nii.gz")
        _sidecar(pred, case, labels)
    _, lab = phantom(seed=1)
    blame: Path = refs / "bad.nii.gz"
    if kind == "unknown-label":  # the reference holds a label the model does not know
        arr = lab.array.copy()
        arr[:3, :3, :3] = 7
        write_nifti(arr, lab.affine, blame)
        says = "[7]"
    elif kind == "other-geometry":  # the prediction lies 500 mm away from the reference
        far = lab.affine.copy()
        far[:3, 3] += 500.0
        blame = pred / "bad.nii.gz"
        write_nifti(lab.array, far, blame)
        says = "does not overlap"
    elif kind == "no-reference":
        blame.unlink()
        says = "without a reference"
    else:
        blame.write_bytes(b"not a label map")
        says = "expected"
    out = world.tmp / "report"
    text = assert_clean_refusal(
        _evaluate(world, pred, refs, out),
        capsys,
        names=["bad", says] + ([blame] if kind != "no-reference" else []),
        inputs=[pred, refs],
    )
    assert "not scored" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 1
    rows = (out / "metrics.csv").read_text().splitlines()
    assert all(r.split(",")[0] != "bad" for r in rows[1:]) and len(rows) > 1
    if kind == "no-reference":
        assert summary["unmatched_predictions"] == ["bad"]
    else:
        assert [f["case"] for f in summary["failed_cases"]] == ["bad"]


def test_plans_json_that_is_not_an_object(world: World, capsys: pytest.CaptureFixture) -> None:
    run = world.copy_run("list_plans")
    (run / "plans.json").write_text("[1, 2]")
    assert_clean_refusal(world.predict(run), capsys, names=[run / "plans.json"], inputs=[run])


@pytest.mark.parametrize("kind", ["unsupported-file", "empty-folder"])
def test_a_bad_input_leaves_no_output_folder(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, kind: str
) -> None:
    # the resolved predict_config.yaml used to be written before --input was looked at
    if kind == "unsupported-file":
        source = tmp_path / "notes.txt"
        source.write_text("not a scan\n")
    else:
        source = tmp_path / "empty"
        source.mkdir()
    out = tmp_path / "masks"
    args = ["predict", "--model", str(run_dir), "--input", str(source), "--output", str(out)]
    assert_clean_refusal(args, capsys, names=[source], inputs=[source], absent=[out])

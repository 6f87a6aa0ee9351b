"""The CLI shell: commands registered, user errors exit 1 without a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.cli import app, main

COMMANDS = {
    "convert", "info", "validate-manifest", "synth-ct", "train", "predict", "evaluate",
    "export-bundle", "verify-bundle", "cache",
}  # fmt: skip


def test_every_stage_registers_its_commands() -> None:
    import typer.main

    names = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert names >= COMMANDS


def test_user_error_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.nii.gz"
    assert main(["info", str(missing)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_usage_error_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["convert"]) == 2
    assert main(["no-such-command"]) == 2


def test_help_exits_0() -> None:
    assert main(["--help"]) == 0


def test_predict_config_yaml_with_flags_and_resolved_file(run_dir: Path, tmp_path: Path) -> None:
    import json

    import nibabel as nib
    import numpy as np
    from inference_helpers import phantom

    from medseg.inference.config import InferConfig, load_infer_config
    from medseg.io import write_nifti

    img, _ = phantom(seed=3)
    write_nifti(img.array, img.affine, tmp_path / "in" / "scan.nii.gz")
    infer = tmp_path / "infer.yaml"
    infer.write_text(
        "overlap: 0.25\nsw_batch_size: 2\ntta: true\npostprocess: none\nprefetch: false\n"
        "slab_mvox: 1.0\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    base = ["predict", "--model", str(run_dir), "--input", str(tmp_path / "in")]
    flags = ["--no-tta", "--sw-batch-size", "3", "--device", "cpu"]
    assert main([*base, "--output", str(out), "--config", str(infer), *flags]) == 0
    resolved = load_infer_config(out / "predict_config.yaml")
    expected = InferConfig(
        overlap=0.25, sw_batch_size=3, tta=False, postprocess="none", prefetch=False,
        slab_mvox=1.0, device="cpu",
    )  # fmt: skip
    assert resolved == expected
    side = json.loads((out / "scan.json").read_text())["inference"]
    assert (side["overlap"], side["sw_batch_size"], side["tta"]) == (0.25, 3, False)
    again = tmp_path / "again"
    assert main([*base, "--output", str(again), "--config", str(out / "predict_config.yaml")]) == 0
    assert load_infer_config(again / "predict_config.yaml") == resolved
    first = np.asarray(nib.load(out / "scan.nii.gz").dataobj)
    assert np.array_equal(first, np.asarray(nib.load(again / "scan.nii.gz").dataobj))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("overlapp: 0.3\n", "infer: unknown key 'overlapp' (did you mean 'overlap'?)"),
        ("overlap: high\n", "infer.overlap: expected float, found 'high'"),
        ("overlap: 1.0\n", "infer.overlap: expected 0 <= overlap < 1, found 1.0"),
    ],
)
def test_predict_config_errors_name_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str, message: str
) -> None:
    infer = tmp_path / "infer.yaml"
    infer.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    args = ["predict", "--model", str(tmp_path), "--input", str(tmp_path), "--output", str(out)]
    assert main([*args, "--config", str(infer)]) == 1
    assert f"error: {infer}: {message}" in capsys.readouterr().err
    assert not out.exists()  # nothing written for a config that does not load

"""Every ``medseg`` command line in README.md names a real command and real options.

The demo runs the main commands for real (synth-ct, validate-manifest, train, predict,
evaluate, export-bundle, info, convert); this test keeps the documented flags from drifting.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import typer.main

from medseg.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _command_lines() -> list[str]:
    text = README.read_text(encoding="utf-8")
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("medseg ") or re.match(r"torchrun .* -m medseg ", line):
                lines.append(line)
    return lines


LINES = _command_lines()


def _words(line: str) -> list[str]:
    """The words after ``medseg`` (command name first)."""
    words = shlex.split(line)
    return words[words.index("medseg") + 1 :]


def test_readme_shows_every_registered_command_and_no_other() -> None:
    """Each registered command has an example in README, and README names no other command."""
    registered = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {_words(line)[0] for line in LINES} == registered
    # the torchrun section shows both distributed entry points
    torchrun = [_words(line)[0] for line in LINES if line.startswith("torchrun ")]
    assert sorted(torchrun) == ["predict", "train"]


@pytest.mark.parametrize("line", LINES)
def test_readme_command_is_valid(line: str) -> None:
    """The line parses as written: known options, valid values, the right positionals."""
    words = _words(line)
    group = typer.main.get_command(app)
    name = words[0]
    assert name in group.commands, f"unknown command in README: {line}"  # type: ignore[attr-defined]
    command = group.commands[name]  # type: ignore[attr-defined]
    rest = words[1:]
    while rest and rest[0] in getattr(command, "commands", {}):  # a group: `cache list`
        name, command, rest = rest[0], command.commands[rest[0]], rest[1:]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in known, f"{word} is not an option of '{name}': {line}"
    try:  # required options, missing or extra arguments, bad values (nothing is run)
        command.make_context(name, rest)
    except Exception as exc:  # click's UsageError / BadParameter (typer vendors click)
        pytest.fail(f"README line does not parse: {line}: {exc}")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Fitting and predicting tiny models: more threads only contend on a loaded CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_readme_python_api_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """The README's Python API example runs as written and does what its comments say.

    On a tiny run (fitted 80 steps on two other phantoms) and an LPS-stored phantom: the mask
    is a Volume on the scan's grid (affine and shape), the file written overlays the scan
    (qform and sform), the sidecar names the labels, and the rows score the mask written.
    """
    import nibabel as nib
    from tiny_run import SHAPE, SPACING, make_tiny_run

    from medseg.data.synthetic import CT_LABELS, make_ct_phantom
    from medseg.io import Volume, load_volume, save_mask, write_nifti
    from medseg.metrics import dice_per_label

    text = README.read_text(encoding="utf-8")
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "Predictor" in b]
    make_tiny_run(tmp_path / "runs" / "hippocampus", steps=80)
    image, label = make_ct_phantom(SHAPE, SPACING, seed=5, axcodes="LPS")
    write_nifti(image.array, image.affine, tmp_path / "ct.nii.gz")
    save_mask(label.array, image, tmp_path / "ct_label.nii.gz")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    scan, mask, predictor = namespace["scan"], namespace["mask"], namespace["predictor"]
    # "Volume on the scan's grid"
    assert isinstance(mask, Volume)
    np.testing.assert_array_equal(mask.affine, scan.affine)
    np.testing.assert_allclose(scan.affine, image.affine, atol=1e-6)
    assert mask.array.shape == scan.spatial_shape == SHAPE
    assert set(np.unique(mask.array)) <= set(CT_LABELS)
    assert predictor.label_names == dict(CT_LABELS)
    # the file overlays the scan: its voxels, affine in qform and sform, label names beside it
    written = nib.load(str(tmp_path / "ct_mask.nii.gz"))
    np.testing.assert_array_equal(np.asarray(written.dataobj), mask.array)
    np.testing.assert_allclose(written.get_qform(), scan.affine, atol=1e-5)
    np.testing.assert_allclose(written.get_sform(), scan.affine, atol=1e-5)
    sidecar = json.loads((tmp_path / "ct_mask.json").read_text())
    assert sidecar["labels"] == {str(k): v for k, v in CT_LABELS.items()}
    # the rows score that mask against the reference, per requested label
    rows = namespace["rows"]
    reference = load_volume(tmp_path / "ct_label.nii.gz")
    expected = dice_per_label(mask.array, reference.array, [1, 2])
    assert [r["label"] for r in rows] == [1, 2]
    for row in rows:
        assert row["dice"] == pytest.approx(expected[row["label"]], abs=1e-9)
        assert row["n_ref"] == int(np.count_nonzero(label.array == row["label"]))
    # and the mask segments this scan (one thread: liver 0.61, kidney 0.82), not a shifted or
    # flipped copy of it: a misplaced mask scores near 0
    assert min(expected.values()) > 0.5, expected


def test_readme_config_block_is_a_valid_run_config(tmp_path: Path) -> None:
    """The YAML shown under "Configuration" loads into ``RunConfig`` with the defaults it states."""
    from medseg.config import to_dict
    from medseg.training.config import RunConfig, load_run_config

    section = README.read_text(encoding="utf-8").split("## Configuration", 1)[1]
    block = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)[0]
    path = tmp_path / "run.yaml"
    path.write_text(block)
    shown = load_run_config(path)
    defaults = to_dict(RunConfig())
    for name, section_values in to_dict(shown).items():
        assert section_values == defaults[name], f"README shows non-default values in {name}"

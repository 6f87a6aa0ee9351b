"""Every ``medseg`` command line in README.md names a real command and real options.

The demo runs the main commands for real (synth-ct, validate-manifest, train, predict,
evaluate, export-bundle, info, convert); this test keeps the documented flags from drifting.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
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


def test_readme_has_commands() -> None:
    assert len(LINES) >= 10


@pytest.mark.parametrize("line", LINES)
def test_readme_command_is_valid(line: str) -> None:
    words = shlex.split(line)
    words = words[words.index("medseg") + 1 :]
    group = typer.main.get_command(app)
    name = words[0]
    assert name in group.commands, f"unknown command in README: {line}"  # type: ignore[attr-defined]
    command = group.commands[name]  # type: ignore[attr-defined]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for word in words[1:]:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in known, f"{word} is not an option of '{name}': {line}"


def test_readme_python_api_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python API example runs as written, on a tiny run and a phantom."""
    from tiny_run import SHAPE, SPACING, make_tiny_run

    from medseg.data.synthetic import make_ct_phantom
    from medseg.io import save_mask, write_nifti

    text = README.read_text(encoding="utf-8")
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "Predictor" in b]
    make_tiny_run(tmp_path / "runs" / "hippocampus")
    image, label = make_ct_phantom(SHAPE, SPACING, seed=5, axcodes="LPS")
    write_nifti(image.array, image.affine, tmp_path / "ct.nii.gz")
    save_mask(label.array, image, tmp_path / "ct_label.nii.gz")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "ct_mask.nii.gz").is_file()
    rows = namespace["rows"]
    assert [r["label"] for r in rows] == [1, 2] and all(0.0 <= r["dice"] <= 1.0 for r in rows)


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

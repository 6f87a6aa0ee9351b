"""``medseg train --configuration auto``: 2d and 3d trained on the same folds, compared on the
pooled cross-validation predictions (ensemble of the two included), the choice recorded and
used by ``medseg predict``; masks on the source grid of a non-RAS anisotropic scan."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from cohort_run import predict_first_case, train_ct_cohort
from typer.testing import CliRunner

from medseg.cli import app
from medseg.data.manifest import load_manifest
from medseg.errors import MedsegError
from medseg.inference.config import InferConfig
from medseg.inference.ensemble import EnsemblePredictor
from medseg.inference.predictor import Predictor
from medseg.io import load_volume
from medseg.networks.loading import load_models
from medseg.planning.configurations import (
    ConfigurationChoice,
    load_choice,
    save_choice,
    sensible_configurations,
)
from medseg.planning.plans import load_plans
from medseg.workflows.configurations import compare_configurations


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-epoch auto run on four CT phantoms; returns (run directory, manifest)."""
    return train_ct_cohort(tmp_path_factory.mktemp("auto"), "auto", batch_size=2)


def test_auto_trains_2d_and_3d_on_the_same_splits(auto_run: tuple[Path, Path]) -> None:
    run, _ = auto_run
    assert load_plans(run / "3d" / "plans.json").configuration == "3d"
    assert load_plans(run / "2d" / "plans.json").configuration == "2d"
    splits = [json.loads((run / n / "splits.json").read_text()) for n in ("2d", "3d")]
    assert splits[0] == splits[1] == json.loads((run / "splits.json").read_text())
    for name in ("2d", "3d"):
        assert (run / name / "fold_0" / "checkpoint_best.pt").is_file()
    # the fingerprint is computed once and shared
    fps = [(run / n / "fingerprint.json").read_text() for n in ("2d", "3d")]
    assert fps[0] == fps[1]


def test_choice_is_recorded_and_explained(auto_run: tuple[Path, Path]) -> None:
    run, _ = auto_run
    choice = load_choice(run)
    assert set(choice.trained) == {"2d", "3d"}
    assert set(choice.scores) == {"2d", "3d", "2d+3d"}
    best_single = max(("2d", "3d"), key=lambda n: choice.scores[n]["mean_dice"])
    ens = choice.scores["2d+3d"]["mean_dice"]
    if choice.is_ensemble:
        assert ens > choice.scores[best_single]["mean_dice"]
        assert (run / "postprocessing.json").is_file()
    else:
        assert choice.chosen == (best_single,)
        assert (run / best_single / "postprocessing.json").is_file()
    assert "pooled validation cases" in choice.reason
    assert choice.details["validation_cases"] == 2 and choice.details["folds"] == [0]
    for cand in choice.scores.values():
        assert 0.0 <= cand["mean_dice"] <= 1.0 and cand["cases"] == 2


def test_predict_uses_the_choice_and_keeps_geometry(
    auto_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run, manifest = auto_run
    out = tmp_path / "pred"
    predict_first_case(run, manifest, out)
    sidecar = json.loads(next(out.glob("*.json")).read_text())
    chosen = load_choice(run).chosen
    if len(chosen) == 1:
        assert sidecar["model"]["path"] == str((run / chosen[0]).resolve())


def _force_choice(run: Path, tmp_path: Path, chosen: tuple[str, ...]) -> Path:
    """A copy of the run's top folder whose configuration.json chooses ``chosen``."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    old = load_choice(copy)
    save_choice(dataclasses.replace(old, chosen=chosen), copy)
    (copy / "postprocessing.json").unlink(missing_ok=True)
    return copy


def test_ensemble_averages_the_members_probabilities(
    auto_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run, manifest = auto_run
    copy = _force_choice(run, tmp_path, ("2d", "3d"))
    volume = load_volume(load_manifest(manifest, manifest.parent).training[1].image)
    plain = InferConfig(postprocess="none", folds=(0,))
    ens = Predictor.from_path(copy, config=plain)
    assert isinstance(ens, EnsemblePredictor)
    got = ens.predict(volume, with_probabilities=True)
    members = [Predictor.from_path(copy / n, config=plain) for n in ("2d", "3d")]
    probs = [m.predict(volume, with_probabilities=True).probabilities.array for m in members]
    want = (probs[0].astype(np.float32) + probs[1].astype(np.float32)) / 2
    assert got.probabilities is not None
    np.testing.assert_allclose(got.probabilities.array.astype(np.float32), want, atol=2e-3)
    agree = np.mean(got.mask.array == np.argmax(want, axis=0))
    assert agree > 0.999  # float16 ties aside
    assert got.mask.array.shape == volume.spatial_shape
    np.testing.assert_array_equal(got.mask.affine, volume.affine)
    # exporting or loading one network of an ensemble names the folders to use instead
    with pytest.raises(MedsegError, match="ensemble 2d\\+3d"):
        load_models(copy)
    # the batch command gives the same mask, and its sidecar names both configurations
    out = tmp_path / "pred"
    args = ["predict", "--model", str(copy), "--input", str(volume.path), "--output", str(out)]
    result = CliRunner().invoke(app, [*args, "--postprocess", "none", "--folds", "0"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    written = load_volume(next(out.glob("*.nii.gz")))
    np.testing.assert_array_equal(written.array, got.mask.array)
    sidecar = json.loads(next(out.glob("*.json")).read_text())
    assert sidecar["model"]["configurations"] == ["2d", "3d"]
    assert set(sidecar["model"]["weights_sha256"]) == {"2d/0", "3d/0"}


def test_single_choice_loads_as_its_configuration(
    auto_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run, _ = auto_run
    copy = _force_choice(run, tmp_path, ("2d",))
    loaded = load_models(copy)
    assert loaded.plans.configuration == "2d"


def test_comparison_prefers_the_ensemble_only_when_it_scores_higher(
    auto_run: tuple[Path, Path],
) -> None:
    run, manifest = auto_run
    m = load_manifest(manifest, manifest.parent)
    choice = compare_configurations(run, ["3d", "2d"], [0], m)
    scores = choice.scores
    best = max(("2d", "3d"), key=lambda n: scores[n]["mean_dice"])
    want = ("2d", "3d") if scores["2d+3d"]["mean_dice"] > scores[best]["mean_dice"] else (best,)
    assert choice.chosen == want
    # no time left: the full-resolution default, said so
    late = compare_configurations(run, ["3d", "2d"], [0], m, deadline=0.0)
    assert late.chosen == ("3d",) and "no time" in late.reason


def test_lowres_is_sensible_only_when_the_patch_covers_little(
    auto_run: tuple[Path, Path],
) -> None:
    run, _ = auto_run
    plans = load_plans(run / "3d" / "plans.json")
    assert "3d_lowres" not in sensible_configurations(plans)
    big = dataclasses.replace(plans, median_shape=(400, 400, 200))
    assert "3d_lowres" in sensible_configurations(big)


def test_bad_configuration_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "configuration.json").write_text('{"chosen": ["3d"], "trained": {"3d": "3d"}}')
    with pytest.raises(MedsegError, match=r"plans\.json") as err:
        load_choice(tmp_path)
    assert "configuration.json" in str(err.value)
    save_choice(ConfigurationChoice(chosen=(), trained={}), tmp_path)
    with pytest.raises(MedsegError, match="non-empty"):
        load_choice(tmp_path)

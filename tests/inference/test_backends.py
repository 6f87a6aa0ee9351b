"""``--backend onnxruntime|openvino``: masks and probabilities as torch's, the cached export per
fold, bundles' ``models/model.onnx``, ``medseg export-onnx``, and clean refusals."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_helpers import fit_tiny, phantom, write_run
from multichannel_run import ct_pet_case, fit_two_channel, two_channel_plans, write_two_channel_run
from tiny_run import fit_batch

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.inference.config import InferConfig
from medseg.inference.predictor import Predictor
from medseg.io import load_volume, write_nifti
from medseg.networks import onnx_cache
from medseg.networks.loading import file_digest
from medseg.networks.onnx_export import onnx_plans, read_onnx_metadata
from medseg.planning.plans import Plans

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CPU = ["--device", "cpu"]
TOL = 1e-4
NO_OPENVINO = importlib.util.find_spec("openvino") is None
BACKENDS = [
    "onnxruntime",
    pytest.param("openvino", marks=pytest.mark.skipif(NO_OPENVINO, reason="openvino absent")),
]


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def min_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest Dice over the labels present in either mask (1.0 when both are empty)."""
    labels = [v for v in np.union1d(np.unique(a), np.unique(b)) if v]
    return min(
        (2 * float(np.sum((a == v) & (b == v))) / float(np.sum(a == v) + np.sum(b == v)))
        for v in labels
    ) if labels else 1.0  # fmt: skip


def predict(model: Path, src: Path, out: Path, *extra: str) -> int:
    args = ["--model", str(model), "--input", str(src), "--output", str(out), *CPU, *extra]
    return main(["predict", *args])


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two phantoms, one stored LPS (the backends see the same preprocessed windows)."""
    from medseg.data.synthetic import reorient

    src = tmp_path_factory.mktemp("cases")
    for name, seed, centre in (("a", 3, (1.0, -1.0, 0.5)), ("b", 4, (-1.0, 1.5, -0.5))):
        img, _ = phantom(seed=seed, centre_mm=centre)
        if name == "b":
            img = reorient(img.array, img.affine, "LPS")
        write_nifti(img.array, img.affine, src / f"{name}.nii.gz")
    return src


@pytest.fixture(scope="module")
def torch_masks(
    tiny_net: tuple[Plans, torch.nn.Module], cases: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    run = write_run(tmp_path_factory.mktemp("torch_run") / "run", tiny_net[0], [tiny_net[1]])
    out = tmp_path_factory.mktemp("torch_masks") / "out"
    assert predict(run, cases, out) == 0
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_backend_masks_equal_torch(
    run_dir: Path, cases: Path, torch_masks: Path, tmp_path: Path, backend: str
) -> None:
    before = hashes(cases)
    out = tmp_path / "out"
    assert predict(run_dir, cases, out, "--backend", backend) == 0
    for name in ("a.nii.gz", "b.nii.gz"):
        ours = load_volume(out / name, allow_empty=True)
        ref = load_volume(torch_masks / name, allow_empty=True)
        np.testing.assert_array_equal(ours.affine, ref.affine)
        assert (ref.array > 0).sum() > 50  # the tiny model segments something
        assert min_dice(ours.array, ref.array) >= 0.999
    assert (run_dir / "fold_0" / "model.onnx").is_file()  # exported into the run folder
    assert "backend: " + backend in (out / "predict_config.yaml").read_text()
    assert hashes(cases) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_probabilities_match_torch_with_tta_and_two_folds(
    tiny_net: tuple[Plans, torch.nn.Module], tmp_path: Path, backend: str
) -> None:
    """Mirror TTA over 3 axes and a two-fold ensemble: blended float32 maps within 1e-4."""
    plans, net = tiny_net
    run = write_run(tmp_path / "run", plans, [net, fit_tiny(plans, steps=15, seed=1)])
    img, _ = phantom(seed=9)
    probs = {}
    for b in ("torch", backend):
        cfg = InferConfig(device="cpu", tta=True, accumulation="float32", backend=b)  # type: ignore[arg-type]
        predictor = Predictor.from_path(run, config=cfg)
        assert len(predictor.models) == 2
        probs[b] = predictor.network_probabilities(predictor.preprocess(img))
    assert float((probs[backend] - probs["torch"]).abs().max()) <= TOL
    assert sorted(p.name for p in run.rglob("*.onnx")) == ["model.onnx", "model.onnx"]


def test_two_channel_model_via_cli(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    plans = two_channel_plans()
    run = write_two_channel_run(tmp_path / "run", plans, fit_two_channel(plans))
    src = tmp_path / "in"
    for name, seed, centre in (("p1", 5, (0.0, -1.5, 0.0)), ("p2", 6, (1.5, 0.5, -0.5))):
        ct, pet, _ = ct_pet_case(seed, centre_mm=centre)
        write_nifti(ct.array, ct.affine, src / f"{name}_0000.nii.gz")
        write_nifti(pet.array, pet.affine, src / f"{name}_0001.nii.gz")
    assert predict(run, src, tmp_path / "torch") == 0
    assert predict(run, src, tmp_path / "ort", "--backend", "onnxruntime") == 0
    for name in ("p1.nii.gz", "p2.nii.gz"):
        ref = load_volume(tmp_path / "torch" / name).array
        assert (ref == 2).sum() > 20  # the core, which only the PET channel shows
        assert min_dice(load_volume(tmp_path / "ort" / name).array, ref) >= 0.999
    assert read_onnx_metadata(run / "fold_0" / "model.onnx")["channel_names"] == ["CT", "PET"]


def test_export_is_cached_and_redone_when_the_checkpoint_changes(
    run_dir: Path, cases: Path, tmp_path: Path, tiny_net: tuple[Plans, torch.nn.Module]
) -> None:
    onnx_file = run_dir / "fold_0" / "model.onnx"
    ckpt = run_dir / "fold_0" / "checkpoint_best.pt"
    assert predict(run_dir, cases, tmp_path / "o1", "--backend", "onnxruntime") == 0
    first = onnx_file.stat().st_mtime_ns
    assert read_onnx_metadata(onnx_file)["medseg.weights_sha256"] == file_digest(ckpt)
    assert predict(run_dir, cases, tmp_path / "o2", "--backend", "onnxruntime") == 0
    assert onnx_file.stat().st_mtime_ns == first  # reused, not exported again
    state = torch.load(ckpt, weights_only=True)  # "retrain" the fold: other weights
    state["model"] = {
        k: v * 1.01 if v.is_floating_point() else v for k, v in state["model"].items()
    }
    torch.save(state, ckpt)
    assert predict(run_dir, cases, tmp_path / "o3", "--backend", "onnxruntime") == 0
    assert onnx_file.stat().st_mtime_ns != first
    assert read_onnx_metadata(onnx_file)["medseg.weights_sha256"] == file_digest(ckpt)
    assert not [p.name for p in onnx_file.parent.iterdir() if p.name.startswith(".")]


def test_read_only_run_folder_exports_to_the_temp_cache(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx_cache.export_onnx

    def refuse_run_folder(model, plans, path, **kw):  # type: ignore[no-untyped-def]
        if run_dir in Path(path).parents:
            raise PermissionError(13, "Permission denied")
        return real(model, plans, path, **kw)

    monkeypatch.setattr(onnx_cache, "export_onnx", refuse_run_folder)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    before = hashes(run_dir)
    path = onnx_cache.cached_run_onnx(run_dir, 0)
    assert (
        path
        == tmp_path
        / "tmp"
        / "medseg-onnx"
        / f"{file_digest(run_dir / 'fold_0' / 'checkpoint_best.pt')}.onnx"
    )
    assert hashes(run_dir) == before
    assert onnx_cache.cached_run_onnx(run_dir, 0) == path  # found there next time


def test_bundle_ships_model_onnx_and_predicts_without_writing(
    run_dir: Path, cases: Path, torch_masks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medseg.bundle import export_bundle

    bundle = export_bundle(run_dir, tmp_path / "bundle", name="phantom")
    onnx_file = bundle / "models" / "model.onnx"
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["onnx"]["file"] == "models/model.onnx"
    assert read_onnx_metadata(onnx_file)["medseg.weights_sha256"] == file_digest(
        bundle / "models" / "model.pt"
    )
    assert onnx_plans(onnx_file) == Predictor.from_path(bundle, device="cpu").plans
    assert "--backend onnxruntime" in (bundle / "docs" / "README.md").read_text()
    before = hashes(bundle)
    assert predict(bundle, cases, tmp_path / "out", "--backend", "onnxruntime") == 0
    for name in ("a.nii.gz", "b.nii.gz"):
        ours = load_volume(tmp_path / "out" / name, allow_empty=True).array
        assert min_dice(ours, load_volume(torch_masks / name, allow_empty=True).array) >= 0.999
    onnx_file.unlink()  # a bundle without model.onnx (exported before it existed)
    before.pop("models/model.onnx")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert predict(bundle, cases, tmp_path / "out2", "--backend", "onnxruntime") == 0
    assert hashes(bundle) == before  # the bundle is never written
    assert len(list((tmp_path / "tmp" / "medseg-onnx").glob("*.onnx"))) == 1


def test_export_onnx_command(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "exported" / "model.onnx"
    assert main(["export-onnx", str(run_dir), str(out)]) == 0
    assert "patch [16, 16, 16]" in capsys.readouterr().out
    assert out.read_bytes() == (run_dir / "fold_0" / "model.onnx").read_bytes()  # the cache
    assert main(["export-onnx", str(run_dir), str(out)]) == 1
    assert "use --force" in capsys.readouterr().err
    assert main(["export-onnx", str(run_dir), str(out), "--force", "--fold", "0"]) == 0
    assert main(["export-onnx", str(run_dir), str(tmp_path / "m.onnx"), "--fold", "3"]) == 1
    assert "--fold 3: expected one of the trained folds [0]" in capsys.readouterr().err
    assert main(["export-onnx", str(run_dir), str(tmp_path / "m.pt")]) == 1
    assert "ending in .onnx" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.pt").exists()


def test_bad_backend_is_refused_naming_the_flag(
    run_dir: Path, cases: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert predict(run_dir, cases, tmp_path / "out", "--backend", "tensorrt") == 1
    err = capsys.readouterr().err
    assert "--backend" in err and "expected one of ['torch', 'onnxruntime', 'openvino']" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(MedsegError, match=r"infer\.backend: expected one of"):
        InferConfig(backend="onnx")  # type: ignore[arg-type]


def test_missing_runtime_says_how_to_install(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    cfg = InferConfig(device="cpu", backend="onnxruntime")
    with pytest.raises(MedsegError, match=r"--backend onnxruntime: expected the Python package"):
        Predictor.from_path(run_dir, config=cfg)
    assert not (run_dir / "fold_0" / "model.onnx").exists()  # refused before exporting


@pytest.mark.realdata
def test_hippocampus_parity(shared_data: Path, tmp_path: Path) -> None:
    """A UNet fitted briefly on two real hippocampus MRIs; two other cases: the ONNX runtimes'
    blended probabilities within 1e-4 of torch's and masks with Dice >= 0.999."""
    pytest.importorskip("openvino")
    root = shared_data / "msd_hippocampus"
    entries = json.loads((root / "dataset.json").read_text())["training"]
    paths = [(root / e["image"], root / e["label"]) for e in entries[:4]]
    plans = _hippocampus_plans()
    run = write_run(tmp_path / "run", plans, [_fit_on_cases(plans, paths[:2])])
    for image, label in paths[2:]:
        volume = load_volume(image)
        probs, masks = {}, {}
        for b in ("torch", "onnxruntime", "openvino"):
            cfg = InferConfig(device="cpu", accumulation="float32", postprocess="none", backend=b)  # type: ignore[arg-type]
            predictor = Predictor.from_path(run, config=cfg)
            probs[b] = predictor.network_probabilities(predictor.preprocess(volume))
            masks[b] = predictor.predict(volume).mask.array
        reference = load_volume(label).array
        assert min_dice(masks["torch"] > 0, reference > 0) > 0.3  # it learnt something
        for b in ("onnxruntime", "openvino"):
            assert float((probs[b] - probs["torch"]).abs().max()) <= TOL, b
            assert min_dice(masks[b], masks["torch"]) >= 0.999, b


def _hippocampus_plans() -> Plans:
    from medseg.planning.plans import NetworkSpec

    return Plans(
        modality="MRI",
        labels={0: "background", 1: "Anterior", 2: "Posterior"},
        target_spacing=(1.0, 1.0, 1.0),
        normalization="zscore_nonzero",
        patch_size=(32, 48, 32),
        batch_size=2,
        network=NetworkSpec(
            name="unet", channels=(8, 16, 32), strides=((2, 2, 2), (2, 2, 2)), num_res_units=1
        ),
    )


def _fit_on_cases(plans: Plans, paths: list[tuple[Path, Path]], steps: int = 60) -> torch.nn.Module:
    """The plans' UNet fitted on whole preprocessed cases, padded or cropped to the patch."""
    from monai.transforms import ResizeWithPadOrCrop

    from medseg.preprocessing.pipeline import preprocessing_transforms

    torch.manual_seed(0)
    xf = preprocessing_transforms(plans, keys=("image", "label"), load=False)
    fit = ResizeWithPadOrCrop(plans.patch_size)
    xs, ys = [], []
    for image, label in paths:
        d = xf(
            {
                "image": load_volume(image).to_metatensor(),
                "label": load_volume(label).to_metatensor(),
            }
        )
        xs.append(torch.as_tensor(fit(d["image"].as_tensor())))
        ys.append(torch.as_tensor(fit(d["label"].as_tensor()))[0].long())
    return fit_batch(plans, xs, ys, steps)

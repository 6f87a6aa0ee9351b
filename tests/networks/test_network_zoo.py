"""The networks of issue 22 part 2 (swinunetr, unetr, attentionunet, basicunetplusplus,
highresnet, deeplab), each through the whole chain: planned for a tiny phantom cohort,
trained one step by ``medseg.training.run.train``, predicted by ``Predictor``, exported as a
bundle whose own ``inference.json`` predicts the same; and the registry, the config literals,
planning's tables and ``medseg train --help`` agree.

By default each network trains one step and predicts in-process (about 2-8 s each on 2
idle cores); ``-m slow`` adds ``python -m monai.bundle run`` against ``medseg predict`` per
network (a subprocess each, ~15 s).
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import bundle_run_and_predict
from monai.bundle import ConfigParser

from medseg.bundle import export_bundle
from medseg.cli import main
from medseg.inference.config import InferConfig
from medseg.inference.predictor import Predictor
from medseg.io import load_volume
from medseg.networks import NETWORKS, build_network
from medseg.networks.registry import torchscript_mode
from medseg.planning import planner
from medseg.planning.config import ModelName, PlansConfig
from medseg.planning.plans import NetworkName, load_plans
from medseg.training.config import RunConfig, load_run_config
from medseg.training.run import train
from medseg.training.schedule import seed_epoch

# plans.channels for each network: about the smallest widths it builds
TINY = {
    "swinunetr": [12],  # feature_size 12 (the minimum), the rest follow
    "unetr": [4, 32],  # feature_size 4, ViT hidden size 32
    "attentionunet": [4, 8, 16],
    "basicunetplusplus": [4, 4, 8, 8, 16],
    "highresnet": [4, 4, 8, 8, 8],
    "deeplab": [4, 8, 16],
}
INFER = InferConfig(device="cpu", postprocess="none", overlap=0.25)


def _config(manifest: Path, cache: Path, name: str, **extra: Any) -> RunConfig:
    """One step of one fold; the patch and network are planned (no patch override)."""
    base: dict[str, Any] = {
        "data.manifest": str(manifest),
        "data.data_root": str(manifest.parent),
        "data.folds": 3,
        "data.cache_dir": str(cache),
        "plans.model": name,
        "plans.channels": TINY[name],
        # SwinUNETR's smallest patch is 64^3: one patch per step keeps its test at seconds
        "plans.batch_size": 1 if name == "swinunetr" else 2,
        "train.epochs": 1,
        "train.iterations_per_epoch": 1,
        "train.val_every": 1,
        "train.num_workers": 0,
        "train.threads": 1,
        "train.device": "cpu",
        "train.postprocess_decision": False,
        **extra,
    }
    return load_run_config(None, base)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One preprocessing cache for every network (the preprocessing plans are the same)."""
    return tmp_path_factory.mktemp("cache")


def _first_image(manifest: Path) -> Path:
    entry = json.loads(manifest.read_text())["training"][0]
    return (manifest.parent / entry["image"]).resolve()


def _bundle_predictor(bundle: Path) -> Predictor:
    """The predictor the bundle's ``inference.json`` builds (what ``monai.bundle run`` runs)."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "cpu"
    parser["overlap"] = INFER.overlap
    parser["postprocess"] = "none"
    parser.get_parsed_content("imports")
    predictor = parser.get_parsed_content("predictor")
    assert isinstance(predictor, Predictor)
    # network_def (what MONAI tools such as ckpt_export build) loads model.pt as well
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    return predictor


def _check_planned_patch(name: str, plans: Any) -> None:
    """The planned patch is one the network takes: a multiple of its total stride."""
    stride = np.prod(np.asarray(plans.network.strides), axis=0)
    assert not np.any(np.asarray(plans.patch_size) % stride), (plans.patch_size, stride)
    if name == "swinunetr":
        assert min(plans.patch_size) >= 64 and not np.any(np.asarray(plans.patch_size) % 32)
    if name == "unetr":
        assert plans.network.input_size == plans.patch_size
        assert not np.any(np.asarray(plans.patch_size) % 16)
    assert plans.network.deep_supervision == (name == "basicunetplusplus")


def _check_one_step(run: Path, plans: Any) -> None:
    """The step's loss is finite and it moved every trained weight to finite values."""
    log = (run / "fold_0" / "log.csv").read_text().splitlines()
    loss = float(log[1].split(",")[1])
    assert np.isfinite(loss) and loss > 0
    trained = torch.load(run / "fold_0" / "checkpoint_last.pt", weights_only=True)["model"]
    seed_epoch(0, -1, None)  # the initial weights, as FoldTrainer builds them
    init = build_network(plans.network, 1, plans.num_classes).state_dict()
    assert trained.keys() == init.keys()
    assert all(bool(torch.isfinite(v).all()) for v in trained.values())
    moved = [k for k, v in init.items() if v.is_floating_point() and not torch.equal(v, trained[k])]
    assert len(moved) > len(init) // 3, f"only {len(moved)} of {len(init)} tensors changed"


def _check_torchscript(bundle: Path, plans: Any) -> None:
    """metadata.json records the TorchScript method the registry claims, and it is true:
    a scripted model.ts computes what model.pt does at another input size too; a traced
    one at the patch, and the network indeed does not script."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    mode = torchscript_mode(plans.network)
    assert meta["torchscript"]["method"] == mode
    net = build_network(plans.network, 1, plans.num_classes).eval()
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    ts = torch.jit.load(str(bundle / "models" / "model.ts"))
    shape = list(plans.patch_size)
    if mode == "trace":
        assert meta["torchscript"]["input_shape"] == [1, 1, *shape]
        with pytest.raises(Exception):  # noqa: B017  # torch raises several types
            torch.jit.script(net)
    elif plans.network.name != "unetr":  # UNETR is built for one input size
        shape[0] += int(np.prod([s[0] for s in plans.network.strides]))
    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ts(x), net(x), atol=1e-4, rtol=1e-4)


@pytest.fixture
def no_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundle export without its ONNX step (30 s for SwinUNETR on 2 busy cores; the slow
    end-to-end test below keeps it)."""
    from medseg.bundle import export as export_mod

    skipped = {"method": "none", "reason": "skipped by the test"}
    monkeypatch.setattr(export_mod, "write_model_onnx", lambda *args, **kwargs: skipped)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", sorted(TINY))
def test_network_plans_trains_predicts_and_exports(
    name: str, tiny_cohort: Path, cache: Path, tmp_path: Path, no_onnx: None
) -> None:
    torch.set_num_threads(1)
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    train(_config(tiny_cohort, cache, name), run)
    plans = load_plans(run / "plans.json")
    assert plans.network.name == name
    _check_planned_patch(name, plans)
    _check_one_step(run, plans)

    image = load_volume(_first_image(tiny_cohort))
    predicted = Predictor.from_run(run, config=INFER).predict(image, with_probabilities=True)
    mask, probs = predicted.mask, predicted.probabilities
    assert mask.array.shape == image.array.shape
    np.testing.assert_allclose(mask.affine, image.affine)
    assert probs is not None and probs.array.shape == (plans.num_classes, *image.array.shape)
    total = np.asarray(probs.array, dtype=np.float32).sum(axis=0)
    np.testing.assert_allclose(total, 1.0, atol=1e-2)  # float16 class probabilities

    export_bundle(run, bundle, name=f"zoo_{name}")
    _check_torchscript(bundle, plans)
    again = _bundle_predictor(bundle).predict(image, with_probabilities=True)
    np.testing.assert_array_equal(again.mask.array, mask.array)
    assert again.probabilities is not None
    np.testing.assert_array_equal(again.probabilities.array, probs.array)


def test_registry_config_literals_and_planning_tables_agree() -> None:
    names = set(NETWORKS)
    assert set(typing.get_args(NetworkName)) == names
    assert set(typing.get_args(ModelName)) == names | {"auto"}
    assert set(planner._WIDTHS) == names
    assert set(planner._MAX_POOLS) == names
    assert set(TINY) <= names


def test_train_help_lists_every_network_with_the_fields_it_reads(
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["train", "--help"]) == 0
    # rich wraps lines inside box borders: compare the words
    text = " ".join(re.sub("[\u2500-\u257f]", " ", capsys.readouterr().out).split())
    for name, entry in NETWORKS.items():
        assert f"{name}: {entry.summary}" in text, name
        assert f"Reads: {' '.join(entry.honours.split())}." in text, name
    assert "vnet ignores plans.channels" in text


@pytest.mark.parametrize("channels", [[16], [4, 8, 18]])
def test_planning_refuses_widths_the_network_cannot_build(channels: list[int]) -> None:
    from medseg.errors import MedsegError
    from medseg.planning.fingerprint import Fingerprint

    name = "swinunetr" if len(channels) == 1 else "deeplab"
    fp = Fingerprint(
        modality="MR",
        labels={"0": "background", "1": "organ"},
        case_ids=["a", "b"],
        spacings=[[1.0, 1.0, 1.0]] * 2,
        shapes=[[40, 40, 40]] * 2,
        intensity={"mean": 0.0, "std": 1.0, "p00_5": 0.0, "p99_5": 1.0, "min": 0, "max": 1},
        class_fractions={"0": 0.9, "1": 0.1},
    )
    with pytest.raises(MedsegError, match=r"plans\.channels"):
        planner.plan(fp, "cpu", PlansConfig(model=name, channels=tuple(channels)))  # type: ignore[arg-type]


def test_transformer_patch_is_shrunk_back_into_the_budget() -> None:
    """A 67^3 fit rounds up to 96^3 for SwinUNETR (3.4x the voxels); planning takes whole
    32-voxel steps off the physically longest axes until the patch budget holds again."""
    from medseg.planning.fingerprint import Fingerprint

    fp = Fingerprint(
        modality="MR",
        labels={"0": "background", "1": "organ"},
        case_ids=["a", "b"],
        spacings=[[1.0, 1.0, 1.0]] * 2,
        shapes=[[200, 200, 200]] * 2,
        intensity={"mean": 0.0, "std": 1.0, "p00_5": 0.0, "p99_5": 1.0, "min": 0, "max": 1},
        class_fractions={"0": 0.9, "1": 0.1},
    )
    swin = planner.plan(fp, "cpu", PlansConfig(model="swinunetr"))
    assert swin.patch_size == (64, 64, 64)
    assert np.prod(swin.patch_size) <= planner.CPU_PATCH_VOXELS
    unetr = planner.plan(fp, "cpu", PlansConfig(model="unetr"))
    assert np.prod(unetr.patch_size) <= planner.CPU_PATCH_VOXELS
    assert unetr.network.input_size == unetr.patch_size
    assert not np.any(np.asarray(unetr.patch_size) % 16)


def test_a_network_that_neither_scripts_nor_traces_exports_without_model_ts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    no_onnx: None,
) -> None:
    """model.ts is optional: the bundle records why it is absent and still predicts."""
    import monai.networks.utils
    from tiny_run import SHAPE, SPACING, make_tiny_run

    from medseg.data.synthetic import make_ct_phantom

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("not supported here")

    run = make_tiny_run(tmp_path / "run", steps=2)
    monkeypatch.setattr(monai.networks.utils, "convert_to_torchscript", fail)
    monkeypatch.setattr(torch.jit, "trace", fail)
    bundle = export_bundle(run, tmp_path / "bundle", name="no_ts")
    assert not (bundle / "models" / "model.ts").exists()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["torchscript"] == {"method": "none", "reason": "RuntimeError: not supported here"}
    assert "no models/model.ts written" in caplog.text
    monkeypatch.undo()
    image, _ = make_ct_phantom(SHAPE, SPACING, seed=3)
    mask = Predictor.from_run(run, config=INFER).predict(image).mask.array
    assert np.count_nonzero(mask)  # the tiny run's network segments something
    np.testing.assert_array_equal(_bundle_predictor(bundle).predict(image).mask.array, mask)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", sorted(TINY))
def test_monai_bundle_run_equals_medseg_predict(
    name: str, tiny_cohort: Path, cache: Path, tmp_path: Path
) -> None:
    """End to end per network: train, export, ``python -m monai.bundle run`` (a fresh process
    that parses inference.json) writes the masks ``medseg predict --model BUNDLE`` writes."""
    torch.set_num_threads(1)
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    train(_config(tiny_cohort, cache, name, **{"train.iterations_per_epoch": 3}), run)
    export_bundle(run, bundle, name=f"zoo_{name}")
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "case.nii.gz").symlink_to(_first_image(tiny_cohort))
    out_bundle, out_medseg = bundle_run_and_predict(bundle, scans, tmp_path, timeout=600)
    a, b = nib.load(out_bundle / "case.nii.gz"), nib.load(out_medseg / "case.nii.gz")
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_allclose(a.affine, b.affine)

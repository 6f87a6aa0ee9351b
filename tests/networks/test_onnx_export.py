"""ONNX export: the preprocessing contract in the metadata, runtime parity with torch, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from multichannel_run import two_channel_plans

import medseg
from medseg.errors import MedsegError
from medseg.networks.onnx_export import (
    MainOutput,
    export_onnx,
    is_current,
    onnx_plans,
    read_onnx_metadata,
)
from medseg.networks.registry import build_network
from medseg.planning.plans import NetworkSpec, Plans

pytest.importorskip("onnx")

TOL = 1e-4  # the parity bound (probabilities); logits are checked against it too


def _runtime(backend: str, path: Path) -> torch.nn.Module:
    from medseg.networks.onnx_backend import OnnxRuntimeModel, OpenVinoModel

    pytest.importorskip(backend)
    cls = OnnxRuntimeModel if backend == "onnxruntime" else OpenVinoModel
    return cls(path, threads=1)


@pytest.fixture(scope="module")
def exported(
    tiny_net: tuple[Plans, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    plans, net = tiny_net
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(net, plans, path, weights_sha256="0123456789abcdef")


def test_metadata_holds_the_preprocessing_contract(
    exported: Path, tiny_net: tuple[Plans, torch.nn.Module]
) -> None:
    plans = tiny_net[0]
    assert onnx_plans(exported) == plans  # medseg.plans parses back to the same plans
    meta = read_onnx_metadata(exported)
    assert meta["target_spacing"] == list(plans.target_spacing)
    assert meta["orientation"] == "RAS"
    assert meta["channel_names"] == ["MR"]
    assert meta["normalization"] == [
        {
            "channel": 0,
            "modality": "MR",
            "scheme": "zscore_nonzero",
            "clip": None,
            "mean": None,
            "std": None,
        }
    ]
    assert meta["labels"] == {"0": "background", "1": "organ", "2": "core"}
    assert meta["patch_size"] == list(plans.patch_size)
    assert meta["mirror_axes"] == list(plans.mirror_axes)
    assert meta["medseg.version"] == medseg.__version__
    assert meta["medseg.weights_sha256"] == "0123456789abcdef"
    assert is_current(exported, "0123456789abcdef")
    assert not is_current(exported, "fedcba9876543210")


def test_two_channel_metadata_lists_each_channel(tmp_path: Path) -> None:
    plans = two_channel_plans()
    net = build_network(plans.network, 2, plans.num_classes).eval()
    path = export_onnx(net, plans, tmp_path / "ct_pet.onnx")
    meta = read_onnx_metadata(path)
    assert meta["channel_names"] == ["CT", "PET"]
    ct, pet = meta["normalization"]
    assert (ct["scheme"], ct["clip"], ct["mean"], ct["std"]) == ("ct", [-100.0, 200.0], 40.0, 50.0)
    assert (pet["modality"], pet["scheme"], pet["clip"]) == ("PET", "zscore", None)
    assert onnx_plans(path) == plans
    x = torch.randn(2, 2, 16, 16, 16)
    with torch.no_grad():
        ref = net(x)
    got = _runtime("onnxruntime", path)(x)
    assert float((got - ref).abs().max()) <= TOL


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_logits_and_probabilities_match_torch(
    exported: Path, tiny_net: tuple[Plans, torch.nn.Module], backend: str
) -> None:
    """A batch of 3 patch windows (the batch axis is dynamic): logits and softmax vs torch."""
    net = tiny_net[1]
    model = _runtime(backend, exported)
    x = torch.randn(3, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)) * 2
    with torch.inference_mode():
        ref = net(x)
        got = model(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert float((got - ref).abs().max()) <= TOL * max(1.0, float(ref.abs().max()))
    diff = (torch.softmax(got, 1) - torch.softmax(ref, 1)).abs().max()
    assert float(diff) <= TOL


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_wrong_window_shape_is_a_clear_error(exported: Path, backend: str) -> None:
    model = _runtime(backend, exported)
    with pytest.raises(MedsegError, match=r"expected an input of shape \['?\??'?, 1, 16, 16, 16\]"):
        model(torch.zeros(1, 1, 16, 16, 8))


def test_deep_supervision_network_exports_its_main_output(tmp_path: Path) -> None:
    spec = NetworkSpec(
        name="dynunet",
        channels=(4, 8, 16),
        strides=((2, 2, 2), (2, 2, 2)),
        deep_supervision=True,
        num_res_units=0,
    )
    plans = Plans("MR", {0: "bg", 1: "fg"}, (1.0,) * 3, "zscore", (16, 16, 16), 2, spec)
    net = build_network(spec, 1, 2)
    net.train()
    assert isinstance(net(torch.zeros(1, 1, 16, 16, 16)), torch.Tensor | list | tuple)
    net.eval()
    path = export_onnx(net, plans, tmp_path / "dyn.onnx")
    assert net.training is False  # the caller's network is left as it was
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        ref = MainOutput(net)(x)
    got = _runtime("onnxruntime", path)(x)
    assert got.shape == (2, 2, 16, 16, 16)
    assert float((got - ref).abs().max()) <= TOL


def test_dynamic_spatial_export_takes_other_sizes(
    tiny_net: tuple[Plans, torch.nn.Module], tmp_path: Path
) -> None:
    plans, net = tiny_net
    path = export_onnx(net, plans, tmp_path / "dyn.onnx", dynamic_spatial=True)
    x = torch.randn(1, 1, 24, 16, 32)
    with torch.no_grad():
        ref = net(x)
    assert float((_runtime("onnxruntime", path)(x) - ref).abs().max()) <= TOL


def test_not_an_onnx_file_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage, not a protobuf\xff" * 10)
    with pytest.raises(MedsegError, match="expected an ONNX model file") as err:
        read_onnx_metadata(bad)
    assert err.value.path == str(bad)
    with pytest.raises(MedsegError, match="found no file"):
        read_onnx_metadata(tmp_path / "missing.onnx")
    assert not is_current(bad, "0123456789abcdef")  # a broken cache file is exported again


def test_export_without_onnx_says_how_to_install(
    tiny_net: tuple[Plans, torch.nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(MedsegError, match=r"expected the Python package 'onnx' \(pip install"):
        export_onnx(tiny_net[1], tiny_net[0], tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


class _Broken(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("this network cannot be traced")


def test_failed_export_names_the_network_and_leaves_no_file(
    tiny_net: tuple[Plans, torch.nn.Module], tmp_path: Path
) -> None:
    with pytest.raises(MedsegError, match=r"expected unet to export at input \[1, 1, 16, 16, 16\]"):
        export_onnx(_Broken(), tiny_net[0], tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())

"""Runtime settings of the ONNX backends: ONNX Runtime optimisation levels, OpenVINO's
execution mode and its float32 precision, and the errors for unknown settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.errors import MedsegError
from medseg.planning.plans import Plans

pytest.importorskip("onnx")

TOL = 1e-4


@pytest.fixture(scope="module")
def exported(
    tiny_net: tuple[Plans, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from medseg.networks.onnx_export import export_onnx

    plans, net = tiny_net
    return export_onnx(net, plans, tmp_path_factory.mktemp("onnx") / "model.onnx")


def _windows() -> torch.Tensor:
    return torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1)) * 2


@pytest.mark.parametrize("level", ["all", "extended", "basic", "disable"])
def test_every_onnxruntime_optimisation_level_matches_torch(
    exported: Path, tiny_net: tuple[Plans, torch.nn.Module], level: str
) -> None:
    pytest.importorskip("onnxruntime")
    from medseg.networks.onnx_backend import OnnxRuntimeModel

    x = _windows()
    with torch.inference_mode():
        ref = tiny_net[1](x)
        got = OnnxRuntimeModel(exported, threads=1, optimization=level)(x)
    assert float((got - ref).abs().max()) <= TOL * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("mode", ["PERFORMANCE", "ACCURACY"])
def test_openvino_runs_in_float32_in_either_execution_mode(
    exported: Path, tiny_net: tuple[Plans, torch.nn.Module], mode: str
) -> None:
    pytest.importorskip("openvino")
    from medseg.networks.onnx_backend import OpenVinoModel

    model = OpenVinoModel(exported, threads=1, execution_mode=mode)
    assert model.inference_precision == "f32"
    x = _windows()
    with torch.inference_mode():
        ref = tiny_net[1](x)
        got = model(x)
    assert float((got - ref).abs().max()) <= TOL * max(1.0, float(ref.abs().max()))


def test_unknown_runtime_settings_are_clear_errors(exported: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from medseg.networks.onnx_backend import OnnxRuntimeModel, OpenVinoModel

    with pytest.raises(MedsegError, match=r"expected one of \['all'.*found 'fast'"):
        OnnxRuntimeModel(exported, optimization="fast")
    with pytest.raises(MedsegError, match=r"expected one of \['PERFORMANCE'.*found 'fast'"):
        OpenVinoModel(exported, execution_mode="fast")

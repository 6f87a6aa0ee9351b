"""ONNX Runtime and OpenVINO as inference backends with the ``nn.Module`` call contract.

:class:`OnnxRuntimeModel` and :class:`OpenVinoModel` take a torch tensor
``(B, C, X, Y, Z)`` (RAS, preprocessed) and return logits ``(B, classes, X, Y, Z)`` float32
on the input's device, like the torch network they were exported from, so
:mod:`medseg.inference.sliding` calls them unchanged (mirror TTA, fold ensembles). Both run
on the CPU. They are ``nn.Module`` subclasses without parameters: ``.to()`` and ``.eval()``
are no-ops. :func:`backend_models` builds them from :func:`~medseg.networks.loading.load_models`
output, exporting each network once (:mod:`medseg.networks.onnx_cache`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.networks.loading import LoadedModels
from medseg.networks.onnx_export import INPUT_NAME, require

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino")


def _threads(threads: int) -> int:
    """``threads`` (> 0), or torch's intra-op thread count (all physical cores unless set)."""
    return threads if threads > 0 else torch.get_num_threads()


def _as_array(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


class _RuntimeModel(nn.Module):
    """Shared part: input checks against the exported shape, numpy in, torch out."""

    def __init__(self, path: str | Path, shape: list[Any]) -> None:
        super().__init__()
        self.path = Path(path)
        #: exported input shape; ints are fixed axes, anything else is dynamic
        self.input_shape = shape

    def _check(self, x: torch.Tensor) -> None:
        want = self.input_shape
        found = tuple(x.shape)
        fixed = [(i, n) for i, n in enumerate(want) if isinstance(n, int) and n > 0]
        if len(found) != len(want) or any(found[i] != n for i, n in fixed):
            shown = ["?" if not (isinstance(n, int) and n > 0) else n for n in want]
            raise MedsegError(
                f"ONNX model: expected an input of shape {shown} (B, C, X, Y, Z), found "
                f"{list(found)}",
                self.path,
            )

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, classes, X, Y, Z)`` float32 of ``x`` ``(B, C, X, Y, Z)``, on its device."""
        self._check(x)
        out = self.run(_as_array(x))
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


class OnnxRuntimeModel(_RuntimeModel):
    """An ONNX file run by ONNX Runtime's CPU execution provider.

    Parameters
    ----------
    path
        The ``.onnx`` file (input ``(B, C, X, Y, Z)`` float32, one output: logits).
    threads
        Intra-op threads; 0: as many as torch uses (``torch.get_num_threads()``).
    """

    def __init__(self, path: str | Path, *, threads: int = 0) -> None:
        ort = require("onnxruntime", "--backend onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _threads(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between runs: the sliding window runs torch ops (blending,
        # softmax, flips) between forwards, and spinning ORT threads take their cores.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise MedsegError(
                f"--backend onnxruntime: expected an ONNX model, found one ONNX Runtime cannot "
                f"load ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                path,
            ) from exc
        super().__init__(path, list(session.get_inputs()[0].shape))
        self.session = session

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits of ``x`` ``(B, C, X, Y, Z)`` float32."""
        return np.asarray(self.session.run(None, {INPUT_NAME: x})[0])


class OpenVinoModel(_RuntimeModel):
    """An ONNX file compiled by OpenVINO for the CPU, in float32.

    OpenVINO's CPU plugin would otherwise pick bfloat16 on CPUs with AVX512-BF16 (its default
    ``INFERENCE_PRECISION_HINT``), about 3e-2 off the float32 logits on a tiny UNet.

    Parameters
    ----------
    path
        The ``.onnx`` file.
    threads
        Inference threads; 0: as many as torch uses (``torch.get_num_threads()``).
    """

    def __init__(self, path: str | Path, *, threads: int = 0) -> None:
        ov = require("openvino", "--backend openvino")
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": _threads(threads),
            "PERFORMANCE_HINT": "LATENCY",
        }
        try:
            model = core.read_model(str(path))
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise MedsegError(
                f"--backend openvino: expected an ONNX model, found one OpenVINO cannot "
                f"compile ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                path,
            ) from exc
        shape = [
            d.get_length() if d.is_static else "?" for d in model.inputs[0].get_partial_shape()
        ]
        super().__init__(path, shape)
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits of ``x`` ``(B, C, X, Y, Z)`` float32."""
        # copy: the request's output buffer is reused by the next call
        return np.array(self.request.infer({0: x})[0], copy=True)


def backend_models(loaded: LoadedModels, backend: str, *, threads: int = 0) -> list[nn.Module]:
    """The networks of ``loaded`` on ``backend``, one per fold, in order.

    ``"torch"`` returns ``loaded.models``; ``"onnxruntime"`` and ``"openvino"`` export each
    network to ONNX once (cached in the run folder, see :mod:`medseg.networks.onnx_cache`)
    and wrap the file.

    Raises
    ------
    MedsegError
        For an unknown backend or a runtime that is not installed.
    """
    if backend == "torch":
        return list(loaded.models)
    wrappers = {"onnxruntime": OnnxRuntimeModel, "openvino": OpenVinoModel}
    if backend not in wrappers:
        raise MedsegError(f"--backend: expected one of {list(BACKENDS)}, found {backend!r}")
    require("onnxruntime" if backend == "onnxruntime" else "openvino", f"--backend {backend}")
    from medseg.networks.onnx_cache import onnx_files

    paths = onnx_files(loaded)
    return [wrappers[backend](p, threads=threads) for p in paths]

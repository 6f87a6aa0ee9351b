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
from collections.abc import Callable
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
#: ONNX Runtime graph optimisation levels, by name (``OnnxRuntimeModel(optimization=...)``)
ORT_OPTIMIZATION: tuple[str, ...] = ("all", "extended", "basic", "disable")
#: OpenVINO ``EXECUTION_MODE_HINT`` values (``OpenVinoModel(execution_mode=...)``)
OV_EXECUTION_MODES: tuple[str, ...] = ("PERFORMANCE", "ACCURACY")


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
    optimization
        Graph optimisation level, one of :data:`ORT_OPTIMIZATION` (``"all"``: every
        fusion, including layout changes). The four levels gave bit-identical probabilities
        on the CT phantom and hippocampus cases of ``benchmarks/onnx_backends.py``.
    """

    def __init__(self, path: str | Path, *, threads: int = 0, optimization: str = "all") -> None:
        ort = require("onnxruntime", "--backend onnxruntime")
        levels = ort.GraphOptimizationLevel
        level = {
            "all": levels.ORT_ENABLE_ALL,
            "extended": levels.ORT_ENABLE_EXTENDED,
            "basic": levels.ORT_ENABLE_BASIC,
            "disable": levels.ORT_DISABLE_ALL,
        }
        if optimization not in level:
            raise MedsegError(
                f"ONNX Runtime optimisation: expected one of {list(level)}, found {optimization!r}"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _threads(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = level[optimization]
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

    ``INFERENCE_PRECISION_HINT`` is set to ``f32``: the CPU plugin would otherwise pick bfloat16
    on CPUs with AVX512-BF16, about 3e-2 off the float32 logits on a tiny UNet
    (:attr:`inference_precision` reads back what the compiled model runs in).

    Even in float32 its kernels are less exact than torch's or ONNX Runtime's: against the
    same network in float64, max |logit error| 7e-4 to 2.6e-3 (torch 1-2e-5, ONNX Runtime
    6e-5 to 1.4e-4), largest in windows of nearly uniform tissue, where instance norm
    divides by a small spread; blended probabilities differ from torch's by up to 3.3e-4 on CT
    phantoms (0.1-0.3 % of voxels above 1e-4) and 3.7e-5 on a hippocampus case.
    ``EXECUTION_MODE_HINT=ACCURACY``, denormal handling, static shapes and one thread change
    none of it (``benchmarks/onnx_backends.py``; OpenVINO 2026.4, 2-core AMD EPYC Zen 3).

    Parameters
    ----------
    path
        The ``.onnx`` file.
    threads
        Inference threads; 0: as many as torch uses (``torch.get_num_threads()``).
    execution_mode
        ``EXECUTION_MODE_HINT``, one of :data:`OV_EXECUTION_MODES`.
    """

    def __init__(
        self, path: str | Path, *, threads: int = 0, execution_mode: str = "PERFORMANCE"
    ) -> None:
        ov = require("openvino", "--backend openvino")
        if execution_mode not in OV_EXECUTION_MODES:
            raise MedsegError(
                f"OpenVINO execution mode: expected one of {list(OV_EXECUTION_MODES)}, found "
                f"{execution_mode!r}"
            )
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "EXECUTION_MODE_HINT": execution_mode,
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

    @property
    def inference_precision(self) -> str:
        """The precision the compiled model runs in, as OpenVINO reports it (``"f32"``)."""
        value = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        name = getattr(value, "get_type_name", None)  # an openvino.Type
        return str(name() if callable(name) else value)

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
    wrappers: dict[str, Callable[..., nn.Module]] = {
        "onnxruntime": OnnxRuntimeModel,
        "openvino": OpenVinoModel,
    }
    if backend not in wrappers:
        raise MedsegError(f"--backend: expected one of {list(BACKENDS)}, found {backend!r}")
    require("onnxruntime" if backend == "onnxruntime" else "openvino", f"--backend {backend}")
    from medseg.networks.onnx_cache import onnx_files

    paths = onnx_files(loaded)
    return [wrappers[backend](p, threads=threads) for p in paths]

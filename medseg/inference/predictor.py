"""``Predictor``: a trained run (or bundle) that turns a scan into a mask on the scan's own grid.

A volume is one scan ``(I, J, K)`` for a one-channel model, or ``(C, I, J, K)`` with
``C == plans.in_channels`` (channels on channel 0's grid, as
:func:`medseg.io.channels.load_channels` reads them); the mask is on that grid.

Pipeline per volume: the run's preprocessing (``medseg.preprocessing.pipeline``:
orientation to RAS, foreground crop, normalisation, resampling to the plans' spacing) ->
sliding-window probabilities averaged over folds and mirrorings -> mapping back to the
source grid by world coordinates with a slab-wise argmax -> post-processing decided after
training (morphology, dense CRF) -> a label :class:`~medseg.io.Volume` whose affine is the
source scan's, bit for bit.

Examples
--------
>>> predictor = Predictor.from_run("runs/liver", folds=(0, 1))  # doctest: +SKIP
>>> mask = predictor(load_volume("ct.nii.gz"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.inference.config import InferConfig
from medseg.inference.postprocess_options import (
    describe_postprocessing,
    needs_probabilities,
    with_crf_override,
)
from medseg.inference.sliding import (
    probabilities_in_box,
    resample_to_source,
    sliding_probabilities,
)
from medseg.io.volume import Volume
from medseg.networks.loading import LoadedModels, load_models
from medseg.planning.configurations import is_auto_run
from medseg.planning.plans import Plans
from medseg.preprocessing.body_crop import crop_to_body
from medseg.preprocessing.pipeline import preprocessing_transforms
from medseg.preprocessing.streamed import apply_preprocessing
from medseg.runtime.device import resolve_device

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """Result of one volume.

    Attributes
    ----------
    mask
        Label map ``(I, J, K)`` (uint8/uint16) with the source volume's affine (RAS, mm).
    probabilities
        Class probabilities ``(C, I, J, K)`` float16 on the source grid, when requested.
    timings
        Seconds per stage (``preprocess``, ``inference``, ``resample``, ``postprocess``).
    postprocessing
        The post-processing that was applied (JSON-ready), ``{}`` for none.
    """

    mask: Volume
    probabilities: Volume | None = None
    timings: dict[str, float] = field(default_factory=dict)
    postprocessing: dict[str, Any] = field(default_factory=dict)


@dataclass
class Preprocessed:
    """A preprocessed image ``(C, X, Y, Z)`` (RAS, plans spacing) and its voxel-to-RAS affine.

    ``image`` is float32, or float16 when the probability map will be accumulated in float16.
    """

    image: torch.Tensor
    affine: np.ndarray
    seconds: float


class Predictor:
    """Segment volumes with a trained ensemble; outputs overlay their inputs exactly.

    Parameters
    ----------
    models
        Networks in eval mode, mapping ``(B, plans.in_channels, X, Y, Z)`` to logits
        ``(B, classes, X, Y, Z)``.
    plans
        The plans the networks were trained with (preprocessing, patch size, labels).
    config
        Inference options.
    postprocessing
        A ``medseg.postprocessing`` configuration to apply after the argmax, or ``None``.
    identity
        JSON-ready description of the model (written into every sidecar).
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        plans: Plans,
        *,
        config: InferConfig | None = None,
        postprocessing: Any | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.config = config or InferConfig()  # an InferConfig validates itself when built
        if not models:
            raise MedsegError("a Predictor needs at least one network")
        self.device = resolve_device(self.config.device)
        self.models = [m.to(self.device).eval() for m in models]
        self.plans = plans
        self.postprocessing = postprocessing
        self.identity = identity or {}
        self._transforms = preprocessing_transforms(plans, keys=("image",), load=False)
        if self.config.tta and not plans.mirror_axes:
            logger.warning(
                "--tta has no effect: the model was trained without mirroring "
                "(plans.mirror_axes is empty, e.g. for left/right-specific labels)"
            )

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_loaded(cls, loaded: LoadedModels, config: InferConfig | None = None) -> Predictor:
        """Build from :func:`medseg.networks.loading.load_models` output.

        ``config.backend`` other than ``torch`` runs each network's ONNX export (exported
        once, :func:`medseg.networks.onnx_backend.backend_models`) on the CPU.
        """
        config = config or InferConfig()
        post = loaded.postprocessing if config.postprocess == "auto" else None
        post = with_crf_override(post, config.crf)
        models = loaded.models
        if config.backend != "torch":
            from medseg.networks.onnx_backend import backend_models

            if resolve_device(config.device).type != "cpu":
                logger.warning("--backend %s runs on the CPU (--device cpu)", config.backend)
                config = dataclasses.replace(config, device="cpu")
            models = backend_models(loaded, config.backend)
        return cls(
            models,
            loaded.plans,
            config=config,
            postprocessing=post,
            identity=loaded.identity,
        )

    @classmethod
    def from_run(
        cls,
        path: str | Path,
        *,
        folds: Sequence[int] | None = None,
        device: str = "auto",
        config: InferConfig | None = None,
    ) -> Predictor:
        """Load a run directory (``plans.json``, ``fold_<k>/checkpoint_best.pt``).

        ``folds`` (default: every trained fold) and ``device`` override ``config``.
        """
        return cls.from_path(path, folds=folds, device=device, config=config, kind="run")

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        *,
        folds: Sequence[int] | None = None,
        device: str | None = None,
        config: InferConfig | None = None,
        kind: str | None = None,
    ) -> Predictor:
        """Load a run directory or a MONAI bundle directory (``configs/``, ``models/``).

        The top folder of a ``--configuration auto`` run gives its chosen configuration's
        predictor, or an :class:`medseg.inference.ensemble.EnsemblePredictor`.
        """
        config = config or InferConfig()
        if folds is not None:
            config = dataclasses.replace(config, folds=tuple(int(f) for f in folds))
        if device is not None:
            config = dataclasses.replace(config, device=device)
        if kind in (None, "run") and is_auto_run(Path(path)):
            from medseg.inference.ensemble import predictor_for_auto_run  # it builds on this

            return predictor_for_auto_run(Path(path), config)
        target = resolve_device(config.device)
        loaded = load_models(
            path, folds=config.folds, which=config.checkpoint, device=target, kind=kind
        )
        return cls.from_loaded(loaded, config)

    # ----------------------------------------------------------------- properties
    @property
    def label_names(self) -> dict[int, str]:
        """``{value: name}`` of the output labels, background included."""
        return dict(self.plans.labels)

    @property
    def body_crop(self) -> bool:
        """Whether scans are cropped to the body first (``InferConfig.body_crop``; auto: every
        channel ``ct``-normalised)."""
        if self.config.body_crop != "auto":
            return bool(self.config.body_crop)
        # Only when every channel is normalised with fixed (cohort) statistics: a channel
        # normalised per image (PET z-score, MRI) would get the crop's statistics instead of
        # the whole scan's, which training saw (a CT+PET phantom: mean tumour PET z-score 7.48
        # on the whole scan, 5.01 on the crop).
        return all(c.normalization == "ct" for c in self.plans.channel_plans)

    @property
    def num_classes(self) -> int:
        """Output channels (background included)."""
        return self.plans.num_classes

    # ----------------------------------------------------------------- pipeline
    def check_channels(self, volume: Volume) -> None:
        """Raise :class:`MedsegError` naming the file unless ``volume`` has the model's channels.

        A one-channel model takes ``(I, J, K)`` (or ``(1, I, J, K)``); a model of ``C``
        channels ``(C, I, J, K)``.
        """
        shape = tuple(volume.array.shape)
        n, names = self.plans.in_channels, ", ".join(self.plans.channel_names)
        found = 1 if len(shape) == 3 else shape[0] if len(shape) == 4 else None
        if found == n:
            return
        want = "a 3D scan (I, J, K)" if n == 1 else f"(C, I, J, K) with C = {n}"
        what = f"{found} channel(s)" if found is not None else f"{len(shape)} dimensions"
        raise MedsegError(
            f"expected {want}: the model takes {n} input channel(s) ({names}), found {what} "
            f"(shape {shape})",
            volume.path,
        )

    def preprocess(self, volume: Volume) -> Preprocessed:
        """Apply the run's preprocessing to a scan (RAS, cropped, normalised, resampled).

        ``volume`` is ``(I, J, K)`` or ``(C, I, J, K)``, see :meth:`check_channels`.
        """
        self.check_channels(volume)
        start = time.perf_counter()
        if self.body_crop:
            # only the body is preprocessed and segmented; resample_to_source maps the result
            # back onto the whole scan by world coordinates (background outside the box)
            volume, _ = crop_to_body(volume)
        with torch.no_grad():
            # the plans' pipeline, its final resampling done by output slabs (bounded memory)
            out, affine = apply_preprocessing(
                self._transforms, volume.to_metatensor(), slab_mvox=self.config.slab_mvox
            )
        # Stored in the accumulation dtype right away: no float32 copy stays alive during
        # inference when the map is accumulated in float16.
        image = out.to(self._accumulation_dtype(out.shape[1:]))
        del out
        return Preprocessed(image=image, affine=affine, seconds=time.perf_counter() - start)

    def _accumulation_dtype(self, shape: Sequence[int]) -> torch.dtype:
        mode = self.config.accumulation
        if mode == "auto":
            size = self.num_classes * float(np.prod(shape)) / 1e6
            mode = "float16" if size > self.config.fp16_threshold_mvox else "float32"
        return torch.float16 if mode == "float16" else torch.float32

    def network_probabilities(self, pre: Preprocessed) -> torch.Tensor:
        """Blended class probabilities ``(classes, X, Y, Z)`` on the preprocessed grid."""
        cfg = self.config
        return sliding_probabilities(
            pre.image,
            self.models,
            self.plans.patch_size,
            overlap=cfg.overlap,
            sw_batch_size=cfg.sw_batch_size,
            sigma_scale=cfg.sigma_scale,
            tta=cfg.tta,
            tta_axes=self.plans.mirror_axes,
            device=self.device,
            dtype=self._accumulation_dtype(pre.image.shape[1:]),
        )

    def predict(
        self,
        volume: Volume,
        *,
        preprocessed: Preprocessed | None = None,
        with_probabilities: bool = False,
    ) -> Prediction:
        """Segment ``volume``; see :class:`Prediction`.

        Parameters
        ----------
        volume
            Scan ``(I, J, K)``, or ``(C, I, J, K)`` for a model of ``C`` channels (on channel
            0's grid), with a voxel-to-RAS affine, in any orientation. The mask is on this
            grid.
        preprocessed
            The output of :meth:`preprocess` for this volume, if already computed.
        with_probabilities
            Also return class probabilities on the source grid (float16).
        """
        timings: dict[str, float] = {}
        pre = preprocessed or self.preprocess(volume)
        timings["preprocess"] = pre.seconds
        t = time.perf_counter()
        probs = self.network_probabilities(pre)
        timings["inference"] = time.perf_counter() - t
        t = time.perf_counter()
        labels, full = resample_to_source(
            probs,
            pre.affine,
            volume.affine,
            volume.spatial_shape,
            slab_mvox=self.config.slab_mvox,
            return_probabilities=with_probabilities,
        )
        timings["resample"] = time.perf_counter() - t
        t = time.perf_counter()
        # The CRF reads probabilities on the source grid tile by tile, resampled on demand from
        # the preprocessed map (which ``source`` keeps alive only until the CRF is done): they
        # are never held for the whole source grid and every class at once.
        source = full if full is not None else self._probability_source(probs, pre, volume)
        del probs
        labels = self._refine_crf(labels, volume, source)
        del source
        labels, applied = self._postprocess(labels, volume)
        timings["postprocess"] = time.perf_counter() - t
        return self._result(labels, volume, full if with_probabilities else None, timings, applied)

    def _result(
        self,
        labels: np.ndarray,
        volume: Volume,
        full: np.ndarray | None,
        timings: dict[str, float],
        applied: dict[str, Any],
    ) -> Prediction:
        """The :class:`Prediction` of ``labels`` (and probabilities ``full``) on ``volume``'s
        grid."""
        meta = {"labels": self.label_names, "is_image": False}
        mask = Volume(labels, volume.affine, path=None, meta={**volume.meta, **meta})
        prob_vol = None
        if full is not None:
            prob_vol = Volume(full, volume.affine, meta={"labels": self.label_names})
        return Prediction(mask, prob_vol, timings, applied)

    def _probability_source(
        self, probs: torch.Tensor, pre: Preprocessed, volume: Volume
    ) -> Callable[[tuple[slice, ...]], np.ndarray] | None:
        """``box -> (C, *box shape)`` float16 probabilities on the source grid, if the CRF runs."""
        if not needs_probabilities(self.postprocessing):
            return None
        return functools.partial(
            probabilities_in_box,
            probs,
            pre.affine,
            volume.affine,
            slab_mvox=self.config.slab_mvox,
        )

    def _refine_crf(
        self,
        labels: np.ndarray,
        volume: Volume,
        probabilities: np.ndarray | Callable[[tuple[slice, ...]], np.ndarray] | None,
    ) -> np.ndarray:
        """The decided dense CRF (tile by tile, around the foreground); ``labels`` if none."""
        crf = getattr(self.postprocessing, "crf", None)
        if crf is None or probabilities is None:
            return labels
        from medseg.postprocessing import crf_refine_labels

        # The CRF's appearance kernel takes one intensity image: channel 0's.
        image = volume.array if volume.array.ndim == 3 else volume.array[0]
        return crf_refine_labels(probabilities, image, volume.spacing, crf, labels=labels)

    def _postprocess(self, labels: np.ndarray, volume: Volume) -> tuple[np.ndarray, dict[str, Any]]:
        """The decided morphology (after :meth:`_refine_crf`) and the description of it all."""
        if self.postprocessing is None:
            return labels, {}
        from medseg.postprocessing import apply_postprocessing

        morphology = dataclasses.replace(self.postprocessing, crf=None)
        out = apply_postprocessing(labels, volume.spacing, morphology)
        applied = describe_postprocessing(self.postprocessing)
        return np.asarray(out).astype(labels.dtype, copy=False), applied

    def __call__(self, volume: Volume) -> Volume:
        """Segment ``volume``: a label map with exactly ``volume``'s affine and shape."""
        return self.predict(volume).mask

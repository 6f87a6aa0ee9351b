"""Predicting with an ``auto`` run: its chosen configuration, or the ensemble of two.

``RUN_DIR/configuration.json`` (:mod:`medseg.planning.configurations`) names what
``medseg train --configuration auto`` chose. One configuration: its own run directory is
loaded as usual (with its own post-processing decision). Several: each configuration
preprocesses the scan its own way (its spacing, its patch, 2D or 3D) and predicts class
probabilities on its own grid; these are mapped onto the scan's grid by world coordinates
and averaged there, slab by slab, as nnU-Net ensembles configurations (softmax averaged
after resampling to the original grid); the argmax, the CRF and the morphology decided for
the ensemble (``RUN_DIR/postprocessing.json``) follow. Averaged probabilities are never held
for the whole scan and every class at once unless asked for.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import MedsegError
from medseg.inference.config import InferConfig
from medseg.inference.postprocess_options import needs_probabilities, with_crf_override
from medseg.inference.predictor import Prediction, Predictor, Preprocessed
from medseg.inference.sliding import channel_argmax, probabilities_in_box
from medseg.io.volume import Volume
from medseg.networks.loading import load_postprocessing_file
from medseg.planning.configurations import ConfigurationChoice, load_choice


@dataclass
class EnsemblePreprocessed(Preprocessed):
    """One :class:`Preprocessed` per member configuration (``image``/``affine``: the first's)."""

    parts: list[Preprocessed] = field(default_factory=list)


class MeanProbabilities:
    """``box -> (C, *box)`` float16: the members' source-grid probabilities, averaged.

    Parameters
    ----------
    maps
        ``(probabilities (C, X, Y, Z), voxel-to-RAS affine)`` per member, each on its own
        preprocessed grid.
    source_affine
        The scan's voxel-to-RAS affine (mm).
    slab_mvox
        Millions of source voxels resampled at once.
    """

    def __init__(
        self,
        maps: Sequence[tuple[torch.Tensor, np.ndarray]],
        source_affine: np.ndarray,
        slab_mvox: float,
    ) -> None:
        self.maps = list(maps)
        self.source_affine = np.asarray(source_affine, np.float64)
        self.slab_mvox = slab_mvox

    def __call__(self, box: tuple[slice, ...]) -> np.ndarray:
        total: np.ndarray | None = None
        for probs, affine in self.maps:
            part = probabilities_in_box(
                probs, affine, self.source_affine, box, slab_mvox=self.slab_mvox
            ).astype(np.float32)
            total = part if total is None else total + part
        assert total is not None  # an ensemble has members
        return (total / len(self.maps)).astype(np.float16)


class EnsemblePredictor(Predictor):
    """Predictors of several configurations whose source-grid probabilities are averaged.

    It is a :class:`Predictor` for :func:`medseg.inference.batch.predict_batch` (same
    ``preprocess`` / ``predict`` contract, labels, channels and config); each member keeps its
    own plans and networks. ``postprocessing`` is the ensemble's decided post-processing.

    Raises
    ------
    MedsegError
        When the members disagree on labels or input channels.
    """

    def __init__(
        self,
        members: Sequence[Predictor],
        *,
        postprocessing: Any | None = None,
        identity: dict[str, Any] | None = None,
        config: InferConfig | None = None,
    ) -> None:
        if len(members) < 2:
            raise MedsegError(f"an ensemble needs two members or more, found {len(members)}")
        first = members[0]
        for m in members[1:]:
            if m.plans.labels != first.plans.labels or (
                m.plans.channel_names != first.plans.channel_names
            ):
                raise MedsegError(
                    f"expected ensemble members with the same labels and channels, found "
                    f"{first.plans.labels} / {list(first.plans.channel_names)} and "
                    f"{m.plans.labels} / {list(m.plans.channel_names)}",
                    m.identity.get("path"),
                )
        self.members = list(members)
        self.config = config or first.config
        self.device = first.device
        self.models = [net for m in members for net in m.models]
        self.plans = first.plans
        self.postprocessing = postprocessing
        self.identity = identity or {}
        self._transforms = first._transforms

    @property
    def body_crop(self) -> bool:
        """Whether the first member crops scans to the body (each member decides its own)."""
        return self.members[0].body_crop

    def preprocess(self, volume: Volume) -> EnsemblePreprocessed:
        """Each member's preprocessing of ``volume`` (``(I, J, K)`` or ``(C, I, J, K)``)."""
        self.check_channels(volume)
        start = time.perf_counter()
        parts = [m.preprocess(volume) for m in self.members]
        return EnsemblePreprocessed(
            image=parts[0].image,
            affine=parts[0].affine,
            seconds=time.perf_counter() - start,
            parts=parts,
        )

    def network_probabilities(self, pre: Preprocessed) -> torch.Tensor:
        """Not defined for an ensemble (the members' grids differ): see :meth:`predict`."""
        raise MedsegError(
            "an ensemble has one probability map per configuration, on different grids; "
            "use predict()"
        )

    def predict(
        self,
        volume: Volume,
        *,
        preprocessed: Preprocessed | None = None,
        with_probabilities: bool = False,
    ) -> Prediction:
        """Segment ``volume`` with the averaged members; see :meth:`Predictor.predict`."""
        timings: dict[str, float] = {}
        pre = preprocessed if isinstance(preprocessed, EnsemblePreprocessed) else None
        pre = pre or self.preprocess(volume)
        timings["preprocess"] = pre.seconds
        t = time.perf_counter()
        maps = [
            (m.network_probabilities(p), p.affine)
            for m, p in zip(self.members, pre.parts, strict=True)
        ]
        timings["inference"] = time.perf_counter() - t
        t = time.perf_counter()
        source = MeanProbabilities(maps, volume.affine, self.config.slab_mvox)
        labels, full = _argmax_by_slabs(
            source,
            volume.spatial_shape,
            self.config.slab_mvox,
            self.num_classes,
            with_probabilities,
        )
        timings["resample"] = time.perf_counter() - t
        t = time.perf_counter()
        crf_source = source if needs_probabilities(self.postprocessing) else None
        labels = self._refine_crf(labels, volume, crf_source)
        del source, maps
        labels, applied = self._postprocess(labels, volume)
        timings["postprocess"] = time.perf_counter() - t
        return self._result(labels, volume, full, timings, applied)


def _argmax_by_slabs(
    source: MeanProbabilities,
    shape: Sequence[int],
    slab_mvox: float,
    n_classes: int,
    keep: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels ``(I, J, K)`` (and float16 probabilities ``(C, I, J, K)`` when ``keep``) of the
    averaged map, computed slab by slab along K."""
    shape = tuple(int(s) for s in shape)
    labels = np.zeros(shape, dtype=np.uint8 if n_classes <= 256 else np.uint16)
    full = np.zeros((n_classes, *shape), dtype=np.float16) if keep else None
    step = max(1, int(slab_mvox * 1e6) // max(1, shape[0] * shape[1]))
    for k0 in range(0, shape[2], step):
        k1 = min(shape[2], k0 + step)
        probs = source((slice(0, shape[0]), slice(0, shape[1]), slice(k0, k1)))
        labels[:, :, k0:k1] = channel_argmax(torch.from_numpy(probs)).numpy()
        if full is not None:
            full[:, :, :, k0:k1] = probs
    return labels, full


def predictor_for_auto_run(run_dir: Path, config: InferConfig) -> Predictor:
    """The :class:`Predictor` of an ``auto`` run: its chosen configuration or the ensemble.

    ``config.folds`` applies to every member; ``config.postprocess``/``crf`` to the
    ensemble's decision (``RUN_DIR/postprocessing.json``), as for one run.
    """
    choice = load_choice(run_dir)
    if not choice.is_ensemble:
        return Predictor.from_path(
            choice.folder(run_dir, choice.chosen[0]), config=config, kind="run"
        )
    plain = dataclasses.replace(config, postprocess="none", crf=None)
    members = [
        Predictor.from_path(choice.folder(run_dir, name), config=plain, kind="run")
        for name in choice.chosen
    ]
    post = None
    if config.postprocess == "auto":
        post = load_postprocessing_file(Path(run_dir) / "postprocessing.json")
    post = with_crf_override(post, config.crf)
    identity = _identity(run_dir, choice, members)
    return EnsemblePredictor(members, postprocessing=post, identity=identity, config=config)


def _identity(run_dir: Path, choice: ConfigurationChoice, members: list[Predictor]) -> dict:
    """The sidecar's ``model`` record of an ensemble: each member's weights by configuration."""
    hashes: dict[str, str] = {}
    for name, m in zip(choice.chosen, members, strict=True):
        for fold, digest in (m.identity.get("weights_sha256") or {}).items():
            hashes[f"{name}/{fold}"] = str(digest)
    return {
        "kind": "auto-run",
        "path": str(Path(run_dir).resolve()),
        "configurations": list(choice.chosen),
        "weights_sha256": hashes,
        "members": [m.identity for m in members],
        "network": "+".join(str(m.identity.get("network", "")) for m in members),
    }

"""The plain MONAI baseline of ``benchmarks/train_sts.py``: the spleen-tutorial recipe, timed.

MONAI's 3D spleen segmentation tutorial (``Project-MONAI/tutorials``,
``3d_segmentation/spleen_segmentation_3d.ipynb``) adapted to the soft-tissue sarcoma data
and to a wall-clock budget, with nothing from medseg in the model's path (medseg is used
only to read the manifest, to pick the device and, in the caller, to score):

- ``LoadImaged`` -> ``EnsureChannelFirstd`` -> ``Orientationd("RAS")`` -> ``Spacingd`` (CT and
  label to the median training CT spacing, bilinear / nearest) -> for CT + PET,
  ``ResampleToMatchd`` (the PET onto that CT grid by world coordinates) ->
  ``ScaleIntensityRanged`` (CT window ``ct_window`` HU -> 0..1, default -200..300 HU, soft
  tissue; PET a fixed SUV window ``suv_window`` -> 0..1, default SUV 0..10, clipped) ->
  ``ConcatItemsd`` (channels, CT first) -> ``CropForegroundd`` (image > 0: inside the CT
  window or PET-avid) -> ``SpatialPadd`` to the patch (a crop smaller than the patch cannot
  be batched; the tutorial's spleens are larger than its patch) -> ``RandCropByPosNegLabeld``
  (``patch``, default 96 x 96 x 32 voxels, about 94 x 94 x 105 mm at 0.98 x 0.98 x 3.27 mm;
  pos 1, neg 1, 4 samples) -> ``RandFlipd`` on each of the three axes (p 0.1).
- ``UNet(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2,
  norm=BATCH)``, ``Adam(lr=1e-3)``, ``DiceCELoss(to_onehot_y=True, softmax=True)``,
  ``CacheDataset`` + ``DataLoader(batch_size=2, shuffle=True)``.
- Training runs until the budget is spent; every ``eval_every_minutes`` (and once at the end)
  the validation cases are predicted with ``sliding_window_inference`` (overlap
  ``eval_overlap``, Gaussian) on the preprocessed grid and their mean foreground Dice
  (``DiceMetric``) is recorded; the best-Dice weights are kept, as the tutorial keeps
  ``best_metric_model.pth``.
- Prediction for scoring: the same preprocessing without augmentation, sliding windows
  (overlap ``predict_overlap`` 0.5, Gaussian), softmax, then the probabilities resampled
  through the affines (``SpatialResample``) onto the case's original CT grid and argmaxed.

Budget, measured as ``medseg train --time-limit`` measures its own: from the start of
:func:`train_baseline` (data loading and caching included) to the end of its last
validation; validations count. ``training_s`` (the curve's clock) excludes the caching,
as medseg's ``elapsed_s`` excludes its preprocessing.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, MetaTensor
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.layers import Norm
from monai.networks.nets import UNet
from monai.transforms import (
    Compose,
    ConcatItemsd,
    CropForegroundd,
    DeleteItemsd,
    EnsureChannelFirstd,
    LoadImaged,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    ResampleToMatchd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
    SpatialResample,
)
from monai.utils import set_determinism

from medseg.data.manifest import Case, Manifest
from medseg.errors import MedsegError
from medseg.runtime.device import resolve_device

logger = logging.getLogger(__name__)
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # Orientationd's (deprecated) default


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of the baseline (``--baseline-set KEY=VALUE`` overrides them).

    ``patch`` in voxels along RAS (R, A, S) at the CT spacing; ``ct_window`` in HU,
    ``suv_window`` in SUV (each mapped to 0..1 and clipped); ``eval_every_minutes`` of the
    curve's clock; ``num_workers`` of the training loader (-1: 0 on CPU, 4 on CUDA).
    """

    patch: tuple[int, int, int] = (96, 96, 32)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    learning_rate: float = 1e-3
    batch_size: int = 2
    num_samples: int = 4
    ct_window: tuple[float, float] = (-200.0, 300.0)
    suv_window: tuple[float, float] = (0.0, 10.0)
    flip_prob: float = 0.1
    eval_every_minutes: float = 5.0
    eval_overlap: float = 0.25
    predict_overlap: float = 0.5
    sw_batch_size: int = 4
    num_workers: int = -1
    cache_workers: int = 2
    device: str = "auto"
    seed: int = 0

    def validate(self) -> None:
        """Check ranges."""
        if len(self.strides) != len(self.channels) - 1:
            raise MedsegError(
                f"baseline.strides: expected {len(self.channels) - 1} values (one per "
                f"down-sampling of channels {self.channels}), found {len(self.strides)}"
            )
        if min(self.patch) < 1 or self.batch_size < 1 or self.num_samples < 1:
            raise MedsegError(
                "baseline: expected a positive patch, batch_size and num_samples, found "
                f"{self.patch}, {self.batch_size}, {self.num_samples}"
            )
        if self.eval_every_minutes <= 0:
            raise MedsegError(
                f"baseline.eval_every_minutes: expected > 0, found {self.eval_every_minutes}"
            )


def _is_pet(modality: str) -> bool:
    return modality.strip().upper() in ("PET", "PT", "FDG-PET", "SUV")


def channel_keys(manifest: Manifest) -> list[str]:
    """Dictionary keys of the input channels, in manifest order (``ct``, ``pet``, ...)."""
    names = [manifest.modality[i] for i in sorted(manifest.modality)]
    keys = ["pet" if _is_pet(n) else f"ch{i}" for i, n in enumerate(names)]
    keys[0] = "ct"  # channel 0 is the CT: its grid is the prediction grid
    return keys


def case_dict(case: Case, keys: Sequence[str]) -> dict[str, str]:
    """A MONAI data dictionary (file names) of one manifest case."""
    if len(case.images) != len(keys):
        raise MedsegError(
            f"[{case.case_id}] expected {len(keys)} image channel(s), found {len(case.images)}",
            case.image,
        )
    if any(p.is_dir() for p in case.images):
        raise MedsegError(
            f"[{case.case_id}] the baseline reads image files, found a folder", case.image
        )
    d = {k: str(p) for k, p in zip(keys, case.images, strict=True)}
    if case.label is not None:
        d["label"] = str(case.label)
    return d


def median_spacing(cases: Sequence[Case]) -> tuple[float, float, float]:
    """Median channel-0 voxel size (mm) along R, A, S (after reorientation to RAS)."""
    rows = []
    for case in cases:
        img: Any = nib.load(str(case.image))
        zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
        ornt = nib.io_orientation(img.affine)  # input axis i -> RAS axis ornt[i, 0]
        ras = np.empty(3)
        ras[ornt[:, 0].astype(int)] = zooms
        rows.append(ras)
    med = np.median(np.stack(rows), axis=0)
    return (float(med[0]), float(med[1]), float(med[2]))


def preprocessing(
    keys: Sequence[str], spacing: Sequence[float], cfg: BaselineConfig, *, label: bool
) -> list[Any]:
    """Deterministic (cached) transforms: load, RAS, spacing, windows, concatenation, crop."""
    lab = ["label"] if label else []
    out: list[Any] = [
        LoadImaged(keys=[*keys, *lab]),
        EnsureChannelFirstd(keys=[*keys, *lab]),
        Orientationd(keys=["ct", *lab], axcodes="RAS", labels=_RAS_LABELS),
        Spacingd(
            keys=["ct", *lab],
            pixdim=tuple(spacing),
            mode=("bilinear", *(["nearest"] * len(lab))),
        ),
    ]
    for key in keys[1:]:
        out.append(ResampleToMatchd(keys=key, key_dst="ct", mode="bilinear"))
    for key in keys:
        lo, hi = cfg.suv_window if key == "pet" else cfg.ct_window
        out.append(
            ScaleIntensityRanged(keys=key, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
        )
    out += [
        ConcatItemsd(keys=list(keys), name="image", dim=0),
        DeleteItemsd(keys=list(keys)),
        CropForegroundd(keys=["image", *lab], source_key="image", allow_smaller=True),
    ]
    return out


def training_transforms(
    keys: Sequence[str], spacing: Sequence[float], cfg: BaselineConfig
) -> Compose:
    """Cached preprocessing, then the tutorial's random patches and flips."""
    xs = ["image", "label"]
    random = [
        SpatialPadd(keys=xs, spatial_size=cfg.patch),
        RandCropByPosNegLabeld(
            keys=xs,
            label_key="label",
            spatial_size=cfg.patch,
            pos=1,
            neg=1,
            num_samples=cfg.num_samples,
            image_key="image",
            image_threshold=0,
        ),
        *(RandFlipd(keys=xs, spatial_axis=[a], prob=cfg.flip_prob) for a in range(3)),
    ]
    return Compose([*preprocessing(keys, spacing, cfg, label=True), *random])


def build_network(in_channels: int, cfg: BaselineConfig) -> UNet:
    """The tutorial's UNet with ``in_channels`` inputs and two outputs (background, tumour)."""
    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=2,
        channels=cfg.channels,
        strides=cfg.strides,
        num_res_units=cfg.num_res_units,
        norm=Norm.BATCH,
    )


def _windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    # Sliding-window count (MONAI's scan-interval rule) to estimate a validation's cost
    # before one has been measured; MONAI exposes no public helper for it.
    n = 1
    for size, r in zip(shape, roi, strict=True):
        step = max(int(r * (1 - overlap)), 1)
        n *= 1 if size <= r else math.ceil((size - r) / step) + 1
    return n


@torch.no_grad()
def _validate(
    model: torch.nn.Module, val_data: Sequence[dict], cfg: BaselineConfig, device: torch.device
) -> float:
    """Mean foreground Dice of the validation cases on the preprocessed grid."""
    model.eval()
    metric = DiceMetric(include_background=False, reduction="mean")
    for d in val_data:
        image = d["image"].as_tensor().unsqueeze(0).to(device)
        logits = sliding_window_inference(
            image, cfg.patch, cfg.sw_batch_size, model, overlap=cfg.eval_overlap, mode="gaussian"
        )
        pred = torch.nn.functional.one_hot(torch.as_tensor(logits).argmax(1), 2).permute(
            0, 4, 1, 2, 3
        )
        ref = torch.nn.functional.one_hot(d["label"].to(device).long()[0][None], 2)
        metric(y_pred=pred.cpu(), y=ref.permute(0, 4, 1, 2, 3).cpu())
    model.train()
    return float(torch.as_tensor(metric.aggregate()).item())


def _loader(ds: CacheDataset, cfg: BaselineConfig, device: torch.device) -> DataLoader:
    workers = cfg.num_workers if cfg.num_workers >= 0 else (4 if device.type == "cuda" else 0)
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=workers)


@dataclass
class _Progress:
    """The training loop's clock (seconds of steps + validations), counts and curve."""

    step: int = 0
    epoch: int = 0
    train_s: float = 0.0
    step_s: float = 0.0
    val_s: float | None = None
    losses: list[float] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    best_dice: float = -1.0
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)


def _datasets(
    manifest: Manifest, train_ids: Sequence[str], val_ids: Sequence[str], cfg: BaselineConfig
) -> tuple[CacheDataset, list[dict], list[str], tuple[float, float, float]]:
    """The cached training set, the preprocessed validation cases, channel keys, spacing."""
    by_id = {c.case_id: c for c in manifest.training}
    keys = channel_keys(manifest)
    spacing = median_spacing([by_id[c] for c in train_ids])
    train_ds = CacheDataset(
        [case_dict(by_id[c], keys) for c in train_ids],
        training_transforms(keys, spacing, cfg),
        num_workers=cfg.cache_workers,
        progress=False,
    )
    val_ds = CacheDataset(
        [case_dict(by_id[c], keys) for c in val_ids],
        Compose(preprocessing(keys, spacing, cfg, label=True)),
        num_workers=cfg.cache_workers,
        progress=False,
    )
    return train_ds, [val_ds[i] for i in range(len(val_ds))], keys, spacing


def train_baseline(
    manifest: Manifest,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    minutes: float,
    cfg: BaselineConfig,
) -> dict[str, Any]:
    """Train the baseline on ``train_ids`` for ``minutes`` of wall clock; see the module notes.

    Returns
    -------
    dict
        ``model`` (best-validation weights, eval mode), ``spacing`` (mm, RAS), ``keys``,
        ``budget_s``, ``training_s``, ``cache_s``, ``steps``, ``epochs``, ``best_val_dice``,
        ``final_val_dice`` and ``curve`` (``minutes``, ``step``, ``val_dice``, ``train_loss``).
    """
    t0 = time.perf_counter()
    deadline = t0 + minutes * 60.0
    set_determinism(seed=cfg.seed)
    device = resolve_device(cfg.device)
    train_ds, val_data, keys, spacing = _datasets(manifest, train_ids, val_ids, cfg)
    cache_s = time.perf_counter() - t0
    model = build_network(len(keys), cfg).to(device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    windows = sum(_windows(d["image"].shape[1:], cfg.patch, cfg.eval_overlap) for d in val_data)
    run = _Progress()
    next_eval = cfg.eval_every_minutes * 60.0
    model.train()
    loader = _loader(train_ds, cfg, device)
    done = False
    while not done:
        for batch in loader:
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch["image"].to(device)), batch["label"].to(device))
            loss.backward()
            opt.step()
            run.losses.append(float(loss.item()))
            run.step += 1
            run.step_s = time.perf_counter() - t
            run.train_s += run.step_s
            # before a validation is measured: windows at a third of a training patch each
            per_window = run.step_s / (3.0 * cfg.batch_size * cfg.num_samples)
            val_s = run.val_s if run.val_s is not None else windows * per_window
            done = time.perf_counter() + run.step_s + val_s > deadline
            if done or run.train_s >= next_eval:
                _record(model, val_data, cfg, device, run)
                next_eval = run.train_s + cfg.eval_every_minutes * 60.0
            if done:
                break
        run.epoch += 1
    model.load_state_dict(run.best_weights)
    model.eval()
    return {
        "model": model,
        "spacing": spacing,
        "keys": keys,
        "device": str(device),
        "budget_s": round(time.perf_counter() - t0, 2),
        "training_s": round(run.train_s, 2),
        "cache_s": round(cache_s, 2),
        "steps": run.step,
        "epochs": run.epoch,
        "best_val_dice": run.best_dice,
        "final_val_dice": run.curve[-1]["val_dice"],
        "curve": run.curve,
    }


def _record(
    model: torch.nn.Module,
    val_data: Sequence[dict],
    cfg: BaselineConfig,
    device: torch.device,
    run: _Progress,
) -> None:
    """Validate now, append a curve point and keep the weights if they are the best so far."""
    t = time.perf_counter()
    dice = _validate(model, val_data, cfg, device)
    run.val_s = time.perf_counter() - t
    run.train_s += run.val_s  # the curve's clock counts validation, as medseg's does
    loss = float(np.mean(run.losses)) if run.losses else None
    run.curve.append(
        {
            "minutes": round(run.train_s / 60.0, 3),
            "step": run.step,
            "val_dice": dice,
            "train_loss": loss,
        }
    )
    run.losses = []
    if dice > run.best_dice:
        run.best_dice, run.best_weights = dice, copy.deepcopy(model.state_dict())
    logger.info(
        "baseline step %d: validation Dice %.3f (%.1f min)", run.step, dice, run.train_s / 60
    )


@torch.no_grad()
def predict_case(
    trained: dict[str, Any],
    case: Case,
    reference_affine: np.ndarray,
    reference_shape: Sequence[int],
    cfg: BaselineConfig,
) -> np.ndarray:
    """Label map ``(I, J, K)`` uint8 of ``case`` on the reference grid (its original CT grid).

    ``reference_affine`` is the reference's voxel-to-RAS matrix (mm), see
    :func:`to_reference_grid`.
    """
    keys, model = trained["keys"], trained["model"]
    device = next(model.parameters()).device
    xf = Compose(preprocessing(keys, trained["spacing"], cfg, label=False))
    image = xf(case_dict(case, keys))["image"]
    logits = sliding_window_inference(
        image.as_tensor().unsqueeze(0).to(device),
        cfg.patch,
        cfg.sw_batch_size,
        model,
        overlap=cfg.predict_overlap,
        mode="gaussian",
    )
    probs = torch.softmax(logits[0].float(), 0).cpu()
    return to_reference_grid(probs, np.asarray(image.affine), reference_affine, reference_shape)


def to_reference_grid(
    probabilities: torch.Tensor,
    affine: np.ndarray,
    reference_affine: np.ndarray,
    reference_shape: Sequence[int],
) -> np.ndarray:
    """Argmax of class probabilities ``(2, X, Y, Z)`` resampled onto a reference grid.

    ``affine`` and ``reference_affine`` are voxel-to-RAS matrices (mm) of the probabilities'
    grid (the preprocessed, cropped grid) and of the reference ``(I, J, K)``; the resampling
    (``SpatialResample``, bilinear, zeros outside) goes through world coordinates, so voxels
    outside the foreground crop come out as background.
    """
    src = MetaTensor(
        torch.as_tensor(probabilities, dtype=torch.float32),
        affine=torch.as_tensor(affine, dtype=torch.float64),
    )
    out = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=np.float32)(
        src,
        dst_affine=torch.as_tensor(reference_affine, dtype=torch.float64),
        spatial_size=tuple(int(n) for n in reference_shape),
    )
    return np.asarray(out.argmax(0).numpy(), dtype=np.uint8)

"""Sliding-window probabilities on the preprocessed grid, and their mapping back to the source grid.

Forward: MONAI ``sliding_window_inference`` with Gaussian blending; each window goes through
every fold's network (and the 8 mirrorings with TTA), softmax probabilities are averaged
per window, so one blended map holds the whole ensemble. The map is accumulated in float16
when it is large (``InferConfig.accumulation``).

Backward: :func:`resample_to_source` maps class probabilities from the preprocessed grid
(RAS, target spacing, cropped) back onto the source scan's voxel grid by world coordinates,
slab by slab, taking the argmax inside each slab. It replaces MONAI ``Invertd`` here because
``Invertd`` inverts ``Spacingd`` on the full multi-channel map at once: on a 512x512x600
scan with 5 classes that is a 3.1 GB float32 output plus a same-sized padded copy, beyond
the 4 GB target (``benchmarks/predict_memory.py --invertd`` measures it). Going through the
world coordinates also undoes orientation and cropping in the same step, exactly: both
grids' affines are known, so no transform bookkeeping can drift.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference
from torch import nn
from torch.nn import functional as F  # noqa: N812

logger = logging.getLogger(__name__)

WEIGHT_FLOOR = 1e-3  # smallest blending weight relative to the centre (keeps float16 normal)
# Network input voxels per forward pass on CPU. A UNet of 16..256 channels on 96^3 windows
# (2 cores): peak activations 0.18 / 0.24 / 0.50 GB and 0.37 / 0.30 / 0.30 s per window for
# batches of 1 / 2 / 4 windows: two 96^3 windows per pass cost no time and 0.26 GB less.
FORWARD_MVOX = 1.8


def gaussian_weights(roi_size: Sequence[int], sigma_scale: float = 0.125) -> torch.Tensor:
    """Gaussian blending weights of one window, shape ``roi_size``, maximum 1.

    The weights are floored at :data:`WEIGHT_FLOOR` so that a float16 accumulator never
    receives subnormal weights (whose products would lose every significant bit at the
    volume's corners, where a single window covers a voxel).
    """
    w = compute_importance_map(
        tuple(int(r) for r in roi_size), mode="gaussian", sigma_scale=sigma_scale
    )
    w = w.to(torch.float32)
    return torch.clamp(w / w.max(), min=WEIGHT_FLOOR)


def mirror_axes(tta: bool, axes: Sequence[int] = (0, 1, 2)) -> list[tuple[int, ...]]:
    """Flips applied per window: ``[()]`` without TTA, every subset of ``axes`` with it.

    ``axes`` are spatial axes (0..2, RAS); the returned tuples index the batched tensor
    ``(B, C, X, Y, Z)``. With all three axes TTA averages 8 mirrorings.
    """
    if not tta:
        return [()]
    dims = tuple(2 + int(a) for a in axes)
    return [c for n in range(len(dims) + 1) for c in itertools.combinations(dims, n)]


def window_predictor(
    models: Sequence[nn.Module],
    *,
    tta: bool,
    device: torch.device,
    out_dtype: torch.dtype,
    tta_axes: Sequence[int] = (0, 1, 2),
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Callable mapping windows ``(B, 1, X, Y, Z)`` to mean softmax ``(B, C, X, Y, Z)``.

    The mean runs over every model (fold) and every mirroring; networks always see float32
    (float16 autocast only on CUDA: reduced precision does not pay on CPUs without native
    half-precision arithmetic; bf16 autocast measured about 30x slower than float32 on a
    2-core AMD EPYC Zen 3 without bf16 instructions, torch 2.13.0+cpu; no benchmark script).

    On CPU at most :data:`FORWARD_MVOX` million window voxels go through a network at once
    (the batch is split): activations grow with the voxels of a forward pass, and no faster.
    """
    flips = mirror_axes(tta, tta_axes)
    n = len(models) * len(flips)
    use_amp = device.type == "cuda"

    def mean_softmax(x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for model in models:
            for axes in flips:
                xi = torch.flip(x, axes) if axes else x
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    logits = model(xi)
                if isinstance(logits, list | tuple):  # deep-supervision heads: full res first
                    logits = logits[0]
                p = torch.softmax(logits.float(), dim=1)
                if axes:
                    p = torch.flip(p, axes)
                total = p if total is None else total.add_(p)
        if total is None:
            raise ValueError("window_predictor needs at least one model")
        return (total / n).to(out_dtype)

    def predict(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=device, dtype=torch.float32)
        per_window = max(1, math.prod(int(s) for s in x.shape[2:]))
        chunk = x.shape[0] if use_amp else max(1, int(FORWARD_MVOX * 1e6) // per_window)
        if chunk >= x.shape[0]:
            return mean_softmax(x)
        return torch.cat([mean_softmax(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])

    return predict


def sliding_probabilities(
    image: torch.Tensor,
    models: Sequence[nn.Module],
    roi_size: Sequence[int],
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    sigma_scale: float = 0.125,
    tta: bool = False,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    tta_axes: Sequence[int] = (0, 1, 2),
) -> torch.Tensor:
    """Blended class probabilities of ``image`` by sliding-window inference.

    Parameters
    ----------
    image
        Preprocessed image, shape ``(1, X, Y, Z)`` (channel first, RAS axis order).
    models
        Networks in eval mode on ``device``; their probabilities are averaged.
    roi_size
        Window size ``(X, Y, Z)`` in voxels (the training patch); smaller volumes are
        padded by MONAI and cropped back.
    overlap, sw_batch_size, sigma_scale, tta
        See :class:`~medseg.inference.config.InferConfig`.
    tta_axes
        Spatial axes (RAS) mirrored by TTA: those the model was trained to be invariant to
        (``Plans.mirror_axes``); mirroring a left/right-specific model would hurt it.
    device
        Where the networks run and the blended map lives (default: CPU).
    dtype
        Accumulation dtype (``torch.float16`` halves the map's memory).

    Returns
    -------
    torch.Tensor
        Probabilities ``(C, X, Y, Z)`` of ``dtype`` on ``device``; they sum to 1 per voxel.
    """
    device = device or torch.device("cpu")
    weights = gaussian_weights(roi_size, sigma_scale)
    predictor = window_predictor(models, tta=tta, device=device, out_dtype=dtype, tta_axes=tta_axes)
    # The accumulator takes the input's dtype in MONAI: pass the image in ``dtype``.
    inputs = torch.as_tensor(image).as_subclass(torch.Tensor).to(dtype)[None]
    with torch.inference_mode():
        out = sliding_window_inference(
            inputs,
            roi_size=tuple(int(r) for r in roi_size),
            sw_batch_size=sw_batch_size,
            predictor=predictor,
            overlap=overlap,
            mode="gaussian",
            sigma_scale=sigma_scale,
            roi_weight_map=weights.to(device),
            sw_device=device,
            device=device,
        )
    return torch.as_tensor(out).as_subclass(torch.Tensor)[0]


def _slab_coordinates(mapping: np.ndarray, shape: Sequence[int], k0: int, k1: int) -> np.ndarray:
    """Source-grid voxel coordinates ``(3, I, J, k1-k0)`` of target voxels in slices k0..k1.

    Filled one axis at a time with broadcast in-place adds: no temporary of the slab's size.
    """
    i = np.arange(shape[0], dtype=np.float64)[:, None, None]
    j = np.arange(shape[1], dtype=np.float64)[None, :, None]
    k = np.arange(k0, k1, dtype=np.float64)[None, None, :]
    lin, off = mapping[:3, :3], mapping[:3, 3]
    out = np.empty((3, int(shape[0]), int(shape[1]), k1 - k0), dtype=np.float64)
    for a in range(3):
        out[a] = lin[a, 0] * i
        out[a] += lin[a, 1] * j
        out[a] += lin[a, 2] * k
        out[a] += off[a]
    return out


def _sample_slab(probs: torch.Tensor, coords: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Trilinear samples ``(C, I, J, n)`` of ``probs`` at ``coords`` and the inside mask.

    ``coords`` (float64) is overwritten with grid_sample's normalised coordinates: working one
    axis at a time, in place, keeps the temporaries near 45 bytes per voxel.
    """
    size = np.asarray(probs.shape[1:], dtype=np.float64)
    out_shape = coords.shape[1:]
    inside = np.ones(out_shape, dtype=bool)
    for a in range(3):
        inside &= coords[a] >= -0.5
        inside &= coords[a] <= size[a] - 0.5
    if not inside.any():
        return torch.zeros((probs.shape[0], *out_shape)), inside
    lo = np.array([np.floor(coords[a][inside].min()) for a in range(3)])
    hi = np.array([np.ceil(coords[a][inside].max()) for a in range(3)])
    lo = np.clip(lo, 0, size - 1).astype(int)
    hi = np.clip(hi, 0, size - 1).astype(int)
    box = probs[:, lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1].float()
    extent = np.maximum(hi - lo, 1).astype(np.float64)
    # grid_sample wants (x, y, z) = (W, H, D) order, normalised to [-1, 1] (align_corners).
    for a in range(3):
        coords[a] -= lo[a]
        coords[a] /= extent[a]
        coords[a] *= 2.0
        coords[a] -= 1.0
    grid = torch.from_numpy(coords[::-1].transpose(1, 2, 3, 0).astype(np.float32))
    sampled = F.grid_sample(
        box[None],
        grid[None].to(box.device),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )[0]
    return sampled, inside


def channel_argmax(probs: torch.Tensor) -> torch.Tensor:
    """Argmax over axis 0 of ``(C, ...)`` as uint8 (int32 above 256 classes), on CPU.

    On CPU this goes through ``numpy.argmax``, measured ~5x faster here than
    ``torch.argmax(dim=0)`` (a strided reduction) on a (5, 96, 96, 80) map. Ties go to the
    lower class in both.
    """
    out_dtype = torch.uint8 if probs.shape[0] <= 256 else torch.int32
    if probs.device.type != "cpu":
        return torch.argmax(probs, dim=0).to(out_dtype).cpu()
    values = probs.float().numpy() if probs.dtype != torch.float32 else probs.numpy()
    return torch.from_numpy(np.argmax(values, axis=0)).to(out_dtype)


Placement = tuple[tuple[slice, ...], tuple[slice, ...], tuple[int, ...], tuple[int, ...]]


def _exact_placement(
    mapping: np.ndarray, source_shape: Sequence[int], grid_shape: Sequence[int]
) -> Placement | None:
    """Index form of ``mapping`` when it only permutes, flips and shifts voxels (no resampling).

    Returns ``(source_slices, grid_slices, flips, axes)``: ``source[source_slices]`` receives
    ``flip(grid[grid_slices], flips).transpose(axes)`` (grid slices have step 1, so a torch
    tensor can be sliced without a copy); ``None`` when interpolation is needed.
    """
    lin, off = mapping[:3, :3], mapping[:3, 3]
    r = np.rint(lin)
    if np.abs(lin - r).max() > 1e-4 or np.abs(off - np.rint(off)).max() > 1e-4:
        return None
    if not (np.all(np.abs(r).sum(0) == 1) and np.all(np.abs(r).sum(1) == 1)):
        return None
    src_sl: list[slice] = []
    grid_sl: list[slice] = [slice(0, 0)] * 3
    flips, axes = [], []
    for a in range(3):
        b = int(np.nonzero(r[:, a])[0][0])
        step, o = int(r[b, a]), int(np.rint(off[b]))
        v = np.arange(int(source_shape[a]))
        ok = np.nonzero((step * v + o >= 0) & (step * v + o < int(grid_shape[b])))[0]
        if ok.size == 0:
            return (slice(0, 0),) * 3, (slice(0, 0),) * 3, (), (0, 1, 2)
        p0, p1 = step * int(ok[0]) + o, step * int(ok[-1]) + o
        src_sl.append(slice(int(ok[0]), int(ok[-1]) + 1))
        grid_sl[b] = slice(min(p0, p1), max(p0, p1) + 1)
        if step < 0:
            flips.append(b)
        axes.append(b)
    return tuple(src_sl), tuple(grid_sl), tuple(flips), tuple(axes)


def _place_exact(
    probs: torch.Tensor,
    placement: Placement,
    labels: np.ndarray,
    full: np.ndarray | None,
    slab_mvox: float,
) -> None:
    """Argmax of the placed part of the grid by slabs, then copy into the source order."""
    src_sl, grid_sl, flips, axes = placement
    index = (slice(None), *grid_sl)
    sub = probs[index]  # a view: only the part that lands in the source box
    if sub.numel() == 0:
        return
    step = max(1, int(slab_mvox * 1e6) // max(1, sub.shape[2] * sub.shape[3]))
    region = np.empty(tuple(sub.shape[1:]), dtype=np.uint8 if sub.shape[0] <= 256 else np.int32)
    for x0 in range(0, sub.shape[1], step):
        region[x0 : x0 + step] = channel_argmax(sub[:, x0 : x0 + step]).numpy()
    labels[src_sl] = np.transpose(np.flip(region, flips), axes)
    if full is not None:
        for c in range(sub.shape[0]):
            full[c][src_sl] = np.transpose(np.flip(sub[c].cpu().numpy(), flips), axes)


def resample_to_source(
    probs: torch.Tensor,
    probs_affine: np.ndarray,
    source_affine: np.ndarray,
    source_shape: Sequence[int],
    *,
    slab_mvox: float = 4.0,
    return_probabilities: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Map probabilities back to the source grid by world coordinates; argmax per slab.

    Parameters
    ----------
    probs
        Class probabilities ``(C, X, Y, Z)`` on the preprocessed grid (any float dtype).
    probs_affine
        4x4 voxel-to-RAS (mm) affine of the preprocessed grid.
    source_affine, source_shape
        Affine (voxel-to-RAS, mm) and shape ``(I, J, K)`` of the source scan.
    slab_mvox
        Millions of source voxels resampled at once (bounds the temporary memory).
    return_probabilities
        Also return the resampled probabilities ``(C, I, J, K)`` as float16.

    Returns
    -------
    labels, probabilities
        ``labels`` ``(I, J, K)`` uint8 (uint16 above 255 classes) in the source voxel order;
        voxels outside the preprocessed field of view (cropped away) are background (0).
        ``probabilities`` is ``None`` unless requested.
    """
    shape = tuple(int(s) for s in source_shape)
    n_cls = int(probs.shape[0])
    mapping = np.linalg.inv(np.asarray(probs_affine, np.float64)) @ np.asarray(
        source_affine, np.float64
    )
    labels = np.zeros(shape, dtype=np.uint8 if n_cls <= 256 else np.uint16)
    full = np.zeros((n_cls, *shape), dtype=np.float16) if return_probabilities else None
    if full is not None:
        full[0] = 1.0
    placement = _exact_placement(mapping, shape, probs.shape[1:])
    if placement is not None:  # same spacing: indices only, exact and fast
        _place_exact(probs, placement, labels, full, slab_mvox)
        return labels, full
    step = max(1, int(slab_mvox * 1e6) // max(1, shape[0] * shape[1]))
    for k0 in range(0, shape[2], step):
        k1 = min(shape[2], k0 + step)
        sampled, inside = _sample_slab(probs, _slab_coordinates(mapping, shape, k0, k1))
        slab = channel_argmax(sampled).cpu().numpy()
        slab[~inside] = 0
        labels[:, :, k0:k1] = slab
        if full is not None:
            values = sampled.cpu().numpy().astype(np.float16)
            values[:, ~inside] = 0.0
            values[0, ~inside] = 1.0
            full[:, :, :, k0:k1] = values
    return labels, full


def probabilities_in_box(
    probs: torch.Tensor,
    probs_affine: np.ndarray,
    source_affine: np.ndarray,
    box: Sequence[slice],
    *,
    slab_mvox: float = 4.0,
) -> np.ndarray:
    """Class probabilities of one box of the source grid, as :func:`resample_to_source` maps them.

    Parameters
    ----------
    probs, probs_affine, source_affine, slab_mvox
        As for :func:`resample_to_source`.
    box
        ``(slice_i, slice_j, slice_k)`` (step 1) of the source grid's voxel indices.

    Returns
    -------
    np.ndarray
        ``(C, *box shape)`` float16; outside the preprocessed field of view background is 1.
        Only the box is resampled, so a caller that needs probabilities tile by tile (the dense
        CRF) never holds them for the whole source grid.
    """
    shift = np.eye(4)
    shift[:3, 3] = [s.start for s in box]
    shape = [s.stop - s.start for s in box]
    _, full = resample_to_source(
        probs,
        probs_affine,
        np.asarray(source_affine, np.float64) @ shift,
        shape,
        slab_mvox=slab_mvox,
        return_probabilities=True,
    )
    return full  # type: ignore[return-value]

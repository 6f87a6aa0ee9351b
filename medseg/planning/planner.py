"""Plans from a fingerprint: spacing, normalisation, patch/batch size and network topology.

The rules follow nnU-Net (Isensee et al., 2021) with a step-voxel budget instead of a GPU
memory model, because on CPU the budget that matters is time per step:

* target spacing: median spacing; if one axis is much coarser (``anisotropy_threshold``)
  and has few voxels, its target is the 10th percentile of its spacings instead;
* patch: the median resampled shape, shrunk along its physically largest axis until it fits
  the patch budget, then rounded up to a multiple of the network's total stride; batch:
  the step budget over the patch voxels (2..16);
* pooling: an axis is pooled while its feature map keeps >= 8 voxels and its current
  spacing is at most twice the finest current spacing (so coarse axes are not pooled
  early); kernels are 1 along axes still twice coarser than the finest (``dynunet``).
  Networks with built-in down-sampling (``_FIXED_POOLING``: vnet, segresnet, basicunet,
  basicunetplusplus, swinunetr /32, unetr /16) get isotropic 2x2x2 steps instead, and
  highresnet none; swinunetr's and unetr's rounded-up patch is shrunk back into the budget
  in whole steps, swinunetr's is at least 64 per axis, and unetr is built for the patch.
"""

from __future__ import annotations

import logging

import numpy as np

from medseg.errors import MedsegError
from medseg.planning.config import PlansConfig
from medseg.planning.fingerprint import Fingerprint
from medseg.planning.normalization import channel_plans
from medseg.planning.plans import NetworkSpec, Plans

logger = logging.getLogger(__name__)

# Voxels per optimisation step (patch x batch). On 2 CPU cores, MSD Hippocampus reached a
# higher Dice in a fixed time with 3 whole-case patches per step than with 6 (0.859 vs 0.849
# mean Dice after 15 minutes): more, smaller steps win when compute is the limit.
CPU_STEP_VOXELS = 300_000
CUDA_STEP_VOXELS = 4_000_000
# Largest patch (voxels) before it is shrunk along its physically longest axis.
CPU_PATCH_VOXELS = 300_000
CUDA_PATCH_VOXELS = 2_000_000
_MIN_FEATURE = 8  # pool an axis only if it has at least this many voxels
_MAX_POOLS = {
    "unet": 4,
    "dynunet": 5,
    "vnet": 4,
    "segresnet": 3,
    "basicunet": 4,
    "swinunetr": 5,  # patch embedding (2) and four patch mergings: inputs divisible by 32
    "unetr": 4,  # one 16^3 ViT patch embedding, decoded in four 2x up-samplings
    "attentionunet": 4,
    "basicunetplusplus": 4,
    "highresnet": 0,  # no down-sampling: dilated convolutions at the input resolution
    "deeplab": 3,  # output stride 8 at the atrous pyramid, DeepLab's dense setting
}
# Networks whose down-sampling is built in: isotropic 2x2x2 steps, _MAX_POOLS of them.
_FIXED_POOLING = ("vnet", "segresnet", "basicunet", "basicunetplusplus", "swinunetr", "unetr")
# Networks whose rounded-up patch is shrunk back into the patch budget by whole multiples
# of their stride (a 67^3 fit becomes 64^3, not 96^3: 3.4x the voxels for a transformer).
_SHRINK_TO_BUDGET = ("swinunetr", "unetr")
# Smallest patch side: SwinUNETR's deepest features (1/32) must have more than one voxel
# per axis, or its instance norm fails ("Expected more than 1 spatial element").
_MIN_PATCH = {"swinunetr": 64}
# MONAI UNet widths, channels[0] at full resolution (``NetworkSpec.full_res_level``). On 2 CPU
# cores, MSD Hippocampus fold 0 in 30 minutes: 8 | 24..96 (bottom 192) reached a best
# validation Dice of 0.892 / 0.874 in 2,450 steps, against 0.882 / 0.867 for MONAI's own layout
# 24..192 (first block already at half resolution; 3,850 steps) and 0.884 / 0.866 for 32..256:
# a thin full-resolution level sharpens boundaries more than width did. A 16-channel
# full-resolution level would double the step time again. On the CT phantoms (patch
# 64x64x48, batch 2: 393 k voxels per step, over the budget) the level made steps 2.6x
# slower and in 12 minutes found no lesion (550 steps: lesion Dice 0.00, mean 0.75)
# where the same widths without it did (1,450 steps: lesion 0.67, mean 0.88); so planning
# adds it only when the step fits the budget (``PlansConfig.unet_full_res: null``).
# MONAI's VNet has these widths built in (its constructor takes none); plans record them.
VNET_CHANNELS = (16, 32, 64, 128, 256)
_WIDTHS = {
    "unet": (8, 24, 48, 96, 192),
    "dynunet": (32, 64, 128, 256, 320, 320),
    "vnet": VNET_CHANNELS,
    "segresnet": (8, 16, 32, 64),
    "basicunet": (32, 32, 64, 128, 256),
    # feature_size 12 (MONAI's default 24..48), heads 1, 1, 3, 6 (MONAI: 3, 6, 12, 24)
    "swinunetr": (12, 12, 24, 48, 96, 192),
    # feature_size 12 (MONAI: 16), ViT hidden size 192 in 3 heads (MONAI: 768 in 12)
    "unetr": (12, 24, 48, 96, 192),
    "attentionunet": (8, 16, 32, 64, 128),
    # a quarter of MONAI's widths: 16..128 took 4.9 s CPU per planned step, 12.6 s at 64^3
    # (see medseg.networks.registry); these 3.5 s and 5.6 s
    "basicunetplusplus": (8, 8, 16, 32, 64),
    # conv_0, res_1, res_2, res_3, conv_1: half MONAI's 16, 16, 32, 64, 80, which all run at
    # the input resolution (9x the unet step at full width; see medseg.networks.registry)
    "highresnet": (8, 8, 16, 32, 40),
    "deeplab": (8, 24, 48, 96),
}


def swinunetr_channels(feature_size: int) -> tuple[int, ...]:
    """Widths per level of MONAI's ``SwinUNETR`` with this ``feature_size`` (input resolution
    first, then after the patch embedding and each of its four patch mergings).

    Raises
    ------
    MedsegError
        Unless ``feature_size`` is a positive multiple of 12 (MONAI's requirement).
    """
    if feature_size < 12 or feature_size % 12:
        raise MedsegError(
            "plans.channels: expected channels[0] (swinunetr's feature_size) to be a "
            f"multiple of 12, found {feature_size}"
        )
    f = feature_size
    return (f, f, 2 * f, 4 * f, 8 * f, 16 * f)


def unetr_channels(feature_size: int, hidden_size: int) -> tuple[int, ...]:
    """Widths per level of MONAI's ``UNETR``: its convolutional skips at full, 1/2, 1/4 and
    1/8 resolution (``feature_size`` x 1, 2, 4, 8) and the ViT tokens at 1/16
    (``hidden_size``)."""
    f = feature_size
    return (f, 2 * f, 4 * f, 8 * f, hidden_size)


def _derived_widths(model: str, widths: tuple[int, ...]) -> tuple[int, ...]:
    """The widths a network builds from ``widths`` (fixed ratios: swinunetr, unetr)."""
    if model == "swinunetr":
        return swinunetr_channels(widths[0])
    if model == "unetr":
        return unetr_channels(widths[0], widths[-1] if len(widths) > 1 else _WIDTHS[model][-1])
    return widths


def target_spacing(fp: Fingerprint, anisotropy_threshold: float = 3.0) -> tuple[float, ...]:
    """nnU-Net's target spacing (mm, RAS order) for the cohort of ``fp``."""
    spacings = np.asarray(fp.spacings, dtype=float)
    target = np.median(spacings, axis=0)
    shapes = np.asarray(fp.shapes, dtype=float)
    sizes = np.median(shapes * spacings / target, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    anisotropic = target[worst] > anisotropy_threshold * min(target[others])
    few_slices = sizes[worst] * anisotropy_threshold < min(sizes[others])
    if anisotropic and few_slices:
        coarse = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(coarse, float(max(target[others])) + 1e-5)
    return tuple(round(float(s), 5) for s in target)


def mirror_axes(fp: Fingerprint, consistency: float = 0.9, min_cases: int = 5) -> tuple[int, ...]:
    """RAS axes along which mirroring does not contradict a fixed label layout.

    An axis is dropped when, for some pair of foreground labels present together in at
    least ``min_cases`` cases, one label's centroid lies on the same side of the other's
    in more than ``consistency`` of those cases (e.g. anterior/posterior hippocampus along
    A, left/right kidney along R): a mirrored patch would show a layout never seen in real
    data with the labels swapped in meaning.
    """
    keys = sorted({k for c in fp.label_centroids for k in c}, key=int)
    keep = []
    for axis in range(3):
        ordered = False
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                diffs = [c[a][axis] - c[b][axis] for c in fp.label_centroids if a in c and b in c]
                if len(diffs) >= min_cases:
                    share = float(np.mean(np.asarray(diffs) < 0))
                    ordered |= max(share, 1.0 - share) > consistency
        if not ordered:
            keep.append(axis)
    return tuple(keep)


def _kernel(sp: np.ndarray) -> tuple[int, int, int]:
    k = [3 if s / sp.min() < 2 else 1 for s in sp]
    return (k[0], k[1], k[2])


def pooling(
    patch: np.ndarray, spacing: np.ndarray, max_pools: int
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Strides per level transition and kernel sizes per level (nnU-Net rule).

    Returns
    -------
    strides, kernels
        ``len(strides) == len(kernels) - 1``; each entry is per RAS axis.
    """
    size = patch.astype(float).copy()
    sp = spacing.astype(float).copy()
    strides: list[tuple[int, int, int]] = []
    kernels: list[tuple[int, int, int]] = []
    for _ in range(max_pools):
        kernels.append(_kernel(sp))
        ok = (size >= _MIN_FEATURE) & (sp <= 2 * sp.min() + 1e-6)
        if not ok.any():
            break
        stride = (2 if ok[0] else 1, 2 if ok[1] else 1, 2 if ok[2] else 1)
        strides.append(stride)
        size = size / np.asarray(stride)
        sp = sp * np.asarray(stride)
    kernels.append(_kernel(sp))
    return strides, kernels[: len(strides) + 1]


def _fit_patch(median: np.ndarray, spacing: np.ndarray, max_voxels: float) -> np.ndarray:
    patch = np.maximum(median.copy(), 8.0)
    while np.prod(patch) > max_voxels:
        axis = int(np.argmax(patch * spacing))
        patch[axis] = max(8.0, patch[axis] * 0.9)
    return patch


def _shrink_in_steps(
    patch: np.ndarray,
    spacing: np.ndarray,
    divisor: np.ndarray,
    floor: np.ndarray,
    max_voxels: float,
) -> np.ndarray:
    """Shrink ``patch`` by whole ``divisor`` steps along its physically longest axes (never
    below ``floor``) until it fits ``max_voxels``."""
    patch = patch.copy()
    while np.prod(patch) > max_voxels:
        room = patch - divisor >= floor
        if not room.any():
            break
        axis = int(np.argmax(np.where(room, patch * spacing, -np.inf)))
        patch[axis] -= divisor[axis]
    return patch


def _head_channels(cfg: PlansConfig, model: str) -> int:
    """Feature maps of the ``unet`` top block before its 1x1x1 classifier (0: MONAI's own)."""
    if model != "unet":
        return 0
    return 0 if cfg.unet_head_channels is None else cfg.unet_head_channels


def _patch_and_pooling(
    cfg: PlansConfig, model: str, median: np.ndarray, spacing: np.ndarray, max_patch: float
) -> tuple[np.ndarray, list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Patch (voxels, RAS), strides and kernels; the patch is a multiple of the total stride."""
    if cfg.patch_size is not None:
        patch = np.asarray(cfg.patch_size, dtype=float)
    else:
        patch = _fit_patch(median, spacing, max_patch)
    strides, kernels = pooling(patch, spacing, _MAX_POOLS[model])
    if model in _FIXED_POOLING:  # fixed isotropic topologies
        strides = [(2, 2, 2)] * _MAX_POOLS[model]
        kernels = []
    if model == "highresnet":  # its five width groups all run at the input resolution
        strides = [(1, 1, 1)] * 4
        kernels = []
    divisor = np.prod(np.asarray(strides or [(1, 1, 1)]), axis=0)
    if model == "vnet":
        divisor = np.full(3, 16)
    floor = np.maximum(divisor, _MIN_PATCH.get(model, 0))
    if cfg.patch_size is None:
        patch = np.maximum(np.ceil(patch / divisor) * divisor, floor)
        if model in _SHRINK_TO_BUDGET:
            patch = _shrink_in_steps(patch, spacing, divisor, floor, max_patch)
    elif np.any(patch % divisor) or np.any(patch < floor):
        patch = np.maximum(np.ceil(patch / divisor) * divisor, floor)
        logger.warning(
            "patch_size rounded up to %s (multiple of %s, at least %s)", patch, divisor, floor
        )
    return patch, strides, kernels


def _widths(cfg: PlansConfig, model: str, levels: int) -> tuple[int, ...]:
    """Widths per level: the config's or the default, as the network builds them."""
    widths = tuple(cfg.channels or _WIDTHS[model])
    if model == "vnet" and cfg.channels and tuple(cfg.channels) != VNET_CHANNELS:
        # MONAI's VNet has no width argument: plans record the network that is built.
        logger.warning(
            "plans.channels %s ignored for vnet: MONAI's VNet has fixed widths %s",
            list(cfg.channels),
            list(VNET_CHANNELS),
        )
        widths = VNET_CHANNELS
    built = _derived_widths(model, widths)
    # swinunetr may be given (feature_size,), unetr (feature_size, hidden_size)
    short = {"swinunetr": 1, "unetr": 2}.get(model, 0)
    if cfg.channels and built != widths and len(widths) > short:
        logger.warning(
            "plans.channels %s: %s has fixed width ratios; it builds %s", list(widths), model, built
        )
    widths = built
    if len(widths) < levels:
        widths = widths + (widths[-1],) * (levels - len(widths))
    widths = widths[:levels]
    if model == "deeplab" and widths[-1] % 4:
        raise MedsegError(
            "plans.channels: expected deeplab's deepest width divisible by 4 (one quarter per "
            f"atrous branch), found {widths[-1]} in {list(widths)}"
        )
    return widths


def _network(
    cfg: PlansConfig,
    model: str,
    strides: list[tuple[int, int, int]],
    kernels: list[tuple[int, int, int]],
    full_res: bool,
    patch: tuple[int, int, int],
) -> NetworkSpec:
    return NetworkSpec(
        name=model,  # type: ignore[arg-type]
        channels=_widths(cfg, model, len(strides) + 1),
        strides=tuple(strides),
        kernel_sizes=tuple(kernels) if model == "dynunet" else (),
        num_res_units=2 if model == "unet" else (1 if model == "dynunet" else 0),
        # U-Net++ is trained with its nested decoders supervised (Zhou et al., 2018)
        deep_supervision=model in ("dynunet", "basicunetplusplus"),
        full_res_level=model == "unet" and full_res,
        head_channels=_head_channels(cfg, model),
        dropout=cfg.dropout,
        input_size=patch if model == "unetr" else (),
    )


def plan(fp: Fingerprint, device: str = "cpu", cfg: PlansConfig | None = None) -> Plans:
    """Derive :class:`Plans` from ``fp`` for ``device`` (``"cpu"`` or ``"cuda"``).

    ``cfg`` overrides any planned value; the default network is the light MONAI ``UNet``
    on CPU and ``DynUNet`` in the nnU-Net layout with deep supervision on CUDA.
    ``cfg.configuration`` ``2d`` plans nnU-Net's 2d configuration instead
    (:func:`medseg.planning.planner_2d.plan_2d`), ``3d_lowres`` 3D at a coarser spacing
    (:func:`medseg.planning.configurations.plan_lowres`); ``auto`` and ``3d`` plan 3D at full
    resolution (``auto`` trains several configurations in ``medseg.workflows``).
    """
    cfg = cfg or PlansConfig()
    if cfg.configuration == "2d":
        from medseg.planning.planner_2d import plan_2d  # it builds on this module

        return plan_2d(fp, device, cfg)
    if cfg.configuration == "3d_lowres":
        from medseg.planning.configurations import plan_lowres  # it builds on this module

        return plan_lowres(fp, device, cfg)
    spacing = np.asarray(cfg.target_spacing or target_spacing(fp, cfg.anisotropy_threshold))
    shapes = np.asarray(fp.shapes, float) * np.asarray(fp.spacings, float) / spacing
    median = np.median(shapes, axis=0)
    model = cfg.model if cfg.model != "auto" else ("dynunet" if device == "cuda" else "unet")
    cuda = device == "cuda"
    budget = cfg.step_voxels or (CUDA_STEP_VOXELS if cuda else CPU_STEP_VOXELS)
    max_patch = cfg.patch_voxels or (CUDA_PATCH_VOXELS if cuda else CPU_PATCH_VOXELS)
    patch, strides, kernels = _patch_and_pooling(cfg, model, median, spacing, max_patch)
    patch_vox = float(np.prod(patch))
    batch = cfg.batch_size or int(np.clip(budget // patch_vox, 2, 16))
    full_res = cfg.unet_full_res
    if full_res is None:
        # See _WIDTHS: worth its 2.5x step time when the step fits the budget (MSD
        # Hippocampus), not when a batch of 2 already overshoots it (CT phantoms).
        full_res = batch * patch_vox <= budget
    patch_int = (int(patch[0]), int(patch[1]), int(patch[2]))
    network = _network(cfg, model, strides, kernels, full_res, patch_int)
    channels = channel_plans(fp, cfg)
    first = channels[0]
    plans = Plans(
        modality=fp.modality,
        labels={int(k): v for k, v in fp.labels.items()},
        target_spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        normalization=first.normalization,
        patch_size=patch_int,
        batch_size=batch,
        network=network,
        intensity_clip=first.intensity_clip,
        intensity_mean=first.intensity_mean,
        intensity_std=first.intensity_std,
        crop_foreground=True,
        median_shape=tuple(round(float(m)) for m in median),  # type: ignore[arg-type]
        mirror_axes=mirror_axes(fp),
        input_channels=channels if len(channels) > 1 else (),
    )
    network.validate()
    plans.validate()
    return plans

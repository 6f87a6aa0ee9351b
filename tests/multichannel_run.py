"""A tiny two-channel (CT + PET) model and seeded phantom cases for multi-channel inference tests.

The scene lives in world coordinates (RAS, mm), so each channel samples it on its own grid:
a body box (CT 100 HU, PET 20) holding an ellipsoid organ (label 1; CT 200, PET 60) with a
core (label 2; CT 300, PET 180). The CT window of the plans clips at 200 HU, so organ and
core look the same in CT: only the PET channel tells the core apart. The PET grid is coarser
(2 mm) and shifted against the CT grid (1 mm), as a PET is against its CT.

``fit_two_channel`` fits a 3-level UNet (4, 8, 16 channels, two input channels) for 60 Adam
steps on two cases (~2 s on one core); ``write_two_channel_run`` writes it as a run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tiny_run import fit_batch

from medseg.config import to_dict
from medseg.io import Volume
from medseg.planning.plans import ChannelPlan, NetworkSpec, Plans, save_plans

LABELS = {0: "background", 1: "organ", 2: "core"}
CT_SHAPE, CT_SPACING = (24, 24, 20), (1.0, 1.0, 1.0)
PET_SPACING, PET_SHIFT = (2.0, 2.0, 2.0), (0.6, -0.4, 0.3)
RADII_MM = (6.0, 7.0, 5.0)


def two_channel_plans() -> Plans:
    """CT (clipped to -100..200 HU, dataset z-score) + PET (per-image z-score) plans, 1 mm."""
    ct = ChannelPlan("CT", "ct", (-100.0, 200.0), 40.0, 50.0)
    return Plans(
        modality="CT",
        labels=dict(LABELS),
        target_spacing=(1.0, 1.0, 1.0),
        normalization="ct",
        intensity_clip=ct.intensity_clip,
        intensity_mean=ct.intensity_mean,
        intensity_std=ct.intensity_std,
        patch_size=(16, 16, 16),
        batch_size=2,
        network=NetworkSpec(
            name="unet", channels=(4, 8, 16), strides=((2, 2, 2), (2, 2, 2)), num_res_units=1
        ),
        input_channels=(ct, ChannelPlan("PET", "zscore")),
    )


def grid(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], shift: tuple[float, ...]
) -> np.ndarray:
    """Voxel-to-RAS affine of a grid centred on world ``shift`` (mm)."""
    sp = np.asarray(spacing, float)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * sp + np.asarray(shift, float)
    return affine


def _scene(
    affine: np.ndarray, shape: tuple[int, ...], centre: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Labels (0, 1, 2) and the body mask at the voxel centres of a grid."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    r = np.sqrt((((world - centre) / np.asarray(RADII_MM)) ** 2).sum(-1))
    labels = np.select([r < 0.5, r < 1.0], [2, 1], 0).astype(np.uint8)
    body = np.all(np.abs(world[..., :2]) < 9.6, axis=-1)
    return labels, body


def ct_pet_case(
    seed: int = 0,
    *,
    centre_mm: tuple[float, float, float] = (1.0, -2.0, 0.5),
    pet_spacing: tuple[float, float, float] = PET_SPACING,
    pet_shift: tuple[float, float, float] = PET_SHIFT,
    core_uptake: float = 160.0,
) -> tuple[Volume, Volume, Volume]:
    """``(ct, pet, labels)``: CT and labels on the CT grid, PET on its own (coarser) grid.

    ``core_uptake``: PET above the body in the core (the organ's is 40; 40 hides the core).
    """
    rng = np.random.default_rng(seed)
    centre = np.asarray(centre_mm, float)
    ct_affine = grid(CT_SHAPE, CT_SPACING, (0.0, 0.0, 0.0))
    labels, body = _scene(ct_affine, CT_SHAPE, centre)
    ct = np.where(body, 100.0, 0.0) + np.select([labels == 2, labels == 1], [200.0, 100.0], 0.0)
    ct = ct + body * rng.normal(0, 8, CT_SHAPE)
    extent = np.asarray(CT_SHAPE) * np.asarray(CT_SPACING)
    pet_shape = tuple(int(np.ceil(e / s)) + 1 for e, s in zip(extent, pet_spacing, strict=True))
    pet_affine = grid(pet_shape, pet_spacing, pet_shift)  # type: ignore[arg-type]
    pet_labels, pet_body = _scene(pet_affine, pet_shape, centre)
    pet = np.where(pet_body, 20.0, 0.0) + np.select(
        [pet_labels == 2, pet_labels == 1], [core_uptake, 40.0], 0.0
    )
    pet = pet + pet_body * rng.normal(0, 2, pet_shape)
    return (
        Volume(ct.astype(np.float32), ct_affine, meta={"is_image": True}),
        Volume(pet.astype(np.float32), pet_affine, meta={"is_image": True}),
        Volume(labels, ct_affine.copy(), meta={"is_image": False}),
    )


def fit_two_channel(plans: Plans, steps: int = 60) -> torch.nn.Module:
    """The plans' two-channel network fitted on two preprocessed cases (16^3 centre crops)."""
    from medseg.io.channels import resample_to_grid
    from medseg.preprocessing.pipeline import preprocessing_transforms

    torch.manual_seed(0)
    xf = preprocessing_transforms(plans, keys=("image", "label"), load=False)
    xs, ys = [], []
    for s in range(2):
        ct, pet, lab = ct_pet_case(s, centre_mm=(2.0 * s - 1, -1.0, 1.0 - s))
        image = np.stack([ct.array, resample_to_grid(pet, ct.affine, ct.spatial_shape)])
        d = xf({"image": ct.with_array(image).to_metatensor(), "label": lab.to_metatensor()})
        start = [(n - 16) // 2 for n in d["image"].shape[1:]]
        crop = (slice(None), *(slice(a, a + 16) for a in start))
        xs.append(d["image"].as_tensor()[crop])
        ys.append(d["label"].as_tensor()[crop][0].long())
    return fit_batch(plans, xs, ys, steps, plans.in_channels)


def write_two_channel_run(root: Path, plans: Plans, net: torch.nn.Module) -> Path:
    """A one-fold run directory (plans.json, dataset.json, fold_0/checkpoint_best.pt)."""
    root.mkdir(parents=True, exist_ok=True)
    save_plans(plans, root / "plans.json")
    labels = {str(k): v for k, v in plans.labels.items()}
    modality = {str(n): m for n, m in enumerate(plans.channel_names)}
    dataset = {"name": "ct_pet_phantom", "modality": modality, "labels": labels}
    (root / "dataset.json").write_text(json.dumps(dataset))
    pdict = to_dict(plans)
    pdict["labels"] = labels
    (root / "fold_0").mkdir(exist_ok=True)
    state = {"model": net.state_dict(), "epoch": 1, "best_metric": 0.5, "plans": pdict}
    torch.save(state, root / "fold_0" / "checkpoint_best.pt")
    metrics = {"fold": "fold_0", "best_epoch": 1, "best_dice": {"organ": 0.5, "core": 0.5}}
    (root / "fold_0" / "metrics.json").write_text(json.dumps(metrics))
    return root

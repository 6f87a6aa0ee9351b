"""What an exported bundle's ``configs/inference.json`` calls when MONAI runs it.

``python -m monai.bundle run --config_file BUNDLE/configs/inference.json --dataset_dir IN
--output_dir OUT`` parses the config and evaluates its ``run`` entry, which calls
:func:`predict_folder` with a :class:`~medseg.inference.Predictor` built by
:func:`bundle_predictor`. The predictor is the one ``medseg predict --model BUNDLE``
uses, so the two give the same masks (same preprocessing, inverse resampling and
post-processing).

Security: MONAI evaluates ``$`` strings in a config as Python and imports every
``_target_``. Run only bundles you trust. ``medseg predict --model BUNDLE`` never parses
``inference.json``: it reads ``configs/plans.json``, ``configs/postprocessing.json`` and the
weights ``models/model.pt`` with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from medseg.errors import MedsegError
from medseg.inference.config import InferConfig
from medseg.inference.predictor import Predictor

logger = logging.getLogger(__name__)

BUNDLE_MARKERS = ("configs/inference.json", "configs/plans.json", "models/model.pt")


def is_medseg_bundle(path: str | Path) -> bool:
    """True when ``path`` holds the files a medseg-exported bundle needs to run."""
    return all((Path(path) / m).is_file() for m in BUNDLE_MARKERS)


def locate_bundle_root() -> str:
    """Find the root folder of the bundle MONAI is running.

    ``monai.bundle run`` puts the bundle root (the parent of the config file's ``configs/``
    folder) on ``sys.path`` before it evaluates the ``run`` entry; MONAI exposes no other
    handle on the config file's location. The first ``sys.path`` entry that holds a medseg
    bundle is returned. Pass ``--bundle_root DIR`` to ``monai.bundle run`` to skip this.

    Raises
    ------
    MedsegError
        When no entry of ``sys.path`` is a medseg bundle.
    """
    for entry in sys.path:
        if entry and is_medseg_bundle(entry):
            return str(Path(entry).resolve())
    raise MedsegError(
        "cannot locate the bundle root: expected a folder with "
        f"{', '.join(BUNDLE_MARKERS)} on sys.path; pass --bundle_root DIR to monai.bundle run"
    )


def bundle_predictor(
    bundle_root: str,
    *,
    device: str = "auto",
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    tta: bool = False,
    postprocess: str = "auto",
    crf: bool | None = None,
    overwrite: bool = False,
) -> Predictor:
    """Build the predictor of the bundle at ``bundle_root`` (same code as ``medseg predict``)."""
    if not is_medseg_bundle(bundle_root):
        raise MedsegError(f"expected a medseg bundle with {', '.join(BUNDLE_MARKERS)}", bundle_root)
    config = InferConfig(
        device=device,
        overlap=overlap,
        sw_batch_size=sw_batch_size,
        tta=tta,
        postprocess=postprocess,  # type: ignore[arg-type]
        crf=crf,
        overwrite=overwrite,
    )
    return Predictor.from_path(bundle_root, config=config, kind="bundle")


def predict_folder(predictor: Predictor, dataset_dir: str, output_dir: str) -> int:
    """Segment every case under ``dataset_dir`` into ``output_dir``; return 0.

    Cases are found as ``medseg predict --input`` finds them
    (:func:`medseg.inference.cases.discover_cases`): for a model of several input channels,
    ``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``, ... (or DICOM folders ``CASE_0000/``) are the
    channels of the case ``CASE``, whose mask is ``CASE.nii.gz`` on channel 0's grid.

    Raises
    ------
    MedsegError
        If any case failed (after the others were written), so ``monai.bundle run``
        exits non-zero.
    """
    from medseg.inference.batch import predict_batch
    from medseg.io.outputs import check_output_dir

    check_output_dir(output_dir, flag="--output_dir", inputs=[("--dataset_dir", dataset_dir)])
    summary = predict_batch(predictor, dataset_dir, output_dir, progress=False)
    failed = summary.failed
    logger.info("bundle prediction: %s -> %s", summary.counts(), output_dir)
    if failed:
        names = ", ".join(r.name for r in failed)
        raise MedsegError(f"{len(failed)} case(s) failed: {names} (see summary.json)", output_dir)
    return 0

"""``InferConfig``: every option of prediction, as data, and its YAML file.

``medseg predict --config infer.yaml`` reads the file with :func:`load_infer_config`; its
top-level keys are the fields of :class:`InferConfig` (no section), every key optional::

    folds: [0, 1]          # [] = every trained fold
    checkpoint: best       # best | last
    tta: false
    overlap: 0.5
    sw_batch_size: 4
    sigma_scale: 0.125
    device: auto           # auto | cpu | cuda | cuda:N
    accumulation: auto     # auto | float16 | float32
    fp16_threshold_mvox: 64.0
    slab_mvox: 4.0
    postprocess: auto      # auto | none
    body_crop: auto        # auto (on for CT models) | true | false
    crf: null              # null: as decided after training; true / false: force on / off
    save_probabilities: false
    overwrite: false
    series: null
    prefetch: true
    manifest: null         # a manifest whose "test" list to predict (instead of --input)
    data_root: null        # the folder the manifest's paths start from
                           # (both relative to the working directory, as the flags are)
    allow_outside_root: false
    backend: torch         # torch | onnxruntime | openvino
    formats: [nifti]       # any of nifti, dicom-seg, rtstruct
    instances: []          # label values or names split into lesion instances
    reference: null        # DICOM series (or folder of per-case series) for NIfTI inputs

Command-line flags override the fields they name, only when given. The resolved config is
written to ``OUTPUT/predict_config.yaml`` and can be passed back to ``--config``.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medseg.config import dump_yaml, load_config
from medseg.errors import MedsegError

Accumulation = Literal["auto", "float16", "float32"]
PostprocessMode = Literal["auto", "none"]
Checkpoint = Literal["best", "last"]
Backend = Literal["torch", "onnxruntime", "openvino"]
OutputFormat = Literal["nifti", "dicom-seg", "rtstruct"]
OUTPUT_FORMATS: tuple[str, ...] = typing.get_args(OutputFormat)
RESOLVED_NAME = "predict_config.yaml"
_LITERALS: dict[str, Any] = {
    "checkpoint": Checkpoint,
    "accumulation": Accumulation,
    "postprocess": PostprocessMode,
    "backend": Backend,
}


@dataclass(frozen=True)
class InferConfig:
    """Options of sliding-window prediction and of batch prediction.

    Parameters
    ----------
    folds
        Folds of a run directory to ensemble (probabilities averaged); ``()`` = every
        ``fold_<k>`` with a checkpoint.
    checkpoint
        ``"best"`` (``checkpoint_best.pt``) or ``"last"`` (``checkpoint_last.pt``).
    tta
        Mirror test-time augmentation: average over the flips of the axes the model was
        trained to mirror (``Plans.mirror_axes``; all three axes: 8 flips, 8x compute).
    overlap
        Fraction of overlap between neighbouring windows (nnU-Net: 0.5).
    sw_batch_size
        Windows per forward pass.
    sigma_scale
        Gaussian blending weight, sigma as a fraction of the window size (nnU-Net: 1/8).
    device
        ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    accumulation
        dtype of the blended probability map on the preprocessed grid; ``auto`` uses
        float16 when the map would exceed ``fp16_threshold_mvox`` million values.
    fp16_threshold_mvox
        Size (classes x voxels, millions) above which ``auto`` accumulates in float16.
    slab_mvox
        Output voxels (millions) resampled per slab when mapping back to the source grid.
    postprocess
        ``auto``: apply the run's ``postprocessing.json`` (decided on validation data);
        ``none``: raw argmax.
    crf
        Force the dense CRF on (``True``) or off (``False``); ``None`` follows the run's
        decision.
    body_crop
        Crop each scan to the body (CT: above -500 HU, the largest component and every
        component of at least 1 % of its size, 10 mm margin; see
        :mod:`medseg.preprocessing.body_crop`) before the sliding window; outside it the mask
        is background. ``"auto"``: on when every input channel has the ``ct`` normalisation
        (fixed cohort statistics; a per-image z-score, e.g. PET's, would see the crop's
        statistics instead of the whole scan's).
    save_probabilities
        Also write ``<case>_probabilities.nii.gz`` (4D, classes last, on the source grid).
    overwrite
        Recompute cases whose outputs already exist.
    series
        DICOM SeriesInstanceUID (or 1-based number) when a folder holds several series: of
        channel 0 (the only channel of a one-channel model); a manifest's per-channel
        ``"series"`` takes precedence.
    prefetch
        Load and preprocess the next case in a background thread during compute.
    manifest
        A manifest (MSD ``dataset.json`` layout) whose ``"test"`` cases are predicted, each
        with all its channels and series, named by its id; instead of a folder of cases.
    data_root
        Folder the manifest's relative paths start from (needed with ``manifest``).
    allow_outside_root
        Accept manifest paths that leave ``data_root`` (refused by default).
    backend
        What runs the networks: ``torch``, or their ONNX export (made once per checkpoint,
        cached as ``RUN_DIR/fold_<k>/model.onnx``; a bundle's ``models/model.onnx``) run by
        ``onnxruntime`` or ``openvino`` on the CPU (``pip install 'medseg[onnx]'``).
    formats
        What to write per case, any of ``"nifti"`` (``CASE.nii.gz``), ``"dicom-seg"``
        (``CASE_seg.dcm``) and ``"rtstruct"`` (``CASE_rtstruct.dcm``); the DICOM ones
        reference the case's DICOM series (:mod:`medseg.inference.case_outputs`).
    instances
        Label values or names (of the model's labels) split into connected lesion instances:
        ``CASE_instances.nii.gz``, ``CASE_lesions.csv/.json`` and the folder's
        ``lesions.csv/.json``; ``()``: none.
    reference
        For NIfTI/NRRD inputs with a DICOM format: the DICOM series folder the scans came
        from, or a folder holding one series folder per case, named by case id.
    """

    folds: tuple[int, ...] = ()
    checkpoint: Checkpoint = "best"
    tta: bool = False
    overlap: float = 0.5
    sw_batch_size: int = 4
    sigma_scale: float = 0.125
    device: str = "auto"
    accumulation: Accumulation = "auto"
    fp16_threshold_mvox: float = 64.0
    slab_mvox: float = 4.0
    postprocess: PostprocessMode = "auto"
    crf: bool | None = None
    body_crop: bool | Literal["auto"] = "auto"
    save_probabilities: bool = False
    overwrite: bool = False
    series: str | None = None
    prefetch: bool = True
    manifest: str | None = None
    data_root: str | None = None
    allow_outside_root: bool = False
    # torch: benchmarks/predict_throughput.py (CT phantoms 256x256x160 with air, light UNet,
    # 2 threads, OMP_WAIT_POLICY=PASSIVE, interleaved): s/case torch 9.5, onnxruntime 10.1,
    # openvino 8.2 (plain MONAI 12.1); OpenVINO's probabilities differ from torch's by up to
    # 3.3e-4 (> the 1e-4 parity aim), ONNX Runtime is slower, and torch needs no extra package.
    backend: Backend = "torch"
    formats: tuple[OutputFormat, ...] = ("nifti",)
    instances: tuple[int | str, ...] = ()
    reference: str | None = None

    def __post_init__(self) -> None:
        """Raise :class:`MedsegError` naming the first out-of-range field.

        The one place an ``InferConfig`` is checked: every instance, whether read from YAML
        (:func:`medseg.config.from_dict` builds it through ``__init__``), built in Python or
        made by ``dataclasses.replace``, is validated once, when it is constructed, so no
        consumer (``Predictor``, ``medseg predict``) needs to check it again. There is no
        ``validate()`` method on purpose: ``from_dict`` would call it a second time.
        """
        for name in ("checkpoint", "accumulation", "postprocess", "backend"):
            allowed = typing.get_args(_LITERALS[name])
            if getattr(self, name) not in allowed:
                raise MedsegError(
                    f"infer.{name}: expected one of {list(allowed)}, found {getattr(self, name)!r}"
                )
        if not 0.0 <= self.overlap < 1.0:
            raise MedsegError(f"infer.overlap: expected 0 <= overlap < 1, found {self.overlap}")
        if self.sw_batch_size < 1:
            raise MedsegError(f"infer.sw_batch_size: expected >= 1, found {self.sw_batch_size}")
        if self.sigma_scale <= 0:
            raise MedsegError(f"infer.sigma_scale: expected > 0, found {self.sigma_scale}")
        if self.body_crop not in (True, False, "auto"):
            raise MedsegError(
                f"infer.body_crop: expected auto, true or false, found {self.body_crop!r}"
            )
        if self.slab_mvox <= 0:
            raise MedsegError(f"infer.slab_mvox: expected > 0, found {self.slab_mvox}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise MedsegError(f"infer.device: expected auto, cpu or cuda, found {self.device!r}")
        if any(f < 0 for f in self.folds):
            raise MedsegError(f"infer.folds: expected fold numbers >= 0, found {self.folds}")
        if (self.manifest is None) != (self.data_root is None):
            given, other = ("manifest", "data_root") if self.manifest else ("data_root", "manifest")
            raise MedsegError(
                f"infer.{given}: expected {other} as well (a manifest's paths start from its "
                f"data root), found {given} alone"
            )
        if self.fp16_threshold_mvox < 0:
            raise MedsegError(
                f"infer.fp16_threshold_mvox: expected >= 0, found {self.fp16_threshold_mvox}"
            )
        self._check_outputs()

    def _check_outputs(self) -> None:
        """``formats``, ``instances`` and ``reference`` (label names are checked against the
        model later, by :class:`medseg.inference.output_request.OutputRequest`)."""
        bad = [f for f in self.formats if f not in OUTPUT_FORMATS]
        if not self.formats or bad or len(set(self.formats)) != len(self.formats):
            raise MedsegError(
                f"infer.formats: expected distinct formats among {list(OUTPUT_FORMATS)} (at "
                f"least one), found {list(self.formats)}"
            )
        names = [str(v) for v in self.instances]
        if any(
            isinstance(v, bool) or (isinstance(v, int) and v < 1) or (isinstance(v, str) and not v)
            for v in self.instances
        ) or len(set(names)) != len(names):
            raise MedsegError(
                "infer.instances: expected distinct label values >= 1 or label names, found "
                f"{list(self.instances)}"
            )
        if self.reference is not None and not set(self.formats) & {"dicom-seg", "rtstruct"}:
            raise MedsegError(
                "infer.reference: expected only with a DICOM format (dicom-seg or rtstruct: "
                f"the series they reference), found formats {list(self.formats)}"
            )


def load_infer_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> InferConfig:
    """Read a prediction config (or start from defaults) and apply overrides.

    Parameters
    ----------
    path
        YAML file whose top-level keys are :class:`InferConfig` fields (see the module
        docstring); ``None``: defaults only.
    overrides
        ``{"overlap": 0.25, ...}`` (field names), e.g. from command-line flags; ``None``
        values are ignored (flag not given).
    flags
        Field name -> the command-line flag that set it (``{"overlap": "--overlap"}``): a bad
        value from an override is then reported under the flag (``--overlap: expected ...``).

    Returns
    -------
    InferConfig
        Type-checked and range-checked (once, on construction).

    Raises
    ------
    MedsegError
        For unknown keys (with a "did you mean" hint), wrong types or out-of-range values,
        naming the key; prefixed with ``path`` when the bad value came from the file.
    """
    return load_config(InferConfig, path, overrides, "infer", flags=flags)


def save_infer_config(config: InferConfig, folder: str | Path) -> Path:
    """Write ``config`` as ``folder/predict_config.yaml`` (atomically); return the path.

    The file loads back with :func:`load_infer_config` to an equal config.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return dump_yaml(config, out / RESOLVED_NAME)


def parse_folds(text: str) -> tuple[int, ...]:
    """``"0,1"`` -> ``(0, 1)``; ``"all"`` or ``""`` -> ``()`` (every fold of the run)."""
    text = text.strip().lower()
    if text in ("", "all"):
        return ()
    try:
        folds = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise MedsegError(f"--folds: expected 'all' or numbers like '0,1', found '{text}'") from exc
    if any(f < 0 for f in folds):
        raise MedsegError(f"--folds: expected fold numbers >= 0, found '{text}'")
    return folds

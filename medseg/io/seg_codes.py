"""What a segment is and who made it: property codes, display colours, algorithm identity.

Shared by the DICOM-SEG writer (:mod:`medseg.io.dicom_seg_write`) and the RTSTRUCT writer
(:mod:`medseg.io.rtstruct_write`). The codes come from pydicom's code dictionary
(``pydicom.sr.codedict.codes``: SNOMED CT ``SCT`` and DICOM ``DCM`` schemes, the categories of
DICOM CID 7150 "Segmentation Property Categories"); no code value is typed here by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from medseg import __version__

#: Label-name words that mean a tumour; checked before the organ words, so "liver_tumour" is a
#: tumour (category Morphologically Abnormal Structure), not the liver.
_TUMOUR_WORDS: dict[str, Code] = {
    "tumour": codes.SCT.Neoplasm,
    "tumor": codes.SCT.Neoplasm,
    "neoplasm": codes.SCT.Neoplasm,
    "gtv": codes.SCT.Neoplasm,
    "cancer": codes.SCT.Neoplasm,
    "mass": codes.SCT.Mass,
    "lesion": codes.SCT.Lesion,
    "lesions": codes.SCT.Lesion,
    "metastasis": codes.SCT.Metastasis,
    "nodule": codes.SCT.Nodule,
    "cyst": codes.SCT.Cyst,
}

#: Label-name words for common anatomy (category Anatomical Structure). "left"/"right" and
#: other words are ignored: "kidney_left" is a kidney.
_ORGAN_WORDS: dict[str, Code] = {
    "liver": codes.SCT.Liver,
    "spleen": codes.SCT.Spleen,
    "kidney": codes.SCT.Kidney,
    "kidneys": codes.SCT.Kidney,
    "pancreas": codes.SCT.Pancreas,
    "lung": codes.SCT.Lung,
    "lungs": codes.SCT.Lung,
    "heart": codes.SCT.Heart,
    "brain": codes.SCT.Brain,
    "hippocampus": codes.SCT.Hippocampus,
    "bladder": codes.SCT.Bladder,
    "prostate": codes.SCT.Prostate,
    "aorta": codes.SCT.Aorta,
    "stomach": codes.SCT.Stomach,
    "gallbladder": codes.SCT.Gallbladder,
    "esophagus": codes.SCT.Esophagus,
    "oesophagus": codes.SCT.Esophagus,
    "duodenum": codes.SCT.Duodenum,
    "colon": codes.SCT.Colon,
    "rectum": codes.SCT.Rectum,
    "adrenal": codes.SCT.AdrenalGland,
    "trachea": codes.SCT.Trachea,
    "spinalcord": codes.SCT.SpinalCord,
    "vertebra": codes.SCT.Vertebra,
    "spine": codes.SCT.Spine,
    "femur": codes.SCT.Femur,
    "bone": codes.SCT.Bone,
    "muscle": codes.SCT.Muscle,
    "uterus": codes.SCT.Uterus,
    "thyroid": codes.SCT.Thyroid,
    "ivc": codes.SCT.InferiorVenaCava,
    "portalvein": codes.SCT.PortalVein,
}

#: Two-word names joined before lookup ("spinal cord" -> "spinalcord").
_JOINED = {("spinal", "cord"): "spinalcord", ("portal", "vein"): "portalvein"}


@dataclass(frozen=True)
class SegmentCode:
    """The coded meaning of one segment.

    Attributes
    ----------
    category
        Segmented Property Category (DICOM CID 7150), e.g. Anatomical Structure.
    type
        Segmented Property Type, e.g. SCT 10200004 "Liver".
    interpreted_type
        RTSTRUCT RTROIInterpretedType: ``"ORGAN"``, ``"GTV"`` or ``""`` (unknown).
    """

    category: Code
    type: Code
    interpreted_type: str


def _words(name: str) -> list[str]:
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    joined: list[str] = []
    i = 0
    while i < len(words):
        pair = tuple(words[i : i + 2])
        if pair in _JOINED:
            joined.append(_JOINED[pair])  # type: ignore[index]
            i += 2
        else:
            joined.append(words[i])
            i += 1
    return joined


def segment_code(name: str) -> SegmentCode:
    """The property category and type for a label name.

    Parameters
    ----------
    name
        A label name such as ``"liver"``, ``"kidney_left"``, ``"GTV_Mass_CT"``, ``"tumour"``.

    Returns
    -------
    SegmentCode
        Tumour words (tumour, tumor, neoplasm, GTV, cancer, mass, lesion, metastasis, nodule,
        cyst) give SCT codes under Morphologically Abnormal Structure; common organs give their
        SCT code under Anatomical Structure; any other name gives the generic SCT 85756007
        "Tissue" under Tissue.

    Examples
    --------
    >>> segment_code("liver_tumour").type.meaning
    'Neoplasm'
    >>> segment_code("Right Kidney").type.value
    '64033007'
    """
    words = _words(name)
    for word in words:
        if word in _TUMOUR_WORDS:
            category = codes.cid7150.MorphologicallyAbnormalStructure
            return SegmentCode(category, _TUMOUR_WORDS[word], "GTV")
    for word in words:
        if word in _ORGAN_WORDS:
            return SegmentCode(codes.cid7150.AnatomicalStructure, _ORGAN_WORDS[word], "ORGAN")
    return SegmentCode(codes.cid7150.Tissue, codes.SCT.Tissue, "")


def display_colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours (0..255) from matplotlib's ``tab20`` palette, in order.

    Beyond 20 the palette repeats (two segments of the same colour stay distinguishable by
    name; DICOM does not require distinct colours).
    """
    from matplotlib import colormaps  # imported here: only the writers need it

    table = colormaps["tab20"].colors  # type: ignore[attr-defined]
    # tab20 pairs a strong and a light shade: take the strong ones first.
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    out = []
    for i in range(n):
        r, g, b = table[order[i % 20]][:3]
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


@dataclass(frozen=True)
class AlgorithmInfo:
    """Who made a segmentation: written into the DICOM object's algorithm identification.

    Attributes
    ----------
    name
        Algorithm name (DICOM AlgorithmName), ``"medseg"``.
    version
        Algorithm version (AlgorithmVersion), ``medseg.__version__`` by default.
    model_name
        The model: a run folder or bundle name (written as an algorithm parameter and in the
        content description).
    weights_hash
        SHA-256 prefix(es) of the weights file(s), as in the prediction sidecar.
    """

    name: str = "medseg"
    version: str = __version__
    model_name: str = ""
    weights_hash: str = ""

    @classmethod
    def from_identity(cls, identity: Mapping[str, Any]) -> AlgorithmInfo:
        """Build from a prediction sidecar's ``"model"`` record (``Predictor.identity``).

        ``name`` or the last part of ``path`` gives the model name; ``weights_sha256``
        (``{fold: hash}``) gives the hash, folds joined as ``"0:abc,1:def"`` when several.
        """
        model = str(identity.get("name") or "")
        if not model and identity.get("path"):
            model = re.split(r"[\\/]", str(identity["path"]).rstrip("/\\"))[-1]
        hashes = identity.get("weights_sha256") or {}
        if isinstance(hashes, Mapping):
            parts = [str(v) for v in hashes.values()]
            if len(parts) > 1:
                parts = [f"{k}:{v}" for k, v in hashes.items()]
            weights = ",".join(parts)
        else:
            weights = str(hashes)
        return cls(model_name=model, weights_hash=weights)

    def parameters(self) -> dict[str, str]:
        """The algorithm parameters ``model`` and ``weights_sha256`` (empty ones left out)."""
        pairs = {"model": self.model_name, "weights_sha256": self.weights_hash}
        return {k: v for k, v in pairs.items() if v}

    def description(self, limit: int = 64) -> str:
        """One line for a DICOM LO field (at most ``limit`` characters)."""
        text = f"{self.name} {self.version}"
        if self.model_name:
            text += f" model {self.model_name}"
        if self.weights_hash:
            text += f" weights {self.weights_hash}"
        return text[:limit]

"""On-disk cache of preprocessed cases, shared by folds and runs.

Layout: ``CACHE_DIR/<plans key>/<case id>_<source key>_<state key>.npz`` where ``plans
key`` hashes the preprocessing fields of the plans (modality, spacing, normalisation and its
statistics, cropping, version), ``source key`` the resolved image/label paths and ``state
key`` their sizes and modification times. Changing the plans makes a new folder; touching a
file makes a new entry and deletes the superseded entries of the same source files (other
datasets that share a case id and a plans folder keep theirs). Each entry holds ``image``
float32 ``(1, X, Y, Z)`` and ``label`` uint8 ``(1, X, Y, Z)`` in RAS at the target spacing,
plus the RAS affine.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.manifest import Case
from medseg.io.atomic import atomic_path
from medseg.planning.plans import Plans
from medseg.preprocessing.pipeline import preprocessing_transforms

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "medseg" / "preprocessed"


def plans_key(plans: Plans) -> str:
    """Hash of the fields of ``plans`` that change preprocessed data."""
    fields = {
        "modality": plans.modality,
        "spacing": [round(s, 6) for s in plans.target_spacing],
        "norm": plans.normalization,
        "clip": plans.intensity_clip,
        "mean": plans.intensity_mean,
        "std": plans.intensity_std,
        "crop": plans.crop_foreground,
        "version": plans.version,
        "cache_format": 2,
    }
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _sources(case: Case) -> list[Path]:
    return [Path(p) for p in (case.image, case.label) if p is not None]


def source_key(case: Case) -> str:
    """Hash of a case's resolved file paths."""
    parts = [str(p.resolve()) for p in _sources(case)]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:10]


def file_key(case: Case) -> str:
    """``<source key>_<state key>``: the paths, then their sizes and modification times."""
    parts = []
    for p in _sources(case):
        st = p.stat()
        parts.append(f"{st.st_size}|{st.st_mtime_ns}")
    state = hashlib.sha1("\n".join(parts).encode()).hexdigest()[:10]
    return f"{source_key(case)}_{state}"


def _preprocess_one(case: Case, plans: Plans, target: Path) -> None:
    keys = ("image", "label") if case.label is not None else ("image",)
    pipeline = preprocessing_transforms(plans, keys=keys)
    data = {"image": case.image}
    if case.label is not None:
        data["label"] = case.label
    out = pipeline(data)
    image = out["image"]
    arrays: dict[str, Any] = {
        "image": np.asarray(image.detach().cpu().numpy(), dtype=np.float32),
        "affine": np.asarray(image.affine.cpu().numpy(), dtype=np.float64),
    }
    if case.label is not None:
        arrays["label"] = np.rint(out["label"].detach().cpu().numpy()).astype(np.uint8)
    with atomic_path(target) as tmp:  # ends with .npz, so np.savez keeps the name
        np.savez(tmp, **arrays)  # type: ignore[arg-type]


class PreprocessedCache:
    """Preprocess cases once per plans and read them back.

    Parameters
    ----------
    root
        Cache folder (created).
    plans
        The run's plans; their preprocessing fields select the sub-folder.
    """

    def __init__(self, root: str | Path, plans: Plans) -> None:
        self.plans = plans
        self.dir = Path(root) / plans_key(plans)
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, case: Case) -> Path:
        """Cache file of ``case``."""
        return self.dir / f"{case.case_id}_{file_key(case)}.npz"

    def ensure(
        self,
        cases: Sequence[Case],
        *,
        workers: int = 2,
        on_case: Callable[[Case], None] | None = None,
    ) -> list[Path]:
        """Preprocess the cases missing from the cache; return every case's cache file."""
        paths = [self.path(c) for c in cases]
        todo = [(c, p) for c, p in zip(cases, paths, strict=True) if not p.is_file()]
        if todo:
            logger.info("preprocessing %d of %d cases into %s", len(todo), len(cases), self.dir)

            def work(item: tuple[Case, Path]) -> None:
                _preprocess_one(item[0], self.plans, item[1])
                self._prune(item[0], item[1])
                if on_case is not None:
                    on_case(item[0])

            with ThreadPoolExecutor(max(1, workers)) as pool:
                list(pool.map(work, todo))
        return paths

    def _prune(self, case: Case, current: Path) -> None:
        """Delete entries of ``case``'s source files made before they last changed."""
        pattern = glob.escape(f"{case.case_id}_{source_key(case)}_") + "*.npz"
        for old in self.dir.glob(pattern):
            if old != current:
                logger.debug("removing superseded cache entry %s", old)
                old.unlink(missing_ok=True)

    @staticmethod
    def read(path: Path) -> dict[str, np.ndarray]:
        """Arrays of one cache file: ``image``, ``affine`` and (if labelled) ``label``."""
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

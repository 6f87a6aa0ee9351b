"""``ClassicConfig``: one classic segmentation method and its parameters, validated on construction.

``medseg segment-classic METHOD --config classic.yaml`` reads the file with
:func:`load_classic_config`; its top-level keys are the fields of :class:`ClassicConfig`,
every key optional (``method`` comes from the command line)::

    classes: 3             # multi-otsu / kmeans / gmm; otsu is always 2
    keep: [2]              # class indices to keep, 0 = darkest (default: the brightest)
    lower: -100.0          # intensity window in the image's units (HU for CT)
    upper: 300.0
    seeds_ras: [[10.0, -4.5, 22.0]]   # world points, RAS mm
    seeds_voxel: [[12, 30, 7]]        # voxel indices (i, j, k) of the file's array
    seed_mask: seeds/                 # a label map (or a folder of <case>.nii.gz)
    smooth_mm: 1.0
    label_value: 1
    largest_component: true
    fill_holes: true

What each method reads
----------------------
========================  ==============================================================
method                    parameters
========================  ==============================================================
``otsu``                  ``lower``/``upper`` (window), ``keep`` (0 below, 1 above)
``multi-otsu``            ``classes``, ``keep``, ``lower``/``upper``
``kmeans``, ``gmm``       ``classes``, ``keep``, ``lower``/``upper``, ``max_samples``,
                          ``random_seed``
``region-grow``           seeds (required), ``lower`` and/or ``upper`` (required)
``confidence-connected``  seeds (required), ``multiplier``, ``iterations``, ``neighborhood``
``watershed``             seeds (optional: else markers from the threshold), ``lower``/
                          ``upper`` (else Otsu), ``marker_mm``, ``gradient_mm``
========================  ==============================================================

Every method also reads ``smooth_mm`` (Gaussian pre-smoothing), ``label_value`` and the
morphology options (``largest_component``, ``min_size_mm3``, ``fill_holes``, ``closing_mm``,
``connectivity``: :class:`medseg.postprocessing.LabelPostprocessing`). Giving an option the
chosen method does not read (``--seed`` with ``otsu``) is an error, not silently ignored.

``watershed`` with object seeds but no background seeds (seed-mask value 2) takes its
background marker from the threshold, so it suits objects inside ``[lower, upper]`` (or above
Otsu's threshold): a seed in a darker object is surrounded by background markers and its
basin stays a few voxels.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.config import load_config
from medseg.errors import MedsegError
from medseg.postprocessing import LabelPostprocessing, PostprocessConfig

#: Method names, in the order ``--help`` lists them.
METHOD_NAMES = (
    "otsu",
    "multi-otsu",
    "kmeans",
    "gmm",
    "region-grow",
    "confidence-connected",
    "watershed",
)
_WINDOWED = {"otsu", "multi-otsu", "kmeans", "gmm", "region-grow", "watershed"}
_CLASSED = {"multi-otsu", "kmeans", "gmm"}
_SEEDED = {"region-grow", "confidence-connected", "watershed"}
#: option -> the methods that read it (giving it to another method is an error)
_READ_BY = {
    "classes": _CLASSED,
    "keep": _CLASSED | {"otsu"},
    "lower": _WINDOWED,
    "upper": _WINDOWED,
    "seeds_ras": _SEEDED,
    "seeds_voxel": _SEEDED,
    "seed_mask": _SEEDED,
}
_DEFAULT_CLASSES = {"otsu": 2, "multi-otsu": 3, "kmeans": 3, "gmm": 3}
MAX_CLASSES = 8

Point = tuple[float, float, float]
Index = tuple[int, int, int]


@dataclass(frozen=True)
class ClassicConfig:
    """A classic segmentation method and its parameters (checked when constructed).

    Parameters
    ----------
    method
        One of :data:`METHOD_NAMES`.
    classes
        Number of intensity classes of ``multi-otsu``, ``kmeans``, ``gmm`` (2 to 8; default 3).
    keep
        Class indices that form the mask, 0 = the darkest class; default: the brightest.
    lower, upper
        Intensity window in the image's units (HU for CT), inclusive. Thresholding and
        clustering methods classify only the voxels inside it (outside is background);
        ``region-grow`` grows through it; ``watershed`` takes it as its foreground
        (default: above the Otsu threshold).
    seeds_ras
        Seed points in world coordinates (RAS, mm), rounded to the nearest voxel.
    seeds_voxel
        Seed points as voxel indices ``(i, j, k)`` of the file's array.
    seed_mask
        A label map on the image's grid (or a folder holding ``<case>.nii.gz`` per case):
        value 2 marks background (``watershed`` markers), any other non-zero value object seeds.
    smooth_mm
        Gaussian pre-smoothing, sigma in mm (0: none).
    multiplier, iterations, neighborhood
        ``confidence-connected``: interval mean +/- ``multiplier`` standard deviations,
        re-estimated ``iterations`` times, first from a ``neighborhood``-voxel radius around
        each seed.
    marker_mm
        ``watershed`` without seeds: object markers are foreground voxels at least this deep
        (mm) inside the foreground, the background marker voxels this far outside it.
    gradient_mm
        ``watershed``: Gaussian sigma (mm) of the gradient magnitude that is flooded.
    max_samples
        ``kmeans``/``gmm`` fit on at most this many voxels (a seeded random subset).
    random_seed
        Seed of that subset and of the clustering initialisation.
    label_value
        Value of the mask in the written label map.
    largest_component, min_size_mm3, fill_holes, closing_mm, connectivity
        Post-processing of the mask, as :class:`medseg.postprocessing.LabelPostprocessing`.
    """

    method: str = "otsu"
    classes: int | None = None
    keep: tuple[int, ...] | None = None
    lower: float | None = None
    upper: float | None = None
    seeds_ras: tuple[Point, ...] = ()
    seeds_voxel: tuple[Index, ...] = ()
    seed_mask: str | None = None
    smooth_mm: float = 0.0
    multiplier: float = 2.5
    iterations: int = 4
    neighborhood: int = 1
    marker_mm: float = 2.0
    gradient_mm: float = 1.0
    max_samples: int = 50_000
    random_seed: int = 0
    label_value: int = 1
    largest_component: bool = False
    min_size_mm3: float = 0.0
    fill_holes: bool = False
    closing_mm: float = 0.0
    connectivity: int = 3

    def __post_init__(self) -> None:
        """Raise :class:`MedsegError` naming the first bad field (``classic.<field>: ...``)."""
        _check_method(self.method)
        self._normalise()
        self._check_usage()
        self._check_ranges()

    @property
    def has_seeds(self) -> bool:
        """True when seed points or a seed mask are given."""
        return bool(self.seeds_ras or self.seeds_voxel or self.seed_mask)

    @property
    def n_classes(self) -> int:
        """Number of intensity classes (2 for ``otsu``; 2 for the seeded methods' in/out)."""
        return self.classes or _DEFAULT_CLASSES.get(self.method, 2)

    @property
    def kept_classes(self) -> tuple[int, ...]:
        """The class indices that form the mask (default: the brightest class)."""
        return self.keep if self.keep is not None else (self.n_classes - 1,)

    def postprocessing(self) -> PostprocessConfig:
        """The morphology of ``label_value`` as :mod:`medseg.postprocessing` runs it."""
        step = LabelPostprocessing(
            largest_component=self.largest_component,
            min_size_mm3=self.min_size_mm3,
            fill_holes=self.fill_holes,
            closing_mm=self.closing_mm,
            connectivity=self.connectivity,
        )
        return PostprocessConfig(per_label={self.label_value: step})

    def _normalise(self) -> None:
        """Plain Python numbers (numpy scalars from callers), so the config dumps as JSON/YAML."""
        try:
            for name in ("lower", "upper"):
                value = getattr(self, name)
                object.__setattr__(self, name, None if value is None else float(value))
            points = tuple(tuple(float(v) for v in p) for p in self.seeds_ras)
            indices = tuple(tuple(int(v) for v in p) for p in self.seeds_voxel)
            keep = None if self.keep is None else tuple(int(k) for k in self.keep)
        except (TypeError, ValueError) as exc:
            raise MedsegError(
                f"classic: expected numbers in lower, upper, seeds, keep: {exc}"
            ) from exc
        for name, seeds in (("seeds_ras", points), ("seeds_voxel", indices)):
            if any(len(p) != 3 for p in seeds):
                raise MedsegError(
                    f"classic.{name}: expected points of three coordinates, found {list(seeds)}"
                )
        object.__setattr__(self, "seeds_ras", points)
        object.__setattr__(self, "seeds_voxel", indices)
        object.__setattr__(self, "keep", keep)

    def _check_usage(self) -> None:
        m = self.method
        for name, readers in _READ_BY.items():
            value = getattr(self, name)
            if value is not None and value != () and m not in readers:
                raise MedsegError(
                    f"classic.{name}: expected no {name} with method {m!r} (it is read by "
                    f"{', '.join(n for n in METHOD_NAMES if n in readers)}), found {value!r}"
                )
        if m in ("region-grow", "confidence-connected") and not self.has_seeds:
            raise MedsegError(
                f"{m}: expected seed points (--seed x,y,z in RAS mm, --seed-voxel i,j,k) or "
                "--seed-mask FILE, found none"
            )
        if m == "region-grow" and self.lower is None and self.upper is None:
            raise MedsegError(
                f"{m}: expected --lower and/or --upper (the intensity interval to grow through, "
                "in the image's units), found neither"
            )

    def _check_ranges(self) -> None:
        if self.classes is not None and not 2 <= self.classes <= MAX_CLASSES:
            raise MedsegError(f"classic.classes: expected 2 to {MAX_CLASSES}, found {self.classes}")
        if self.keep is not None and (
            not self.keep or any(not 0 <= k < self.n_classes for k in self.keep)
        ):
            raise MedsegError(
                f"classic.keep: expected class indices 0 (darkest) to {self.n_classes - 1} "
                f"(brightest) of {self.n_classes} classes, found {list(self.keep)}"
            )
        if self.lower is not None and self.upper is not None and not self.lower < self.upper:
            raise MedsegError(
                f"classic.lower: expected lower < upper, found {self.lower} and {self.upper}"
            )
        for name, value, ok, what in (
            ("smooth_mm", self.smooth_mm, self.smooth_mm >= 0, ">= 0 mm"),
            ("multiplier", self.multiplier, self.multiplier > 0, "> 0"),
            ("iterations", self.iterations, self.iterations >= 0, ">= 0"),
            ("neighborhood", self.neighborhood, self.neighborhood >= 0, ">= 0 voxels"),
            ("marker_mm", self.marker_mm, self.marker_mm > 0, "> 0 mm"),
            ("gradient_mm", self.gradient_mm, self.gradient_mm >= 0, ">= 0 mm"),
            ("max_samples", self.max_samples, self.max_samples >= 100, ">= 100"),
            ("label_value", self.label_value, 1 <= self.label_value <= 65535, "1 to 65535"),
            ("min_size_mm3", self.min_size_mm3, self.min_size_mm3 >= 0, ">= 0 mm^3"),
            ("closing_mm", self.closing_mm, self.closing_mm >= 0, ">= 0 mm"),
            ("connectivity", self.connectivity, self.connectivity in (1, 2, 3), "1, 2 or 3"),
        ):
            if not ok:
                raise MedsegError(f"classic.{name}: expected {what}, found {value}")


def _check_method(method: str) -> None:
    """Raise for an unknown method name, with a "did you mean" hint."""
    if method in METHOD_NAMES:
        return
    close = difflib.get_close_matches(str(method), METHOD_NAMES, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise MedsegError(
        f"classic.method: unknown method {method!r}{hint}; expected one of {list(METHOD_NAMES)}"
    )


def load_classic_config(
    path: str | Path | None,
    overrides: Mapping[str, Any],
    *,
    flags: Mapping[str, str] | None = None,
) -> ClassicConfig:
    """Build a :class:`ClassicConfig` from a YAML file (or defaults) and flag overrides.

    Parameters
    ----------
    path
        YAML file whose top-level keys are :class:`ClassicConfig` fields; ``None``: defaults.
    overrides
        ``{field: value}`` from the command line; ``None`` values (flag not given) are skipped.
    flags
        Field -> the flag that sets it, so that a bad flag value names the flag.

    Raises
    ------
    MedsegError
        For unknown keys (did-you-mean), wrong types, out-of-range values or options the
        method does not read, naming the key or the flag.
    """
    return load_config(ClassicConfig, path, overrides, "classic", flags=flags)

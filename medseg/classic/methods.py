"""Classic (non-learned) segmentation methods on arrays, and the registry ``name -> method``.

Every method has the signature ``method(image, spacing, config, seeds) -> mask``: ``image`` is
an ``(I, J, K)`` float32 array in the image's own units (HU for CT) and file voxel order,
``spacing`` the voxel size in mm along I, J, K, ``config`` a :class:`ClassicConfig` and
``seeds`` the case's :class:`Seeds` in voxel indices; it returns a boolean ``(I, J, K)`` mask.
:func:`segment_array` runs the pre-smoothing, one method and the morphology post-processing
(:func:`medseg.postprocessing.apply_postprocessing`) and returns the label map.

The work is done by the libraries: ``skimage.filters.threshold_otsu`` /
``threshold_multiotsu``, ``scipy.cluster.vq.kmeans2``, scikit-learn's ``GaussianMixture``,
SimpleITK's ``ConnectedThreshold`` / ``ConfidenceConnected`` and
``skimage.segmentation.watershed``; this module only chooses their inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.cluster.vq import kmeans2
from skimage.filters import threshold_multiotsu, threshold_otsu
from skimage.segmentation import watershed as sk_watershed

from medseg.classic.config import METHOD_NAMES, ClassicConfig
from medseg.errors import MedsegError
from medseg.postprocessing import apply_postprocessing

logger = logging.getLogger(__name__)

Spacing = tuple[float, float, float]
#: voxels per call of ``GaussianMixture.predict`` (bounds its (N, classes) float64 buffers)
_PREDICT_CHUNK = 1 << 21


@dataclass(frozen=True)
class Seeds:
    """Seeds of one case on its voxel grid.

    Attributes
    ----------
    points
        ``(N, 3)`` integer voxel indices ``(i, j, k)``, inside the volume.
    mask
        ``(I, J, K)`` integer seed mask or ``None``: 2 marks background, any other non-zero
        value object seeds.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    mask: np.ndarray | None = None

    def object_indices(self) -> np.ndarray:
        """``(N, 3)`` voxel indices of every object seed (points, then mask voxels)."""
        found = [np.asarray(self.points, dtype=np.int64).reshape(-1, 3)]
        if self.mask is not None:
            found.append(np.argwhere((self.mask != 0) & (self.mask != 2)))
        return np.concatenate(found)

    def background(self, shape: Sequence[int]) -> np.ndarray:
        """Boolean ``(I, J, K)`` background seeds (seed mask value 2; none without a mask)."""
        if self.mask is None:
            return np.zeros(tuple(shape), dtype=bool)
        return np.asarray(self.mask == 2)


def _window(image: np.ndarray, cfg: ClassicConfig) -> np.ndarray:
    """Voxels inside ``[lower, upper]`` (an open side is unbounded)."""
    inside = np.ones(image.shape, dtype=bool)
    if cfg.lower is not None:
        inside &= image >= cfg.lower
    if cfg.upper is not None:
        inside &= image <= cfg.upper
    return inside


def _window_values(image: np.ndarray, cfg: ClassicConfig) -> tuple[np.ndarray, np.ndarray]:
    """The window mask and the intensities inside it; at least two distinct values."""
    inside = _window(image, cfg)
    values = image[inside]
    if values.size < 2 or float(values.min()) == float(values.max()):
        shown = "no voxel" if values.size == 0 else f"only the value {float(values.flat[0]):g}"
        raise MedsegError(
            f"{cfg.method}: expected at least two intensity levels inside the window "
            f"[{cfg.lower}, {cfg.upper}], found {shown}"
        )
    return inside, values


def _kept(classes: np.ndarray, inside: np.ndarray, cfg: ClassicConfig) -> np.ndarray:
    """Voxels inside the window whose class (0 = darkest) is one of ``cfg.kept_classes``."""
    return inside & np.isin(classes, cfg.kept_classes)


def _subsample(values: np.ndarray, cfg: ClassicConfig) -> np.ndarray:
    """At most ``cfg.max_samples`` of ``values`` (seeded), as float64."""
    rng = np.random.default_rng(cfg.random_seed)
    if values.size > cfg.max_samples:
        values = rng.choice(values, size=cfg.max_samples, replace=False)
    return values.astype(np.float64)


def otsu(image: np.ndarray, spacing: Spacing, cfg: ClassicConfig, seeds: Seeds) -> np.ndarray:
    """Otsu's threshold of the window's intensities; class 1 is above it."""
    inside, values = _window_values(image, cfg)
    threshold = float(threshold_otsu(values))
    logger.debug("otsu threshold %.4g", threshold)
    return _kept((image > threshold).astype(np.int64), inside, cfg)


def multi_otsu(image: np.ndarray, spacing: Spacing, cfg: ClassicConfig, seeds: Seeds) -> np.ndarray:
    """``cfg.n_classes``-class Otsu thresholds (skimage, 256-bin histogram) of the window."""
    inside, values = _window_values(image, cfg)
    thresholds = threshold_multiotsu(values, classes=cfg.n_classes)
    logger.debug("multi-otsu thresholds %s", thresholds)
    return _kept(np.digitize(image, thresholds), inside, cfg)


def kmeans(image: np.ndarray, spacing: Spacing, cfg: ClassicConfig, seeds: Seeds) -> np.ndarray:
    """k-means (``scipy.cluster.vq.kmeans2``, k-means++) of the window's intensities."""
    inside, values = _window_values(image, cfg)
    samples = _subsample(values, cfg)
    centroids, _ = kmeans2(samples, cfg.n_classes, minit="++", seed=cfg.random_seed)
    centroids = np.sort(np.asarray(centroids, dtype=np.float64).ravel())
    # in 1D the nearest centroid is decided by the midpoints between sorted centroids
    return _kept(np.digitize(image, (centroids[:-1] + centroids[1:]) / 2), inside, cfg)


def gmm(image: np.ndarray, spacing: Spacing, cfg: ClassicConfig, seeds: Seeds) -> np.ndarray:
    """Gaussian mixture (scikit-learn) of the window's intensities; classes by mean."""
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError as exc:  # a declared dependency; say how to get it if it is missing
        raise MedsegError(
            "gmm: expected scikit-learn to be installed (pip install scikit-learn), found none"
        ) from exc
    inside, values = _window_values(image, cfg)
    samples = _subsample(values, cfg)
    # best of 10 k-means++ starts: the default single k-means start (and a multi-Otsu one)
    # splits a dominant background class in two and EM stays there (bright spheres in 94 %
    # background: Dice 0.54 against 0.99 from the better optimum)
    model = GaussianMixture(
        cfg.n_classes,
        init_params="k-means++",
        n_init=10,
        max_iter=200,
        random_state=cfg.random_seed,
    )
    model.fit(samples[:, None])
    rank = np.argsort(np.argsort(model.means_.ravel()))  # component -> class by mean intensity
    classes = np.full(image.shape, -1, dtype=np.int64)
    flat = np.flatnonzero(inside)
    for start in range(0, flat.size, _PREDICT_CHUNK):
        part = flat[start : start + _PREDICT_CHUNK]
        classes.flat[part] = rank[model.predict(image.flat[part].astype(np.float64)[:, None])]
    return _kept(classes, inside, cfg)


def _sitk_image(image: np.ndarray, spacing: Spacing) -> sitk.Image:
    """The array as a SimpleITK image without a transpose: ITK index (x, y, z) = (k, j, i)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(image, dtype=np.float32))
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    return img


def _sitk_seeds(seeds: Seeds, method: str) -> list[tuple[int, int, int]]:
    points = seeds.object_indices()
    if points.size == 0:
        raise MedsegError(f"{method}: expected at least one object seed, found none")
    return [(int(k), int(j), int(i)) for i, j, k in points]  # ITK index order, see _sitk_image


def region_grow(
    image: np.ndarray, spacing: Spacing, cfg: ClassicConfig, seeds: Seeds
) -> np.ndarray:
    """SimpleITK ``ConnectedThreshold``: voxels in ``[lower, upper]`` connected to a seed."""
    lower = float(image.min()) if cfg.lower is None else cfg.lower
    upper = float(image.max()) if cfg.upper is None else cfg.upper
    points = seeds.object_indices()
    values = image[tuple(points.T)] if points.size else np.zeros(0)
    if not np.any((values >= lower) & (values <= upper)):
        raise MedsegError(
            f"region-grow: expected a seed with an intensity inside [{lower:g}, {upper:g}], "
            f"found seed intensities {np.round(values[:5], 2).tolist()}"
        )
    grown = sitk.ConnectedThreshold(
        _sitk_image(image, spacing),
        seedList=_sitk_seeds(seeds, cfg.method),
        lower=lower,
        upper=upper,
        replaceValue=1,
    )
    return sitk.GetArrayFromImage(grown).astype(bool)


def confidence_connected(
    image: np.ndarray, spacing: Spacing, cfg: ClassicConfig, seeds: Seeds
) -> np.ndarray:
    """SimpleITK ``ConfidenceConnected``: grow within mean +/- multiplier x std of the region."""
    grown = sitk.ConfidenceConnected(
        _sitk_image(image, spacing),
        seedList=_sitk_seeds(seeds, cfg.method),
        numberOfIterations=cfg.iterations,
        multiplier=cfg.multiplier,
        initialNeighborhoodRadius=cfg.neighborhood,
        replaceValue=1,
    )
    return sitk.GetArrayFromImage(grown).astype(bool)


def watershed_markers(
    image: np.ndarray, spacing: Spacing, cfg: ClassicConfig, seeds: Seeds
) -> np.ndarray:
    """Markers of :func:`watershed`: ``(I, J, K)`` int32, 1 object, 2 background, 0 unknown.

    Object markers are the object seeds or, without any, the foreground voxels at least
    ``marker_mm`` deep (Euclidean distance transform in mm); the background marker is the
    seed mask's value 2 or, without it, the voxels at least ``marker_mm`` outside the
    foreground. The foreground is ``[lower, upper]`` when given, else above Otsu's threshold.
    """
    if cfg.lower is not None or cfg.upper is not None:
        fg = _window(image, cfg)
    else:
        fg = image > float(threshold_otsu(image))
    markers = np.zeros(image.shape, dtype=np.int32)
    background = seeds.background(image.shape)
    if not background.any():
        background = ndimage.distance_transform_edt(~fg, sampling=spacing) >= cfg.marker_mm
    markers[background] = 2
    points = seeds.object_indices()
    if points.size:
        markers[tuple(points.T)] = 1
    else:
        markers[ndimage.distance_transform_edt(fg, sampling=spacing) >= cfg.marker_mm] = 1
    for value, what in ((1, "object"), (2, "background")):
        if not np.any(markers == value):
            raise MedsegError(
                f"watershed: expected {what} marker voxels (at least marker_mm={cfg.marker_mm} "
                f"mm {'inside' if value == 1 else 'outside'} the foreground, or seeds), found none"
            )
    return markers


def watershed(image: np.ndarray, spacing: Spacing, cfg: ClassicConfig, seeds: Seeds) -> np.ndarray:
    """Marker-based watershed (skimage) of the gradient magnitude; the object markers' basins."""
    markers = watershed_markers(image, spacing, cfg, seeds)
    if cfg.gradient_mm > 0:
        sigma = [cfg.gradient_mm / float(s) for s in spacing]
        elevation = ndimage.gaussian_gradient_magnitude(image, sigma=sigma)
    else:
        elevation = np.sqrt(sum(g**2 for g in np.gradient(image, *spacing)))
    return np.asarray(sk_watershed(elevation, markers) == 1)


Method = Callable[[np.ndarray, Spacing, ClassicConfig, Seeds], np.ndarray]
#: The registry: method name -> array-level method.
METHODS: dict[str, Method] = {
    "otsu": otsu,
    "multi-otsu": multi_otsu,
    "kmeans": kmeans,
    "gmm": gmm,
    "region-grow": region_grow,
    "confidence-connected": confidence_connected,
    "watershed": watershed,
}
if tuple(METHODS) != METHOD_NAMES:  # pragma: no cover - a programming error, caught by tests
    raise RuntimeError("medseg.classic: METHODS and METHOD_NAMES disagree")


def segment_array(
    image: np.ndarray,
    spacing: Sequence[float],
    config: ClassicConfig,
    seeds: Seeds | None = None,
) -> np.ndarray:
    """Segment one image with ``config.method``, then post-process; the input is not modified.

    Parameters
    ----------
    image
        ``(I, J, K)`` intensities in the image's units (HU for CT), file voxel order.
    spacing
        Voxel size in mm along I, J, K.
    config
        Method and parameters.
    seeds
        Seed voxels (needed by ``region-grow`` and ``confidence-connected``).

    Returns
    -------
    numpy.ndarray
        ``(I, J, K)`` label map (uint8, or uint16 for a ``label_value`` above 255):
        ``config.label_value`` on the mask, 0 elsewhere.

    Raises
    ------
    MedsegError
        For a non-3D image, bad spacing, or a method that cannot run on this image (no
        contrast in the window, no seed inside the interval, no watershed marker).
    """
    array = np.asarray(image)
    if array.ndim != 3:
        raise MedsegError(f"expected an (I, J, K) image, found shape {array.shape}")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise MedsegError(f"expected three positive spacings in mm, found {tuple(spacing)}")
    space: Spacing = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    work = array.astype(np.float32)  # always a copy: the caller's array is never touched
    if config.smooth_mm > 0:
        work = ndimage.gaussian_filter(work, sigma=[config.smooth_mm / s for s in space])
    mask = METHODS[config.method](work, space, config, seeds or Seeds())
    dtype = np.uint8 if config.label_value <= 255 else np.uint16
    labels = np.where(mask, config.label_value, 0).astype(dtype)
    return apply_postprocessing(labels, space, config.postprocessing())

"""Colour and texture features for stained brightfield RGB crops (Giemsa, Wright, H&E, ...).

Morphology (:mod:`datasets.morphology`) is built for fluorescence: a channel is one marker, and
cells are measured by the mask of a bright object. In a stained brightfield image the three
channels are one colour picture of several dyes, so the useful measures are the dyes' amounts
and their texture. :func:`stain_features` separates the stains with scikit-image's
haematoxylin-eosin-DAB matrix (``skimage.color.hed_from_rgb``, Ruifrok & Johnston 2001: for
Giemsa and Wright stains the first component follows the nuclear/parasite blue-purple and the
second the pink cytoplasm), then measures per stain intensity statistics, centre-versus-ring
contrast, the stained area and its pieces (nucleus lobes, parasites, granules), granularity
(white top-hat), grey-level co-occurrence texture and local binary patterns.

Everything is computed on the whole batch at once with numpy and scipy (GLCM and LBP too), at
half resolution for crops of 48 pixels or more, so the feature set stays fast on 64 x 64 crops.
:func:`detect_modality` tells stained RGB from fluorescence on a sample of crops.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from datasets.errors import DataError

MODALITIES = ("fluorescence", "stained_rgb")
STAINS = ("hema", "eosin", "dab")
_PER_STAIN = ("mean", "std", "p90", "centre", "ring", "contrast")
_COLOUR = ("centre_r", "centre_g", "centre_b", "centre_chroma")
_SHAPE = ("hema_area", "hema_objects", "hema_granularity")
_GLCM = ("glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation")
_LBP = tuple(f"lbp{i}" for i in range(10))  # uniform patterns by number of ones, then the rest
STAIN_NAMES = (
    tuple(f"{s}_{m}" for s in STAINS for m in _PER_STAIN) + _COLOUR + _SHAPE + _GLCM + _LBP
)
_LEVELS = 8  # grey levels of the co-occurrence matrix
HALF_FROM = 48  # crops at least this big are measured at half resolution
#: Least mean pairwise channel correlation (median over crops) of a colour picture. Measured on
#: 500 stored crops: MP-IDB Giemsa RGB 0.59 (its pairs 0.89, 0.63 and, red-blue, 0.29: the
#: smallest pair alone is too close to call); Jurkat's brightfield / DNA / darkfield -0.11.
RGB_MIN_CORRELATION = 0.3
_OD_FLOOR = 1e-6  # as skimage.color.rgb2hed: transmitted light below this is clipped
_EIGHT = np.zeros((3, 3, 3), dtype=bool)
_EIGHT[1] = True  # 8-connectivity inside a crop, never across crops


def _check(crops: npt.NDArray) -> npt.NDArray[np.float32]:
    crops = np.asarray(crops, dtype=np.float32)
    if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
        raise DataError(f"stain features need RGB crops of shape (n, 3, S, S); got {crops.shape}")
    if np.isfinite(crops.sum(dtype=np.float64)):  # one cheap pass; nan_to_num costs five
        return crops
    return np.nan_to_num(crops, nan=0.0, posinf=1.0, neginf=0.0)


def detect_modality(crops: npt.NDArray) -> str:
    """ "stained_rgb" for three-channel crops that look like one colour picture of dyes: in every
    channel the cells are darker than a bright background (transmitted light), and the channels
    move together (median over crops of the mean pairwise pixel correlation >=
    :data:`RGB_MIN_CORRELATION`); else "fluorescence". Three channels of different kinds, such
    as imaging flow cytometry's brightfield, DNA stain and darkfield, stay "fluorescence".

    Args:
        crops: (n, C, S, S) float32 in [0, 1], cell at the centre; a sample of the dataset.

    Raises:
        DataError: when ``crops`` is not (n, C, S, S) or is empty.
    """
    from datasets.morphology import _polarity_votes

    votes = _polarity_votes(crops, "detect_modality")
    x = np.asarray(crops, dtype=np.float32)
    if x.shape[1] != 3 or not (votes < 0).all():
        return "fluorescence"
    flat = x.reshape(len(x), 3, -1)
    flat = flat - flat.mean(axis=-1, keepdims=True)
    norm = np.sqrt((flat**2).sum(axis=-1)) + 1e-12
    corr = [
        (flat[:, a] * flat[:, b]).sum(axis=-1) / (norm[:, a] * norm[:, b])
        for a, b in ((0, 1), (0, 2), (1, 2))
    ]
    together = float(np.median(np.mean(corr, axis=0)))
    return "stained_rgb" if together >= RGB_MIN_CORRELATION else "fluorescence"


@functools.lru_cache(maxsize=8)
def _rings(size: int) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """The central disc (radius S/4) and the outer ring (beyond 3S/8) of an S x S crop."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    r = np.hypot(yy, xx)
    return r <= size / 4.0, r > 3.0 * size / 8.0


def separate_stains(crops: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(n, 3, S, S) stain amounts (haematoxylin, eosin, DAB), >= 0, as
    ``skimage.color.rgb2hed`` computes them, in float32 over the whole batch."""
    from skimage.color import hed_from_rgb

    n, _, h, w = crops.shape
    od = np.log(np.clip(crops, _OD_FLOOR, 1.0).reshape(n, 3, h * w))  # optical density...
    od *= np.float32(1.0 / np.log(_OD_FLOOR))  # ...scaled as rgb2hed, 0 for white
    hed = np.matmul(hed_from_rgb.T.astype(np.float32), od)  # (3, 3) @ (n, 3, P)
    return np.maximum(hed, 0.0).reshape(n, 3, h, w)


def stain_features(crops: npt.NDArray) -> tuple[npt.NDArray[np.float32], list[str]]:
    """Colour and texture features of stained RGB crops.

    Args:
        crops: (n, 3, S, S) RGB scaled to [0, 1], cell at the centre.

    Returns:
        features: (n, len(STAIN_NAMES)) float32, finite.
        names: ``stain_<name>`` for each column.

    Raises:
        DataError: when ``crops`` is not (n, 3, S, S).
    """
    x = _half(_check(crops))
    n, _, size, _ = x.shape
    if n == 0:
        return np.zeros((0, len(STAIN_NAMES)), np.float32), [f"stain_{m}" for m in STAIN_NAMES]
    centre, ring = _rings(size)
    hed = separate_stains(x)
    flat = hed.reshape(n, 3, -1)
    blocks = [
        flat.mean(axis=-1),
        flat.std(axis=-1),
        np.partition(flat, int(0.9 * (flat.shape[-1] - 1)), axis=-1)[
            ..., int(0.9 * (flat.shape[-1] - 1))
        ],
        hed[..., centre].mean(axis=-1),
        hed[..., ring].mean(axis=-1),
    ]
    blocks.append(blocks[3] - blocks[4])
    per_stain = np.stack(blocks, axis=-1).reshape(n, -1)  # stain-major, as STAIN_NAMES
    rgb_centre = x[..., centre].mean(axis=-1)  # (n, 3)
    chroma = x[..., centre].std(axis=1).mean(axis=-1, keepdims=True)  # colour, not grey
    h = hed[:, 0]
    shape = _hema_shape(h)
    levels = _quantise(h)
    feats = np.hstack([per_stain, rgb_centre, chroma, shape, _glcm(levels), _lbp(h)])
    names = [f"stain_{m}" for m in STAIN_NAMES]
    return np.nan_to_num(feats.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0), names


def _half(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Crops of :data:`HALF_FROM` pixels or more at half resolution (2 x 2 means): stains and
    their texture are measured there, four times cheaper, which keeps the feature set above
    1,000 cells/s per core on 64 x 64 crops."""
    n, c, size, _ = x.shape
    if size < HALF_FROM:
        return x
    size -= size % 2
    x = x[:, :, :size, :size].reshape(n, c, size // 2, 2, size // 2, 2)
    return x.mean(axis=(3, 5), dtype=np.float32)


def _hema_shape(h: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(n, 3): share of the crop clearly stained by haematoxylin (above the crop's mean plus
    half the way to its maximum), its separate pieces, and granularity (mean white top-hat of
    size 3)."""
    med = h.mean(axis=(1, 2), keepdims=True)
    top = h.max(axis=(1, 2))[:, None, None]
    mask = h > med + 0.5 * (top - med)
    labels, _ = ndimage.label(mask, structure=_EIGHT)
    # labels are numbered in raster order over the batch, so each crop's are consecutive
    flat = labels.reshape(len(h), -1)
    first = np.where(flat > 0, flat, np.iinfo(flat.dtype).max).min(axis=1)
    objects = np.where(flat.max(axis=1) > 0, flat.max(axis=1) - first + 1, 0)
    tophat = h - ndimage.grey_opening(h, size=(1, 3, 3))
    return np.stack([mask.mean(axis=(1, 2)), objects, tophat.mean(axis=(1, 2))], axis=1).astype(
        np.float32
    )


def _quantise(h: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """Each crop's stain scaled to its own range and cut into :data:`_LEVELS` levels."""
    lo = h.min(axis=(1, 2), keepdims=True)
    span = np.maximum(h.max(axis=(1, 2), keepdims=True) - lo, 1e-6)
    return np.minimum(((h - lo) / span * _LEVELS).astype(np.int64), _LEVELS - 1)


def _glcm(q: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """(n, 4) Haralick contrast, homogeneity, energy and correlation of the symmetric grey-level
    co-occurrence matrix (distance 1, horizontal and vertical together), as
    ``skimage.feature.graycoprops`` defines them, for every crop at once."""
    n, k = len(q), _LEVELS
    base = (np.arange(n) * k * k)[:, None]
    pairs = [
        (q[:, :, :-1], q[:, :, 1:]),
        (q[:, :-1, :], q[:, 1:, :]),
    ]
    counts = np.zeros(n * k * k, dtype=np.float64)
    for a, b in pairs:
        a, b = a.reshape(n, -1), b.reshape(n, -1)
        counts += np.bincount((base + a * k + b).ravel(), minlength=n * k * k)
        counts += np.bincount((base + b * k + a).ravel(), minlength=n * k * k)
    p = counts.reshape(n, k, k)
    p /= p.sum(axis=(1, 2), keepdims=True)
    i, j = np.mgrid[:k, :k].astype(np.float64)
    contrast = (p * (i - j) ** 2).sum(axis=(1, 2))
    homogeneity = (p / (1.0 + (i - j) ** 2)).sum(axis=(1, 2))
    energy = np.sqrt((p**2).sum(axis=(1, 2)))
    mu = (p * i).sum(axis=(1, 2))
    var = (p * (i - mu[:, None, None]) ** 2).sum(axis=(1, 2))
    cov = (p * (i - mu[:, None, None]) * (j - mu[:, None, None])).sum(axis=(1, 2))
    corr = np.where(var > 1e-12, cov / np.maximum(var, 1e-12), 1.0)
    return np.stack([contrast, homogeneity, energy, corr], axis=1).astype(np.float32)


_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))  # circular


def _lbp(h: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(n, 10) local binary patterns (the 8 pixel neighbours), histogram as for
    ``skimage.feature.local_binary_pattern(..., method="uniform")`` (which interpolates the
    diagonal neighbours): uniform patterns by their number of neighbours at least as bright as
    the centre (0-8), then all non-uniform ones; over the inside of every crop at once."""
    c = h[:, 1:-1, 1:-1]
    s = h.shape[1]
    bits = np.stack(
        [h[:, 1 + dy : s - 1 + dy, 1 + dx : s - 1 + dx] >= c for dy, dx in _OFFSETS], axis=0
    )
    ones = bits.sum(axis=0)
    changes = (bits != np.roll(bits, 1, axis=0)).sum(axis=0)
    code = np.where(changes <= 2, ones, 9).reshape(len(h), -1)
    n = len(h)
    hist = np.bincount((np.arange(n)[:, None] * 10 + code).ravel(), minlength=10 * n)
    return (hist.reshape(n, 10) / code.shape[1]).astype(np.float32)

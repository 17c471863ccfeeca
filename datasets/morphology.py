"""Classical per-cell morphology features, computed on whole batches of crops at once.

Per channel a foreground mask is found (Otsu threshold of the smoothed channel; the connected
component nearest the crop centre, plus whole objects close to it such as a second nucleus or
a micronucleus; neighbours cut at the crop edge are dropped). Shape, intensity and texture are
then measured with masked numpy operations over the batch, in the spirit of scikit-image's
``regionprops`` but without a Python loop per cell.

Polarity (cells brighter or darker than the background) is a property of each channel, and so
is whether a channel's mask can be trusted: a channel whose pixel histogram is not clearly
bimodal (brightfield, darkfield, side scatter, diffuse stains) gives a mask that jumps between
speckles, halos and the crop border, so its shape and mask-based features are noise. Such a
channel is measured by whole-crop statistics only (:func:`channel_profile` decides, once per
dataset).
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from datasets.errors import DataError

logger = logging.getLogger(__name__)

POLARITIES = ("bright", "dark")
#: Bumped whenever the feature set changes, so cached feature tables are recomputed.
FEATURES_VERSION = 5
#: A channel's mask is trusted when the median over crops of its Otsu separability (between-class
#: over total variance of the smoothed crop, 0..1) reaches this. Measured: fluorescent nuclei and
#: cytoplasm 0.84-0.89, brightfield 0.53, darkfield 0.64 (Jurkat IFC and the demo screen).
MASK_QUALITY_MIN = 0.75
SHAPE_NAMES = (
    "area", "perimeter", "circularity", "eccentricity", "solidity",
    "major_axis", "minor_axis", "extent", "n_objects", "extra_area",
)  # fmt: skip
INTENSITY_NAMES = (
    "mean", "std", "max", "integrated", "p10", "p50", "p90",
    "crop_mean", "crop_std", "crop_max", "background_mean",
)  # fmt: skip
TEXTURE_NAMES = ("grad_mean", "residual_std", "contrast")
HU_NAMES = tuple(f"hu{i}" for i in range(1, 8))  # Hu's 7 moment invariants, log-scaled
_PER_CHANNEL = SHAPE_NAMES + INTENSITY_NAMES + TEXTURE_NAMES + HU_NAMES
#: What a channel without a trusted mask is measured by.
CROP_NAMES = ("crop_mean", "crop_std", "crop_max")
_HU_FLOOR = 1e-12  # |invariant| below this counts as 0 (numerical noise of symmetric shapes)
_N_BINS = 64  # histogram bins for Otsu
_N_DIRECTIONS = 32  # support directions for the convex-hull polygon
_MIN_EXTRA_AREA = 3  # pixels; smaller extra objects are noise
_CHUNK = 512  # crop-channels processed together (bounds memory)
_EIGHT = np.zeros((3, 3, 3), dtype=bool)
_EIGHT[1] = True  # 8-connectivity inside a crop, never across crops


def _check_crops(crops: npt.NDArray) -> None:
    if crops.ndim != 4 or crops.shape[2] != crops.shape[3] or crops.shape[2] < 8:
        raise DataError(
            f"crops of shape {crops.shape}: expected (n, C, S, S) with S >= 8; "
            "stack single-cell crops along the first axis"
        )


def _polarity_votes(crops: npt.NDArray, caller: str) -> npt.NDArray[np.float64]:
    """(C,) per channel: +1 cells brighter than the background, -1 darker, 0 undecided.

    The vote is the sign of the median, over crops, of the central disc's mean minus the median
    of the outer ring.
    """
    crops = np.asarray(crops)
    _check_crops(crops)
    if crops.shape[0] == 0:
        raise DataError(f"{caller} got 0 crops; pass a sample of at least one cell")
    size = crops.shape[-1]
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    centre = np.hypot(yy, xx) <= size / 4.0
    ring = np.minimum(np.minimum(yy, xx), np.minimum(-yy, -xx)) <= -(size - 1) / 2.0 + 2
    x = crops.astype(np.float32)
    diff = x[..., centre].mean(axis=-1) - np.median(x[..., ring], axis=-1)  # (n, C)
    return np.sign(np.median(diff, axis=0))


def detect_polarity(crops: npt.NDArray) -> str:
    """Whether cells are brighter ("bright") or darker ("dark") than the background, overall.

    Each channel votes (see :func:`channel_polarities`); fluorescence gives "bright",
    brightfield RGB "dark". Ties go to "bright".

    Args:
        crops: (n, C, S, S) float32 in [0, 1] (any real dtype works), cell at the centre.

    Returns:
        "bright" or "dark".

    Raises:
        DataError: when ``crops`` is not (n, C, S, S) or is empty.
    """
    votes = _polarity_votes(crops, "detect_polarity")
    polarity = "dark" if (votes < 0).sum() > (votes > 0).sum() else "bright"
    logger.debug("polarity votes per channel %s -> %s", votes.tolist(), polarity)
    return polarity


def channel_polarities(crops: npt.NDArray) -> tuple[str, ...]:
    """Each channel's polarity: "bright" when its cells are brighter than the background (by
    the median over crops of the central disc's mean minus the outer ring's median), else
    "dark"; undecided channels are "bright".

    Args:
        crops: (n, C, S, S) float32 in [0, 1], cell at the centre; a sample of the dataset.

    Returns:
        C polarities.

    Raises:
        DataError: when ``crops`` is not (n, C, S, S) or is empty.
    """
    votes = _polarity_votes(crops, "channel_polarities")
    return tuple("dark" if v < 0 else "bright" for v in votes.tolist())


def mask_quality(crops: npt.NDArray, polarities: Sequence[str]) -> npt.NDArray[np.float64]:
    """How cleanly Otsu's threshold splits each channel into cell and background.

    Per crop, the between-class variance of the Otsu split of the smoothed channel over its
    total variance (1: two flat levels, near 0: no structure); the median over crops.

    Args:
        crops: (n, C, S, S) float32 in [0, 1]; a sample of the dataset.
        polarities: C polarities (from :func:`channel_polarities`).

    Returns:
        (C,) float64 in [0, 1].

    Raises:
        DataError: on a bad shape, an empty sample, or polarities that do not fit.
    """
    crops = np.asarray(crops, dtype=np.float32)
    polarities = _checked_polarities(polarities, crops)
    if crops.shape[0] == 0:
        raise DataError("mask_quality got 0 crops; pass a sample of at least one cell")
    out = np.zeros(crops.shape[1])
    for c, polarity in enumerate(polarities):
        signal = _signal(crops[:, c], polarity)[1]
        thresh, flat = _otsu(signal)
        fg = signal > thresh[:, None, None]
        w = fg.mean(axis=(1, 2))
        n_fg = np.maximum(fg.sum(axis=(1, 2)), 1)
        n_bg = np.maximum((~fg).sum(axis=(1, 2)), 1)
        mean_fg = (signal * fg).sum(axis=(1, 2)) / n_fg
        mean_bg = (signal * ~fg).sum(axis=(1, 2)) / n_bg
        var = np.maximum(signal.var(axis=(1, 2), dtype=np.float64), 1e-12)
        eta = np.where(flat, 0.0, w * (1.0 - w) * (mean_fg - mean_bg) ** 2 / var)
        out[c] = float(np.clip(np.median(eta), 0.0, 1.0))
    return out


def _checked_polarities(polarity: str | Sequence[str], crops: npt.NDArray) -> tuple[str, ...]:
    """One polarity per channel of ``crops`` (n, C, S, S), after checking both."""
    _check_crops(crops)
    n_channels = crops.shape[1]
    pol = (polarity,) * n_channels if isinstance(polarity, str) else tuple(polarity)
    bad = [p for p in pol if p not in POLARITIES]
    if bad:
        raise DataError(f"polarity {bad[0]!r} is not one of {POLARITIES}")
    if len(pol) != n_channels:
        raise DataError(f"{len(pol)} polarities for {n_channels} channels; give one per channel")
    return pol


def _finite(crops: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``crops`` with NaN and infinite pixels ignored: each is replaced by the finite median of
    its crop and channel (0 when the crop's channel has none)."""
    bad = ~np.isfinite(crops)
    if crops.ndim != 4 or not bad.any():
        return crops
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: median NaN, set to 0
        median = np.nanmedian(np.where(bad, np.nan, crops), axis=(2, 3), keepdims=True)
    return np.where(bad, np.nan_to_num(median, nan=0.0), crops).astype(np.float32)


def morphology_features(
    crops: npt.NDArray,
    polarity: str | Sequence[str] = "bright",
    masked: Sequence[bool] | None = None,
    modality: str = "fluorescence",
) -> tuple[npt.NDArray[np.float32], list[str]]:
    """Shape, intensity and texture features of every crop, per channel (and for stained RGB
    crops the stains' colour and texture, :func:`datasets.stain.stain_features`).

    Args:
        crops: (n, C, S, S) float32 per-channel scaled to [0, 1], cell at the centre.
        polarity: "bright" (cells brighter than background, fluorescence) or "dark"; one for
            every channel, or one per channel.
        masked: per channel, True to segment it and measure all 31 features, False to measure
            only the whole-crop statistics :data:`CROP_NAMES`; all True when None.
        modality: "stained_rgb" adds the stain features to three-channel crops.

    Returns:
        features: (n, d) float32, finite, d = 31 per masked channel + 3 per other channel; an
            empty mask gives zeros for its channel.
        names: d names ``ch{c}_{measure}``, channel-major, in column order.

    Raises:
        DataError: on a bad shape, an unknown polarity, or per-channel lists that do not fit.
    """
    crops = _finite(np.asarray(crops, dtype=np.float32))
    polarities = _checked_polarities(polarity, crops)
    n, n_channels, _, _ = crops.shape
    masked = (True,) * n_channels if masked is None else tuple(bool(m) for m in masked)
    if len(masked) != n_channels:
        raise DataError(f"{len(masked)} mask flags for {n_channels} channels; give one per channel")
    blocks, names = [], []
    for c in range(n_channels):
        measures = _PER_CHANNEL if masked[c] else CROP_NAMES
        out = np.zeros((n, len(measures)), dtype=np.float32)
        for start in range(0, n, _CHUNK):
            x = crops[start : start + _CHUNK, c]
            out[start : start + _CHUNK] = (
                _channel_features(x, polarities[c]) if masked[c] else _crop_features(x)
            )
        blocks.append(out)
        names += [f"ch{c}_{m}" for m in measures]
    if modality == "stained_rgb" and n_channels == 3:
        from datasets.stain import stain_features

        extra, extra_names = stain_features(crops)
        blocks.append(extra)
        names += extra_names
    feats = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), np.float32)
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0), names


def central_object_side(image: npt.NDArray) -> int:
    """The larger bounding-box side, in pixels, of the cell at the centre of one raw crop
    (C, H, W) of any size and dtype: per channel, the crop is scaled to its own 1-99.8
    percentiles (for this measurement only), its polarity read from the centre against the
    border, and the central object segmented as for the features; the largest side over the
    channels (a noise channel's mask spans the crop, so the answer errs towards the whole
    crop). The crop's larger side when no channel has an object."""
    from datasets.crops.resize import fit_crops

    image = np.asarray(image)
    size = int(max(image.shape[1:]))
    x = fit_crops(_finite(image[None].astype(np.float32)), size)[0]
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    centre = np.hypot(yy, xx) <= size / 4.0
    ring = np.minimum(np.minimum(yy, xx), np.minimum(-yy, -xx)) <= -(size - 1) / 2.0 + 2
    sides = []
    for channel in x:
        lo, hi = np.percentile(channel, [1.0, 99.8])
        if hi <= lo:
            continue
        channel = np.clip((channel - lo) / (hi - lo), 0.0, 1.0)
        polarity = "dark" if channel[centre].mean() < np.median(channel[ring]) else "bright"
        mask = _cell_mask(_signal(channel[None], polarity)[1])[0][0]
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows):
            sides.append(int(max(rows[-1] - rows[0], cols[-1] - cols[0])) + 1)
    return max(sides, default=size)


def _signal(x: npt.NDArray[np.float32], polarity: str) -> tuple[npt.NDArray, npt.NDArray]:
    """The smoothed crops (B, S, S) and the same made bright-on-dark for segmentation."""
    smooth = ndimage.gaussian_filter(x, sigma=(0, 1, 1), mode="nearest", truncate=2.0)
    return smooth, (smooth if polarity == "bright" else 1.0 - smooth)


def _channel_features(x: npt.NDArray[np.float32], polarity: str) -> npt.NDArray[np.float32]:
    """(B, 31) features of B single-channel crops (B, S, S)."""
    smooth, signal = _signal(x, polarity)
    mask, objects = _cell_mask(signal)
    shape = _shape_features(mask, objects)
    intensity = _intensity_features(x, mask)
    texture = _texture_features(x, smooth, mask)
    return np.concatenate([shape, intensity, texture, _hu_moments(mask)], axis=1)


def _crop_features(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(B, 3) whole-crop mean, std and max of B single-channel crops (B, S, S)."""
    flat = x.reshape(len(x), -1)
    return np.stack(
        [flat.mean(axis=1, dtype=np.float64), flat.std(axis=1, dtype=np.float64),
         flat.max(axis=1)],
        axis=1,
    ).astype(np.float32)  # fmt: skip


def _hu_moments(mask: npt.NDArray[np.bool_]) -> npt.NDArray:
    """(B, 7) Hu moment invariants of masks (B, S, S), as ``sign(h) * log10(1 + |h| / floor)``
    so that the tiny invariants of elongated, lobed or fragmented shapes stay comparable."""
    m = mask.astype(np.float64)
    pos = np.arange(mask.shape[-1], dtype=np.float64)
    area = m.sum(axis=(1, 2))
    a = np.maximum(area, 1.0)
    dx = pos[None, :] - ((m.sum(axis=1) * pos).sum(axis=1) / a)[:, None]  # (B, S) x offsets
    dy = pos[None, :] - ((m.sum(axis=2) * pos).sum(axis=1) / a)[:, None]  # (B, S) y offsets

    def nu(p: int, q: int) -> npt.NDArray:
        mu = np.einsum("byx,by,bx->b", m, dy**q, dx**p, optimize=True)
        return mu / a ** (1.0 + (p + q) / 2.0)

    n20, n02, n11 = nu(2, 0), nu(0, 2), nu(1, 1)
    n30, n03, n21, n12 = nu(3, 0), nu(0, 3), nu(2, 1), nu(1, 2)
    s1, s2 = n30 + n12, n21 + n03
    d1, d2 = n30 - 3 * n12, 3 * n21 - n03
    hu = np.stack([
        n20 + n02,
        (n20 - n02) ** 2 + 4 * n11**2,
        d1**2 + d2**2,
        s1**2 + s2**2,
        d1 * s1 * (s1**2 - 3 * s2**2) + d2 * s2 * (3 * s1**2 - s2**2),
        (n20 - n02) * (s1**2 - s2**2) + 4 * n11 * s1 * s2,
        d2 * s1 * (s1**2 - 3 * s2**2) - d1 * s2 * (3 * s1**2 - s2**2),
    ], axis=1)  # fmt: skip
    hu[area == 0] = 0.0
    return np.sign(hu) * np.log10(1.0 + np.abs(hu) / _HU_FLOOR)


def _otsu(x: npt.NDArray[np.float32]) -> tuple[npt.NDArray, npt.NDArray[np.bool_]]:
    """Per-crop Otsu thresholds (B,) of x (B, S, S), and which crops are flat (B,)."""
    n = len(x)
    lo = x.min(axis=(1, 2))
    span = x.max(axis=(1, 2)) - lo
    flat = span < 1e-6
    scale = _N_BINS / np.where(flat, 1.0, span)
    idx = ((x - lo[:, None, None]) * scale[:, None, None]).astype(np.int64)
    np.clip(idx, 0, _N_BINS - 1, out=idx)
    idx += (np.arange(n) * _N_BINS)[:, None, None]
    hist = np.bincount(idx.ravel(), minlength=n * _N_BINS).reshape(n, _N_BINS)
    p = hist / hist.sum(axis=1, keepdims=True)
    centres = np.arange(_N_BINS) + 0.5
    w0 = np.cumsum(p, axis=1)[:, :-1]
    mu0 = np.cumsum(p * centres, axis=1)[:, :-1]
    mu_total = (p * centres).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_total * w0 - mu0) ** 2 / (w0 * (1.0 - w0))
    between = np.nan_to_num(between, nan=-1.0, posinf=-1.0)
    k = between.argmax(axis=1) + 1  # foreground: bins >= k
    return lo + k / scale, flat


def _cell_mask(signal: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.bool_], npt.NDArray]:
    """The cell's mask (B, S, S), and per crop (B, 2) its number of objects and the area of
    the objects other than the central one, from a bright-cell signal.

    The mask is the component nearest the centre plus whole (not edge-touching) objects of at
    least 3 pixels that come within S / 4 of the centre.
    """
    n, size, _ = signal.shape
    thresh, flat = _otsu(signal)
    fg = (signal > thresh[:, None, None]) & ~flat[:, None, None]
    labels, n_labels = ndimage.label(fg, structure=_EIGHT)
    if n_labels == 0:
        return fg, np.zeros((n, 2))
    by_dist, dist = _centre_order(size)
    # each crop's labels, nearest the centre first
    lab = np.take(labels.reshape(n, -1), by_dist, axis=1)
    pos = np.flatnonzero(lab)
    lab_fg = lab.ravel()[pos]
    order = np.argsort(lab_fg, kind="stable")  # per label, nearest pixel first
    starts = np.r_[0, np.flatnonzero(np.diff(lab_fg[order])) + 1]
    first = pos[order[starts]]  # labels are 1..n_labels, so entry i is label i + 1
    area = np.diff(np.r_[starts, len(order)])
    on_rim = np.zeros(n_labels + 1, dtype=bool)
    on_rim[labels[:, [0, -1], :]] = True
    on_rim[labels[:, :, [0, -1]]] = True
    near = (dist[first % (size * size)] <= size / 4.0) & (area >= _MIN_EXTRA_AREA)
    keep = np.zeros(n_labels + 1, dtype=bool)
    keep[1:] = near & ~on_rim[1:]
    extra = keep[1:].copy()
    central = lab[np.arange(n), (lab != 0).argmax(axis=1)]  # 0 for an empty crop
    keep[central] = True
    extra[central[central > 0] - 1] = False
    keep[0] = False
    crop_of = first // (size * size)
    objects = np.stack(
        [np.bincount(crop_of[keep[1:]], minlength=n),
         np.bincount(crop_of[extra], weights=area[extra], minlength=n)],
        axis=1,
    )  # fmt: skip
    return keep[labels], objects.astype(np.float64)


@functools.cache
def _centre_order(size: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Pixel indices of an S x S crop sorted by distance to the centre, and those distances."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    dist = np.hypot(yy, xx).ravel()
    order = np.argsort(dist, kind="stable")
    return order, dist[order]


def _moments(mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray, npt.NDArray, npt.NDArray]:
    """Area (B,) and the two eigenvalues (B,) of each mask's second-moment matrix."""
    pos = np.arange(mask.shape[-1], dtype=np.float64)
    per_col = mask.sum(axis=1, dtype=np.float64)  # (B, S): pixels in each column x
    per_row = mask.sum(axis=2, dtype=np.float64)  # (B, S): pixels in each row y
    x_per_row = (mask * pos).sum(axis=2)  # (B, S): sum of x in each row
    area = per_col.sum(axis=1)
    a = np.maximum(area, 1.0)
    cx, cy = (per_col * pos).sum(axis=1) / a, (per_row * pos).sum(axis=1) / a
    mu20 = (per_col * pos * pos).sum(axis=1) / a - cx * cx
    mu02 = (per_row * pos * pos).sum(axis=1) / a - cy * cy
    mu11 = (x_per_row * pos).sum(axis=1) / a - cx * cy
    half_diff = np.sqrt(((mu20 - mu02) / 2.0) ** 2 + mu11 * mu11)
    lam1 = np.maximum((mu20 + mu02) / 2.0 + half_diff, 0.0)
    lam2 = np.maximum((mu20 + mu02) / 2.0 - half_diff, 0.0)
    return area, lam1, lam2


def _hull_area(mask: npt.NDArray[np.bool_]) -> npt.NDArray:
    """Area (B,) of the 32-sided polygon circumscribing each mask (pixel centres grown by 0.5).

    Each row's leftmost and rightmost pixels carry the row's extremes in every direction, so the
    support function only needs those 2 * S points per crop.
    """
    n, size, _ = mask.shape
    has = mask.any(axis=2)  # (B, S)
    left = mask.argmax(axis=2).astype(np.float32)
    right = size - 1 - mask[:, :, ::-1].argmax(axis=2).astype(np.float32)
    rows = np.broadcast_to(np.arange(size, dtype=np.float32), (n, size))
    px = np.concatenate([left, right], axis=1)  # (B, 2S)
    py = np.concatenate([rows, rows], axis=1)
    valid = np.concatenate([has, has], axis=1)
    theta = np.arange(_N_DIRECTIONS) * (2 * np.pi / _N_DIRECTIONS)
    ux, uy = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
    proj = px[:, :, None] * ux + py[:, :, None] * uy + 0.5  # pixel centres grown by 0.5
    proj[~valid] = -np.inf
    support = proj.max(axis=1).astype(np.float64)  # (B, K)
    support[~np.isfinite(support)] = 0.0
    delta = 2 * np.pi / _N_DIRECTIONS
    prev, nxt = np.roll(support, 1, axis=1), np.roll(support, -1, axis=1)
    edge = (prev + nxt - 2.0 * support * np.cos(delta)) / np.sin(delta)
    return np.maximum(0.5 * (support * edge).sum(axis=1), 0.0)


def _shape_features(mask: npt.NDArray[np.bool_], objects: npt.NDArray) -> npt.NDArray:
    """(B, 10) shape measures of masks (B, S, S), in ``SHAPE_NAMES`` order."""
    area, lam1, lam2 = _moments(mask)
    m = mask.astype(np.int8)
    edges = (
        np.abs(np.diff(m, axis=1)).sum(axis=(1, 2))
        + np.abs(np.diff(m, axis=2)).sum(axis=(1, 2))
        + m[:, [0, -1], :].sum(axis=(1, 2))
        + m[:, :, [0, -1]].sum(axis=(1, 2))
    )
    perimeter = edges * (np.pi / 4.0)  # exposed pixel edges, corrected for the staircase
    rows, cols = np.asarray(mask.any(axis=2)), np.asarray(mask.any(axis=1))
    bbox = _span(rows) * _span(cols)
    safe_area = np.maximum(area, 1.0)
    hull = _hull_area(mask)
    return np.stack(
        [
            area,
            perimeter,
            np.where(area > 0, 4 * np.pi * area / np.maximum(perimeter, 1.0) ** 2, 0.0),
            np.where(lam1 > 0, np.sqrt(1.0 - lam2 / np.maximum(lam1, 1e-12)), 0.0),
            np.where(area > 0, np.minimum(area / np.maximum(hull, safe_area), 1.0), 0.0),
            4.0 * np.sqrt(lam1),
            4.0 * np.sqrt(lam2),
            area / np.maximum(bbox, 1.0),
            objects[:, 0],
            objects[:, 1],
        ],
        axis=1,
    )


def _span(any_: npt.NDArray[np.bool_]) -> npt.NDArray:
    """Extent (B,) in pixels of the True entries of each row of (B, S); 0 when none."""
    size = any_.shape[1]
    first = any_.argmax(axis=1)
    last = size - 1 - any_[:, ::-1].argmax(axis=1)
    return np.where(any_.any(axis=1), last - first + 1, 0).astype(np.float64)


def _intensity_features(x: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_]) -> npt.NDArray:
    """(B, 11) intensity statistics inside the mask and of the whole crop."""
    n = len(x)
    flat = x.reshape(n, -1)
    m = mask.reshape(n, -1)
    area = m.sum(axis=1).astype(np.float64)
    safe = np.maximum(area, 1.0)
    inside = flat * m
    total = inside.sum(axis=1, dtype=np.float64)
    mean = total / safe
    sq = np.einsum("ij,ij->i", inside, inside, dtype=np.float64)
    std = np.sqrt(np.maximum(sq / safe - mean * mean, 0.0))
    # Masked percentiles: pixels outside the mask sort first (-1 < 0 <= x), so the k-th
    # value of the mask sits at position (n_pixels - area + k) of each sorted row.
    ranked = np.sort(np.where(m, flat, np.float32(-1.0)), axis=1)
    n_pix = flat.shape[1]
    pct = []
    for q in (0.1, 0.5, 0.9):
        pos = n_pix - area + np.floor(q * np.maximum(area - 1.0, 0.0))
        pos = np.clip(pos, 0, n_pix - 1).astype(np.int64)
        pct.append(np.where(area > 0, ranked[np.arange(n), pos], 0.0))
    crop_total = flat.sum(axis=1, dtype=np.float64)
    crop_mean = crop_total / n_pix
    crop_sq = np.einsum("ij,ij->i", flat, flat, dtype=np.float64)
    crop_std = np.sqrt(np.maximum(crop_sq / n_pix - crop_mean * crop_mean, 0.0))
    background = np.where(area < n_pix, (crop_total - total) / np.maximum(n_pix - area, 1.0), 0.0)
    return np.stack(
        [mean, std, inside.max(axis=1), total, *pct,
         crop_mean, crop_std, flat.max(axis=1), background],
        axis=1,
    )  # fmt: skip


def _texture_features(
    x: npt.NDArray[np.float32], smooth: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_]
) -> npt.NDArray:
    """(B, 3) texture inside the mask: mean gradient magnitude of the smoothed crop, std of the
    high-pass residual, and a Haralick-like contrast (mean squared difference of pixels two
    apart, horizontally and vertically)."""
    area = np.maximum(mask.sum(axis=(1, 2)), 1).astype(np.float64)
    gy, gx = np.gradient(smooth, axis=(1, 2))
    grad = (np.hypot(gx, gy) * mask).sum(axis=(1, 2), dtype=np.float64) / area
    resid = (x - smooth) * mask
    resid_std = np.sqrt((resid * resid).sum(axis=(1, 2), dtype=np.float64) / area)
    pair_h = mask[:, :, 2:] & mask[:, :, :-2]
    pair_v = mask[:, 2:, :] & mask[:, :-2, :]
    diff_h = (x[:, :, 2:] - x[:, :, :-2]) * pair_h
    diff_v = (x[:, 2:, :] - x[:, :-2, :]) * pair_v
    sq = (diff_h * diff_h).sum(axis=(1, 2), dtype=np.float64)
    sq += (diff_v * diff_v).sum(axis=(1, 2), dtype=np.float64)
    n_pairs = np.maximum(pair_h.sum(axis=(1, 2)) + pair_v.sum(axis=(1, 2)), 1)
    return np.stack([grad, resid_std, sq / n_pairs], axis=1)

"""Bring single-cell crops of any size to one square size without changing their scale.

Cell size is a phenotype, so a crop is never rescaled on its own: a small crop is padded with
its own per-channel border median (a brightfield background stays bright, a fluorescence one
stays dark) and a big crop is centre-cropped. A dataset-wide ``scale`` factor, applied to every
image alike, is the only resampling allowed; when the crops are larger than the crop size,
:func:`choose_scale` picks it from their size distribution so the typical cell fits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Dtypes stored as they are; any other numeric dtype is stored as float32.
STORAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def storage_dtype(dtype: npt.DTypeLike) -> np.dtype:
    """The dtype pixels of ``dtype`` are stored in: uint8, uint16 or float32.

    bool becomes uint8; uint8, uint16 and float32 stay; every other numeric dtype (int16,
    int32, float64, ...) becomes float32.
    """
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    return dtype if dtype in STORAGE_DTYPES else np.dtype(np.float32)


def widest_dtype(dtypes: list[np.dtype]) -> np.dtype:
    """The storage dtype able to hold every one of ``dtypes`` (uint8 < uint16 < float32)."""
    stored = {storage_dtype(d) for d in dtypes}
    return max(stored, key=STORAGE_DTYPES.index)


def border_median(images: npt.NDArray) -> npt.NDArray[np.float64]:
    """Median of each image's border pixels, per channel.

    Args:
        images: (n, C, H, W) crops of any numeric dtype.

    Returns:
        (n, C) float64 median over the first and last row and column of each crop.
    """
    border = np.concatenate(
        [
            images[:, :, 0, :],
            images[:, :, -1, :],
            images[:, :, 1:-1, 0],
            images[:, :, 1:-1, -1],
        ],
        axis=-1,
    )
    n = border.shape[-1]
    lo, hi = (n - 1) // 2, n // 2
    middle = np.partition(border, [lo, hi], axis=-1)  # cheaper than np.median on small crops
    return (middle[..., lo].astype(np.float64) + middle[..., hi]) / 2.0


def _cast(values: npt.NDArray, dtype: np.dtype) -> npt.NDArray:
    """``values`` cast to ``dtype``, rounded and clipped to its range for integer dtypes."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype)


def fit_crops(images: npt.NDArray, size: int) -> npt.NDArray:
    """Pad or centre-crop crops to ``size`` x ``size``, never rescaling them.

    Each spatial axis longer than ``size`` is centre-cropped (a big cell is cut, not shrunk);
    each shorter axis is padded evenly on both sides with the crop's per-channel border median.

    Args:
        images: (n, C, H, W) crops, any dtype.
        size: side of the output crops in pixels.

    Returns:
        (n, C, size, size) crops in ``images``' dtype (a new array).
    """
    n, c, h, w = images.shape
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    core = images[:, :, top : top + size, left : left + size]
    if h >= size and w >= size:
        return np.array(core)
    fill = _cast(border_median(images), images.dtype)  # (n, C)
    out = np.empty((n, c, size, size), dtype=images.dtype)
    out[...] = fill[:, :, None, None]
    ch, cw = core.shape[2:]
    ph, pw = (size - ch) // 2, (size - cw) // 2
    out[:, :, ph : ph + ch, pw : pw + cw] = core
    return out


def stored_boxes(
    heights: npt.ArrayLike, widths: npt.ArrayLike, scale: float, size: int
) -> npt.NDArray[np.int64]:
    """Where each source crop lies in its stored ``size`` x ``size`` crop after
    :func:`rescale_images` by ``scale`` and :func:`fit_crops`: (n, 4) ``top, left, height,
    width``; the rest of the stored crop is padding."""
    h = np.minimum(np.rint(np.asarray(heights, np.float64) * scale), size).astype(np.int64)
    w = np.minimum(np.rint(np.asarray(widths, np.float64) * scale), size).astype(np.int64)
    h, w = np.maximum(h, 1), np.maximum(w, 1)
    return np.stack([(size - h) // 2, (size - w) // 2, h, w], axis=1)


#: Share of crops whose larger side must fit in the crop size after the chosen scale.
FIT_QUANTILE = 0.9


def choose_scale(
    heights: npt.ArrayLike,
    widths: npt.ArrayLike,
    crop_size: int,
    object_sides: npt.ArrayLike | None = None,
) -> float:
    """One scale for a whole screen so the typical cell fits in ``crop_size``.

    The :data:`FIT_QUANTILE` quantile of each crop's larger side is brought down to
    ``crop_size``; crops that already fit leave the scale at 1 (small crops are padded, never
    enlarged). With ``object_sides`` (the larger side of the cell in each of a sample of crops,
    :func:`datasets.morphology.central_object_side`), crops with a wide margin around a small
    cell are shrunk only as far as the cells need: their quantile with :data:`CROP_CONTEXT`
    around it is brought to ``crop_size`` and the margin is cut, so the cell keeps its detail.
    Never more than the crops' rule shrinks. Relative sizes are kept: every image gets the same
    factor.

    Returns:
        The factor, rounded down to 3 decimals, in [0.05, 1].
    """
    side = np.maximum(np.asarray(heights, dtype=np.float64), np.asarray(widths, dtype=np.float64))
    if side.size == 0:
        return 1.0
    typical = float(np.quantile(side, FIT_QUANTILE))
    if typical <= crop_size:
        return 1.0
    scale = _fit(crop_size, typical)
    objects = np.asarray(object_sides if object_sides is not None else [], dtype=np.float64)
    objects = objects[np.isfinite(objects) & (objects > 0)]
    if objects.size:
        need = float(np.quantile(objects, FIT_QUANTILE)) * CROP_CONTEXT
        scale = max(scale, _fit(crop_size, need))
    return scale


def _fit(crop_size: int, side: float) -> float:
    """The factor that brings ``side`` to ``crop_size`` (at most 1, at least 0.05), rounded down
    to 3 decimals."""
    if side <= crop_size:
        return 1.0
    return float(max(0.05, np.floor(1000 * crop_size / side) / 1000))


DEFAULT_CROP_SIZE = 64
#: Context around an object: its crop is this much larger than its larger side.
CROP_CONTEXT = 1.25


def choose_crop_size(sides: npt.ArrayLike, default: int = DEFAULT_CROP_SIZE) -> int:
    """One crop size for a whole screen of segmented objects so the typical object fits, by
    the rule of :func:`choose_scale`: the :data:`FIT_QUANTILE` quantile of the objects' larger
    side, with :data:`CROP_CONTEXT` around it, rounded up to a multiple of 8. Objects that
    already fit leave ``default`` (never smaller); at most 512. Never chosen per object.

    Args:
        sides: each object's larger bounding-box side in pixels (a sample of the screen).
    """
    side = np.asarray(sides, dtype=np.float64)
    side = side[np.isfinite(side) & (side > 0)]
    if side.size == 0:
        return default
    need = float(np.quantile(side, FIT_QUANTILE)) * CROP_CONTEXT
    return int(min(512, max(default, 8 * np.ceil(need / 8))))


def rescale_images(images: npt.NDArray, scale: float) -> npt.NDArray:
    """Resample every image by the same dataset-wide factor (scikit-image ``rescale``).

    Bilinear interpolation, with anti-aliasing when shrinking; integer dtypes are rounded and
    clipped back to their range.

    Args:
        images: (n, C, H, W) crops, any numeric dtype.
        scale: factor applied to both spatial axes (1.0 returns ``images`` unchanged).

    Returns:
        (n, C, round(H * scale), round(W * scale)) crops in ``images``' dtype.
    """
    if scale == 1.0:
        return images
    from skimage.transform import rescale  # imported here: only a scaled ingest needs it

    out = [
        rescale(
            image.astype(np.float32),
            scale,
            order=1,
            preserve_range=True,
            anti_aliasing=scale < 1.0,
            channel_axis=0,
        )
        for image in images
    ]
    return _cast(np.stack(out), images.dtype)

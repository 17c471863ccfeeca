"""Cutting a field into cells: crops centred on each object's centroid (padded beyond the field's
edge with its per-channel border median, never rescaled) and each object's own mask."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from datasets.crops.resize import border_median


def centre_pixels(objects: pd.DataFrame, size: tuple[int, int]) -> npt.NDArray[np.int64]:
    """(n, 2) pixel (row, col) of each object's centroid, rounded half up, inside the field."""
    yx = np.floor(objects[["centroid_y", "centroid_x"]].to_numpy(np.float64) + 0.5)
    return np.clip(yx, 0, np.array(size) - 1).astype(np.int64)


def _windows(
    stack: npt.NDArray, centres: npt.NDArray[np.int64], size: int, fill: npt.NDArray
) -> npt.NDArray:
    """(n, K, size, size) windows of ``stack`` (K, H, W) centred on ``centres`` (n, 2):
    pixel (size // 2, size // 2) of each window is its centre; ``fill`` (K,) beyond the edge."""
    half = size // 2
    k, h, w = stack.shape
    padded = np.empty((k, h + 2 * half, w + 2 * half), dtype=stack.dtype)
    padded[...] = fill.astype(stack.dtype)[:, None, None]
    padded[:, half : half + h, half : half + w] = stack
    view = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))
    return np.moveaxis(view[:, centres[:, 0], centres[:, 1]], 0, 1)


def crop_at(image: npt.NDArray, centres: npt.NDArray[np.int64], size: int) -> npt.NDArray:
    """Crops of a field centred on given pixels, never rescaled.

    Args:
        image: (C, H, W) field, any numeric dtype.
        centres: (n, 2) int (row, col) inside the field; each lands on crop pixel
            (size // 2, size // 2).
        size: crop side in pixels.

    Returns:
        (n, C, size, size) in ``image``'s dtype; pixels beyond the field's edge hold the
        field's per-channel border median (rounded for integer dtypes).
    """
    fill = border_median(image[None])[0]
    if image.dtype.kind in "iu":
        info = np.iinfo(image.dtype)
        fill = np.clip(np.rint(fill), info.min, info.max)
    return _windows(image, centres, size, fill)


def object_masks(
    labels: npt.NDArray, centres: npt.NDArray[np.int64], values: npt.NDArray, size: int
) -> npt.NDArray[np.uint8]:
    """(n, size, size) uint8: 1 where the crop at each centre shows its own object ``values``."""
    windows = _windows(labels[None], centres, size, np.zeros(1))[:, 0]
    return (windows == np.asarray(values)[:, None, None]).astype(np.uint8)

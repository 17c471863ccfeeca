"""Per-channel robust intensity scaling with ranges taken over a whole dataset (never per crop).

A cell's brightness is a phenotype (DNA content, marker level), so every crop of a dataset (or
of one plate) is scaled with the same per-channel ``(low, high)`` range.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def compute_ranges(
    sample: npt.NDArray, percentiles: tuple[float, float] = (1.0, 99.8)
) -> npt.NDArray[np.float64]:
    """Robust per-channel ranges from a sample of crops.

    Args:
        sample: (n, C, H, W) raw crops of any numeric dtype, drawn across the dataset.
        percentiles: low and high percentile.

    Returns:
        (C, 2) float64 ``[low, high]`` per channel, NaN and infinite pixels ignored; a flat
        channel (high <= low) gets ``high = low + 1`` so that scaling never divides by zero,
        and a channel without any finite pixel gets ``[0, 1]``.
    """
    n_channels = sample.shape[1]
    flat = np.moveaxis(sample, 1, 0).reshape(n_channels, -1).astype(np.float64)
    finite = np.isfinite(flat)
    if finite.all():
        ranges = np.percentile(flat, percentiles, axis=1).T  # (C, 2)
    else:
        ranges = np.zeros((n_channels, 2))
        for c in range(n_channels):  # per channel: nanpercentile is slow on big 2-D arrays
            values = flat[c][finite[c]]
            if values.size:
                ranges[c] = np.percentile(values, percentiles)
    flat_mask = ranges[:, 1] <= ranges[:, 0]
    ranges[flat_mask, 1] = ranges[flat_mask, 0] + 1.0
    return ranges


def apply_ranges(raw: npt.NDArray, ranges: npt.NDArray) -> npt.NDArray[np.float32]:
    """Scale raw crops into [0, 1] with per-channel ranges.

    Args:
        raw: (n, C, H, W) or (C, H, W) raw crops.
        ranges: (C, 2) ``[low, high]`` per channel, as from :func:`compute_ranges`.

    Returns:
        float32 array of ``raw``'s shape, clipped to [0, 1]; NaN and -inf become 0, +inf 1.
    """
    r = np.asarray(ranges, dtype=np.float32)
    shape = (-1, 1, 1) if raw.ndim == 3 else (1, -1, 1, 1)
    low = r[:, 0].reshape(shape)
    span = (r[:, 1] - r[:, 0]).reshape(shape)
    out = (raw.astype(np.float32) - low) / span
    np.clip(out, 0.0, 1.0, out=out)
    if raw.dtype.kind == "f":
        np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    return out

"""Turn normalised multi-channel crops into RGB tiles for display (colour composites)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from datasets.errors import DataError


def hex_to_rgb(colour: str) -> npt.NDArray[np.float32]:
    """``"#rrggbb"`` -> (3,) float32 in [0, 1].

    Raises:
        DataError: when ``colour`` is not of the form ``#rrggbb``.
    """
    c = colour.lstrip("#")
    if len(c) != 6:
        raise DataError(f"colour {colour!r} is not of the form #rrggbb")
    try:
        return np.array([int(c[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32) / 255.0
    except ValueError as exc:
        raise DataError(f"colour {colour!r} is not of the form #rrggbb") from exc


def composite(
    crops: npt.NDArray[np.float32],
    colours: Sequence[str],
    *,
    visible: Sequence[bool] | None = None,
    gains: Sequence[float] | None = None,
) -> npt.NDArray[np.uint8]:
    """Additive colour composite of normalised crops.

    Args:
        crops: (n, C, H, W) float32 in [0, 1] (as from ``PixelStore.read``).
        colours: one ``#rrggbb`` per channel.
        visible: per-channel on/off; all on by default.
        gains: per-channel contrast multiplier (1 = as normalised); all 1 by default.

    Returns:
        (n, H, W, 3) uint8 RGB tiles.
    """
    n_channels = crops.shape[1]
    if len(colours) != n_channels:
        raise DataError(f"{len(colours)} colours given for {n_channels} channels")
    visible = [True] * n_channels if visible is None else list(visible)
    gains = [1.0] * n_channels if gains is None else list(gains)
    rgb = np.zeros((crops.shape[0], crops.shape[2], crops.shape[3], 3), dtype=np.float32)
    for ch in range(n_channels):
        if not visible[ch]:
            continue
        layer = np.clip(crops[:, ch] * float(gains[ch]), 0.0, 1.0)
        rgb += layer[..., None] * hex_to_rgb(colours[ch])
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def channel_strip(
    crop: npt.NDArray[np.float32], colours: Sequence[str], gap: int = 2
) -> npt.NDArray[np.uint8]:
    """One cell's channels side by side, each in its own colour.

    Args:
        crop: (C, H, W) float32 in [0, 1].
        colours: one ``#rrggbb`` per channel.
        gap: pixels of black between channels.

    Returns:
        (H, C * W + (C - 1) * gap, 3) uint8 RGB.
    """
    n_channels, h, w = crop.shape
    out = np.zeros((h, n_channels * w + (n_channels - 1) * gap, 3), dtype=np.uint8)
    for ch in range(n_channels):
        tile = composite(crop[None, ch : ch + 1], [colours[ch]])[0]
        out[:, ch * (w + gap) : ch * (w + gap) + w] = tile
    return out


def upscale(tiles: npt.NDArray[np.uint8], factor: int) -> npt.NDArray[np.uint8]:
    """Nearest-neighbour enlargement of (n, H, W, 3) or (H, W, 3) tiles for crisp display."""
    if factor <= 1:
        return tiles
    axes = (-3, -2)
    out = tiles
    for ax in axes:
        out = np.repeat(out, factor, axis=ax)
    return out

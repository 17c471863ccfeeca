"""Per-channel normalisation ranges of an ingest's crops, per plate or for the whole part,
from a seeded sample of cells (stored in ``parts.json``; :class:`~datasets.pixels.store.PixelStore`
applies them).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from datasets.normalise import compute_ranges

#: Key of the single range set of a part normalised over the whole dataset.
DATASET_GROUP = "*"


def _flat_channels(
    sample: npt.NDArray, ranges: npt.NDArray, percentiles: tuple[float, float]
) -> list[int]:
    """Channels whose high percentile does not exceed the low one (compute_ranges's guard)."""
    flat = []
    for c in np.flatnonzero(ranges[:, 1] - ranges[:, 0] == 1.0):  # the guard sets high = low + 1
        if np.percentile(sample[:, c], percentiles[1]) <= ranges[c, 0]:
            flat.append(int(c))
    return flat


class RowArray(Protocol):
    """Rows read by index: a :class:`PartArray`, or a part over several arrays."""

    def __len__(self) -> int: ...

    def take(self, rows: npt.NDArray[np.int64]) -> npt.NDArray: ...


def part_ranges(
    part: RowArray,
    groups: pd.Series | None,
    percentiles: tuple[float, float],
    rng: np.random.Generator,
    sample_size: int = 2000,
    rows: npt.NDArray[np.int64] | None = None,
) -> tuple[dict[str, list[list[float]]], dict[str, list[int]]]:
    """Per-group normalisation ranges of a part, from a random sample of cells per group.

    Args:
        part: the part's (n, C, S, S) crops.
        groups: (n,) group name of each cell (e.g. its plate), or None for one dataset-wide
            group named :data:`DATASET_GROUP`.
        percentiles: low and high percentile, as for :func:`compute_ranges`.
        rng: draws the sample cells.
        sample_size: at most this many cells per group.
        rows: (n,) each cell's row of ``part`` (the cell table's ``row``); cell i is row i
            when None.

    Returns:
        ``(ranges, flat)``: ranges[group] is the (C, 2) ``[low, high]`` list per channel;
        flat[group] lists the channels with no intensity range in that group.
    """
    n = len(part)
    if groups is None:
        codes, names = np.zeros(n, dtype=np.int64), [DATASET_GROUP]
    else:
        codes, uniques = pd.factorize(groups, sort=True)
        names = [str(u) for u in uniques]
    ranges: dict[str, list[list[float]]] = {}
    flat: dict[str, list[int]] = {}
    for k, name in enumerate(names):
        cells = np.flatnonzero(codes == k)
        cells = np.sort(rng.choice(cells, size=min(sample_size, len(cells)), replace=False))
        sample = part.take(cells if rows is None else np.asarray(rows)[cells])
        group_ranges = np.concatenate(  # one channel at a time bounds the float64 copy
            [compute_ranges(sample[:, c : c + 1], percentiles) for c in range(sample.shape[1])]
        )
        ranges[name] = group_ranges.tolist()
        flat[name] = _flat_channels(sample, group_ranges, percentiles)
    return ranges, flat

"""Per-channel normalisation ranges of an ingest's crops, per plate or for the whole part,
from a seeded sample of cells (stored in ``parts.json``; :class:`~datasets.pixels.store.PixelStore`
applies them).

Only the pixels of the source crops count, not the padding around a crop smaller than the crop
size: on a screen of 12-pixel crops padded to 64 the padding is 96% of the pixels, so the
99.8th percentile fell inside ordinary cells and every brighter cell was clipped to the same
white (a bright phenotype erased).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from datasets.errors import DataError
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


def _inside(sample: npt.NDArray, boxes: npt.NDArray[np.int64]) -> npt.NDArray:
    """(1, C, 1, m): the pixels of each crop of ``sample`` (n, C, S, S) inside its box."""
    if (boxes[:, 2:] >= sample.shape[2]).all():
        return sample
    parts = [
        crop[:, t : t + h, left : left + w].reshape(crop.shape[0], -1)
        for crop, (t, left, h, w) in zip(sample, boxes, strict=True)
    ]
    return np.concatenate(parts, axis=1)[None, :, None, :]


@dataclass(frozen=True)
class Placement:
    """Where each cell of a part is."""

    #: (n,) each cell's row of the part (the cell table's ``row``); cell i is row i when None
    rows: npt.NDArray[np.int64] | None = None
    #: (n, 4) ``top, left, height, width`` of each cell's source pixels in its stored crop
    #: (:func:`datasets.crops.resize.stored_boxes`); the whole crop when None
    boxes: npt.NDArray[np.int64] | None = None


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
    place: Placement | None = None,
) -> tuple[dict[str, list[list[float]]], dict[str, list[int]]]:
    """Per-group normalisation ranges of a part, from a random sample of cells per group.

    Args:
        part: the part's (n, C, S, S) crops.
        groups: (n,) group name of each cell (e.g. its plate), or None for one dataset-wide
            group named :data:`DATASET_GROUP`.
        percentiles: low and high percentile, as for :func:`compute_ranges`.
        rng: draws the sample cells.
        sample_size: at most this many cells per group.
        place: each cell's row of ``part`` and the box of its source pixels in its crop
            (:class:`Placement`); cell i is row i, and its whole crop counts, when None.

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
        place = place or Placement()
        sample = part.take(cells if place.rows is None else np.asarray(place.rows)[cells])
        if place.boxes is not None:
            sample = _inside(sample, np.asarray(place.boxes)[cells])
        group_ranges = np.concatenate(  # one channel at a time bounds the float64 copy
            [compute_ranges(sample[:, c : c + 1], percentiles) for c in range(sample.shape[1])]
        )
        ranges[name] = group_ranges.tolist()
        flat[name] = _flat_channels(sample, group_ranges, percentiles)
    return ranges, flat


def dataset_ranges(project_dir: Path) -> list[list[float]] | None:
    """The whole-dataset ranges a project's first part was normalised with, or None when the
    project normalises per plate (its first part does: a new plate then gets ranges of its own,
    as ``add`` does). Plates added later with ranges of their own (a part with a plate column)
    do not change the project's scale: a folder without plates added after them still takes
    the first part's ranges."""
    from datasets.cells import read_parts

    parts = read_parts(project_dir)
    if not parts or parts[0].get("normalise_by") != "dataset":
        return None
    return parts[0]["ranges"][DATASET_GROUP]


def adopt_ranges(project_dir: Path, ranges: list[list[float]], part: int | None = None) -> None:
    """Normalise every part of ``project_dir`` (ingested over the whole dataset), or only part
    number ``part``, with ``ranges``, a project's (:func:`dataset_ranges`), so that its crops are
    scaled on that project's intensity scale rather than their own: a new screen or a new part of
    mostly one phenotype (a folder of G2 cells) keeps its intensity level instead of being
    stretched to its own range.

    Raises:
        DataError: a part normalised per plate, or ranges of another channel count.
    """
    from datasets.cells import read_manifest, write_manifest

    manifest = read_manifest(project_dir)
    if manifest is None:
        raise DataError(f"{project_dir}: nothing ingested to normalise")
    for entry in [e for e in manifest["parts"] if part is None or e["part"] == part]:
        if entry.get("normalise_by") != "dataset":
            raise DataError(f"{project_dir}: part {entry['part']} is normalised per plate")
        if len(ranges) != len(entry["ranges"][DATASET_GROUP]):
            raise DataError(
                f"{project_dir}: {len(entry['ranges'][DATASET_GROUP])} channel(s) but the ranges "
                f"are for {len(ranges)}"
            )
        entry["ranges"] = {DATASET_GROUP: ranges}
    write_manifest(project_dir, manifest)

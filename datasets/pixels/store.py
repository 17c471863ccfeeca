"""Crops by ``cell_id``: :class:`PixelStore` reads a project's pixel store (the arrays of
:mod:`datasets.pixels.arrays`, laid out per plate by :mod:`datasets.pixels.plates`) and scales
each crop with the normalisation ranges of its part and plate (or the whole part).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from datasets.cells import (
    CELLS_FILE,
    DAMAGED_FIX,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    PIXELS_DIR,
    READABLE_FORMATS,
    read_cells,
    read_manifest,
)
from datasets.errors import DataError, ProjectDamagedError
from datasets.normalise import apply_ranges
from datasets.pixels.arrays import PartArray, cpus
from datasets.pixels.plates import PartView, segments_of
from datasets.pixels.ranges import DATASET_GROUP

_NORM_ROWS = 256  # crops scaled by one thread at a time


def check_manifest_format(project_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse a manifest of ``.npy`` parts (not yet converted) or of a newer version.

    Raises:
        DataError: the pixels are stored in another format than this version reads.
    """
    path = Path(project_dir) / PIXELS_DIR / MANIFEST_FILE
    found = manifest.get("format", 1)
    if found in READABLE_FORMATS:
        return
    if isinstance(found, int) and found < min(READABLE_FORMATS):
        raise DataError(
            f"{path}: pixels stored as .npy parts by an earlier version; open the project "
            "with phenoscout (any command) to convert them to Zarr"
        )
    raise DataError(
        f"{path}: pixel format {found!r} is newer than this version reads ({MANIFEST_FORMAT}); "
        "update phenoscout"
    )


_SCALED_IN_PLACE = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def _scale_into(raw: npt.NDArray, ranges: npt.NDArray, out: npt.NDArray[np.float32]) -> None:
    """:func:`~datasets.normalise.apply_ranges` of ``raw`` (uint8, uint16 or float32) written
    into ``out``, the same float32 operations without temporaries."""
    r = np.asarray(ranges, dtype=np.float32)
    low = r[:, 0].reshape(1, -1, 1, 1)
    span = (r[:, 1] - r[:, 0]).reshape(1, -1, 1, 1)
    np.subtract(raw, low, out=out, dtype=np.float32)
    np.divide(out, span, out=out)
    np.clip(out, 0.0, 1.0, out=out)
    if raw.dtype.kind == "f":
        np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)


class PixelStore:
    """Read-only, lazy access to a project's crops by ``cell_id``.

    Arrays are opened on first use; the ``cell_id -> (part, row)`` map and each cell's
    normalisation range set are built once from the cell table. A part's rows are read through
    its :class:`~datasets.pixels.plates.PartView` (its plates' arrays).

    Attributes:
        n_cells: number of cells in the cell table.
        n_channels: channels per crop.
        crop_size: crop side S in pixels.
        dtype: the dtype :meth:`read_raw` returns (the widest of the parts' source dtypes).
    """

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = Path(project_dir)
        manifest = read_manifest(self.project_dir)
        if manifest is not None and not isinstance(manifest, dict):
            path = self.project_dir / PIXELS_DIR / MANIFEST_FILE
            raise ProjectDamagedError(path, "not a JSON object", DAMAGED_FIX)
        if manifest is None and (self.project_dir / CELLS_FILE).is_file():
            path = self.project_dir / PIXELS_DIR / MANIFEST_FILE
            raise ProjectDamagedError(path, "missing, but the project has cells", DAMAGED_FIX)
        if not manifest or not manifest.get("parts"):
            raise DataError(f"{self.project_dir}: no pixels stored; ingest crops first")
        check_manifest_format(self.project_dir, manifest)
        try:
            self._parts = {int(p["part"]): p for p in manifest["parts"]}
            self.n_channels = int(manifest["n_channels"])
            self.crop_size = int(manifest["crop_size"])
            self.dtype = np.result_type(*[np.dtype(p["dtype"]) for p in self._parts.values()])
            group_cols = sorted({p["group_column"] for p in self._parts.values()
                                 if p["group_column"]})  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as err:  # edited or overwritten
            path = self.project_dir / PIXELS_DIR / MANIFEST_FILE
            raise ProjectDamagedError(path, f"no valid {err}", DAMAGED_FIX) from err
        table = read_cells(self.project_dir, ["cell_id", "part", "row", *group_cols])
        self._ids = pd.Index(table["cell_id"])
        self._part = table["part"].to_numpy(np.int64)
        self._row = table["row"].to_numpy(np.int64)
        self._ranges, self._range_idx = self._range_sets(table)
        self._views: dict[int, PartView] = {}
        self._opened: dict[str, PartArray] = {}  # arrays by file, shared by the parts' views
        self.n_cells = len(table)

    def _range_sets(self, table: pd.DataFrame) -> tuple[list[npt.NDArray], npt.NDArray]:
        """All (C, 2) range sets, and for each cell the index of the set that applies to it."""
        sets: list[npt.NDArray] = []
        idx = np.zeros(len(table), dtype=np.int64)
        for part, info in sorted(self._parts.items()):
            in_part = self._part == part
            column = info["group_column"]
            groups = table.loc[in_part, column].fillna("") if column else None
            names = sorted(set(groups)) if groups is not None else [DATASET_GROUP]
            missing = [g for g in names if g not in info["ranges"]]
            if missing:
                raise DataError(
                    f"{self.project_dir}: part {part} has no normalisation ranges for "
                    f"{column} {missing[:3]}; the cell table was edited, re-run the ingest"
                )
            codes = {g: len(sets) + i for i, g in enumerate(names)}
            sets.extend(np.asarray(info["ranges"][g], dtype=np.float64) for g in names)
            idx[in_part] = (
                groups.map(codes).to_numpy() if groups is not None else codes[DATASET_GROUP]
            )
        return sets, idx

    def _positions(self, cell_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        pos = self._ids.get_indexer(list(cell_ids))
        if (pos < 0).any():
            unknown = [c for c, p in zip(cell_ids, pos, strict=True) if p < 0]
            raise DataError(
                f"{len(unknown)} unknown cell id(s), e.g. {unknown[:3]}; they are not in "
                f"{self.project_dir / 'cells.parquet'}"
            )
        return pos.astype(np.int64)

    def _array(self, part: int) -> PartView:
        if part not in self._views:
            try:
                segments = segments_of(self._parts[part])
            except (KeyError, TypeError, ValueError) as err:
                path = self.project_dir / PIXELS_DIR / MANIFEST_FILE
                raise ProjectDamagedError(
                    path, f"part {part}: no valid {err}", DAMAGED_FIX
                ) from err
            pixels = self.project_dir / PIXELS_DIR
            self._views[part] = PartView(pixels, segments, opened=self._opened)
        return self._views[part]

    def _read_positions(self, pos: npt.NDArray[np.int64]) -> npt.NDArray:
        """Raw crops of the cells at table positions ``pos``: per part, one contiguous slice
        when the rows are a run, else the distinct rows read concurrently."""
        size = self.crop_size
        out = np.empty((len(pos), self.n_channels, size, size), dtype=self.dtype)
        parts, rows = self._part[pos], self._row[pos]
        for part in np.unique(parts).tolist():
            sel = np.flatnonzero(parts == part)
            order = sel[np.argsort(rows[sel], kind="stable")]
            part_rows = rows[order]
            array = self._array(part)
            run = bool((np.diff(part_rows) == 1).all())
            whole = len(sel) == len(pos) and bool((np.diff(order) == 1).all())
            if run and whole and array.dtype == out.dtype:
                return array.rows(int(part_rows[0]), int(part_rows[-1]) + 1)  # no copy
            if run:  # one contiguous run: whole shards streamed
                out[order] = array.rows(int(part_rows[0]), int(part_rows[-1]) + 1)
            else:
                out[order] = array.take(part_rows)
        return out

    def _normalise(self, raw: npt.NDArray, pos: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Each crop scaled with its range set; many crops in blocks, in threads (numpy
        releases the GIL), so scaling keeps up with reading."""
        out = np.empty(raw.shape, dtype=np.float32)
        idx = self._range_idx[pos]

        def block(start: int) -> None:
            stop = start + _NORM_ROWS
            part, where, sets = raw[start:stop], out[start:stop], idx[start:stop]
            if (sets == sets[0]).all() and part.dtype in _SCALED_IN_PLACE:
                _scale_into(part, self._ranges[sets[0]], where)
                return
            for k in np.unique(sets):
                sel = sets == k
                where[sel] = apply_ranges(part[sel], self._ranges[k])

        starts = range(0, len(raw), _NORM_ROWS)
        if len(starts) > 1:
            with ThreadPoolExecutor(min(cpus(), len(starts))) as pool:
                list(pool.map(block, starts))
        elif len(raw):
            block(0)
        return out

    def read_raw(self, cell_ids: Sequence[str]) -> npt.NDArray:
        """Stored crops as they came from the source files.

        Args:
            cell_ids: ids from the cell table, any order, repeats allowed.

        Returns:
            (n, C, S, S) crops in :attr:`dtype`, in the order of ``cell_ids``.

        Raises:
            DataError: for an unknown cell id.
        """
        return self._read_positions(self._positions(cell_ids))

    def read(self, cell_ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """Crops scaled per channel to [0, 1] with the stored dataset (or plate) ranges.

        Returns:
            (n, C, S, S) float32 in [0, 1], in the order of ``cell_ids``.

        Raises:
            DataError: for an unknown cell id.
        """
        pos = self._positions(cell_ids)
        return self._normalise(self._read_positions(pos), pos)

    def iter_batches(self, batch_size: int = 1024) -> Iterator[tuple[list[str], npt.NDArray]]:
        """All cells in cell-table order, normalised, ``batch_size`` at a time.

        Yields:
            ``(cell_ids, crops)`` with crops (k, C, S, S) float32 in [0, 1], k <= batch_size.
        """
        if batch_size < 1:
            raise DataError(f"batch_size {batch_size} must be at least 1")
        for start in range(0, self.n_cells, batch_size):
            pos = np.arange(start, min(start + batch_size, self.n_cells), dtype=np.int64)
            raw = self._read_positions(pos)
            yield self._ids[start : start + len(pos)].tolist(), self._normalise(raw, pos)

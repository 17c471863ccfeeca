"""The pixel store: ``PROJECT/pixels/part-NNNN.npy`` crops plus ``parts.json``.

Each ingest writes one part, an ``(n, C, S, S)`` ``.npy`` array in the source bit depth (uint8,
uint16 or float32), written through short-lived memory-mapped windows so that neither the
crops nor their mapped pages pile up in RAM. ``parts.json`` records per part its source folder,
dtype, layout, kept channels and the per-channel normalisation ranges (for the whole part, or
one set per plate); :class:`PixelStore` applies them when reading.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from datasets.cells import DAMAGED_FIX, MANIFEST_FILE, PIXELS_DIR, read_cells, read_manifest
from datasets.errors import DataError, ProjectDamagedError
from datasets.normalise import apply_ranges, compute_ranges

#: Key of the single range set of a part normalised over the whole dataset.
DATASET_GROUP = "*"
_WINDOW_BYTES = 32 << 20  # size of one memory-mapped write window


def part_file(project_dir: Path, part: int) -> Path:
    """Path of part ``part``'s pixel array."""
    return Path(project_dir) / PIXELS_DIR / f"part-{part:04d}.npy"


class PartWriter:
    """Writes rows of a new ``(n, C, S, S)`` ``.npy`` file through a moving memory-map window.

    Only one window of about 32 MiB is mapped at a time, so memory use does not grow with n.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: npt.DTypeLike) -> None:
        created = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        self._offset = created.offset
        del created  # unmapped: the header and size are on disk, rows come through windows
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self._row_bytes = int(np.prod(shape[1:])) * self.dtype.itemsize
        self._window_rows = max(1, _WINDOW_BYTES // max(self._row_bytes, 1))
        self._window: np.memmap | None = None
        self._start = 0

    def _map(self, row: int) -> np.memmap:
        start = row - row % self._window_rows
        stop = min(start + self._window_rows, self.shape[0])
        self._window = np.memmap(
            self.path,
            dtype=self.dtype,
            mode="r+",
            offset=self._offset + start * self._row_bytes,
            shape=(stop - start, *self.shape[1:]),
        )
        self._start = start
        return self._window

    def write(self, row: int, crops: npt.NDArray) -> None:
        """Write ``crops`` (k, C, S, S) to rows ``row`` .. ``row + k - 1`` (cast to the dtype)."""
        done = 0
        while done < len(crops):
            at = row + done
            window = self._window
            if window is None or not self._start <= at < self._start + len(window):
                window = self._map(at)
            take = min(len(crops) - done, self._start + len(window) - at)
            window[at - self._start : at - self._start + take] = crops[done : done + take]
            done += take

    def close(self) -> None:
        """Unmap the current window; the kernel writes the pages back."""
        self._window = None


class PartHeader(NamedTuple):
    """Where the rows of a part file start and what they hold."""

    offset: int  # bytes before the first row
    dtype: np.dtype
    shape: tuple[int, ...]  # (n, C, S, S)


def open_part(path: Path) -> np.memmap:
    """A part file as a read-only (n, C, S, S) memory map.

    Raises:
        DataError: when the file is missing or not a valid ``.npy`` array.
    """
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise ProjectDamagedError(path, err, DAMAGED_FIX) from err


def part_header(path: Path) -> PartHeader:
    """Header of a part file (read through a short-lived read-only mapping)."""
    mapped = open_part(path)
    header = PartHeader(int(mapped.offset), mapped.dtype, tuple(mapped.shape))
    del mapped
    return header


def read_rows(path: Path, start: int, stop: int, header: PartHeader | None = None) -> npt.NDArray:
    """Rows ``start:stop`` of a part file with plain file reads (no mapping kept).

    Args:
        path: the part file.
        start, stop: row range.
        header: the file's :func:`part_header`, when the caller has it already.

    Returns:
        (stop - start, C, S, S) array in the file's dtype.
    """
    offset, dtype, shape = header or part_header(path)
    row_items = int(np.prod(shape[1:]))
    count = (stop - start) * row_items
    try:
        data = np.fromfile(
            path, dtype=dtype, count=count, offset=offset + start * row_items * dtype.itemsize
        )
    except (OSError, ValueError) as err:
        raise ProjectDamagedError(path, err, DAMAGED_FIX) from err
    if data.size != count:
        raise ProjectDamagedError(path, f"truncated before row {stop}", DAMAGED_FIX)
    return data.reshape(stop - start, *shape[1:])


def read_row_set(
    path: Path, rows: npt.NDArray[np.int64], header: PartHeader | None = None
) -> npt.NDArray:
    """Scattered rows of a part file with plain file reads (no mapping, so no page pile-up).

    The reads are issued from a few threads at once (``os.pread``): from a cold page cache
    each row is one disk access, and their latencies overlap instead of adding up.

    Args:
        path: the part file.
        rows: (k,) row indices, best sorted.
        header: the file's :func:`part_header`, when the caller has it already.

    Returns:
        (k, C, S, S) array in the file's dtype, in the order of ``rows``.
    """
    offset, dtype, shape = header or part_header(path)
    out = np.empty((len(rows), *shape[1:]), dtype=dtype)
    row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
    flat = out.reshape(len(rows), -1).view(np.uint8)
    fd = os.open(path, os.O_RDONLY)

    def one(i: int) -> bool:
        return os.preadv(fd, [flat[i]], offset + int(rows[i]) * row_bytes) == row_bytes

    try:
        if len(rows) > 1:
            with ThreadPoolExecutor(min(_READ_THREADS, len(rows))) as pool:
                complete = list(pool.map(one, range(len(rows))))
        else:
            complete = [one(i) for i in range(len(rows))]
    finally:
        os.close(fd)
    if not all(complete):
        bad = int(rows[complete.index(False)])
        raise DataError(f"{path}: truncated at row {bad}; re-run the ingest")
    return out


_READ_THREADS = 16  # scattered rows read at once
_SCATTERED_MAX = 4096  # rows up to which a scattered read uses read_row_set, else the memmap


def rewrite_part(
    src: Path, dst: Path, keep_rows: npt.NDArray[np.bool_], keep_channels: list[int]
) -> int:
    """Copy the kept rows and channels of part file ``src`` into a new file ``dst``, chunkwise.

    Args:
        src: existing (n, C, S, S) part file.
        dst: new file, (keep_rows.sum(), len(keep_channels), S, S) in the same dtype.
        keep_rows: (n,) bool mask of rows to keep.
        keep_channels: source channel indices to keep, in order.

    Returns:
        The number of rows written.
    """
    header = part_header(src)
    n, n_channels, size, _ = header.shape
    n_out = int(keep_rows.sum())
    writer = PartWriter(dst, (n_out, len(keep_channels), size, size), header.dtype)
    chunk = max(1, _WINDOW_BYTES // (n_channels * size * size * header.dtype.itemsize))
    out_row = 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = read_rows(src, start, stop, header)[keep_rows[start:stop]][:, keep_channels]
        writer.write(out_row, rows)
        out_row += len(rows)
    writer.close()
    return out_row


def _flat_channels(
    sample: npt.NDArray, ranges: npt.NDArray, percentiles: tuple[float, float]
) -> list[int]:
    """Channels whose high percentile does not exceed the low one (compute_ranges's guard)."""
    flat = []
    for c in np.flatnonzero(ranges[:, 1] - ranges[:, 0] == 1.0):  # the guard sets high = low + 1
        if np.percentile(sample[:, c], percentiles[1]) <= ranges[c, 0]:
            flat.append(int(c))
    return flat


def part_ranges(
    path: Path,
    groups: pd.Series | None,
    percentiles: tuple[float, float],
    rng: np.random.Generator,
    sample_size: int = 2000,
) -> tuple[dict[str, list[list[float]]], dict[str, list[int]]]:
    """Per-group normalisation ranges of a part, from a random sample of cells per group.

    Args:
        path: the (n, C, S, S) part file.
        groups: (n,) group name of each row (e.g. its plate), or None for one dataset-wide
            group named :data:`DATASET_GROUP`.
        percentiles: low and high percentile, as for :func:`compute_ranges`.
        rng: draws the sample rows.
        sample_size: at most this many cells per group.

    Returns:
        ``(ranges, flat)``: ranges[group] is the (C, 2) ``[low, high]`` list per channel;
        flat[group] lists the channels with no intensity range in that group.
    """
    header = part_header(path)
    n = header.shape[0]
    if groups is None:
        codes, names = np.zeros(n, dtype=np.int64), [DATASET_GROUP]
    else:
        codes, uniques = pd.factorize(groups, sort=True)
        names = [str(u) for u in uniques]
    ranges: dict[str, list[list[float]]] = {}
    flat: dict[str, list[int]] = {}
    for k, name in enumerate(names):
        rows = np.flatnonzero(codes == k)
        rows = np.sort(rng.choice(rows, size=min(sample_size, len(rows)), replace=False))
        sample = read_row_set(path, rows, header)
        group_ranges = np.concatenate(  # one channel at a time bounds the float64 copy
            [compute_ranges(sample[:, c : c + 1], percentiles) for c in range(sample.shape[1])]
        )
        ranges[name] = group_ranges.tolist()
        flat[name] = _flat_channels(sample, group_ranges, percentiles)
    return ranges, flat


class PixelStore:
    """Read-only, lazy access to a project's crops by ``cell_id``.

    Part files are memory-mapped on first use; the ``cell_id -> (part, row)`` map and each
    cell's normalisation range set are built once from the cell table.

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
        if not manifest or not manifest.get("parts"):
            raise DataError(f"{self.project_dir}: no pixels stored; ingest crops first")
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
        self._maps: dict[int, np.memmap] = {}
        self._headers: dict[int, PartHeader] = {}
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

    def _memmap(self, part: int) -> np.memmap:
        if part not in self._maps:
            self._maps[part] = open_part(part_file(self.project_dir, part))
        return self._maps[part]

    def _read_positions(self, pos: npt.NDArray[np.int64]) -> npt.NDArray:
        """Raw crops of the cells at table positions ``pos``, rows sorted per part for locality."""
        size = self.crop_size
        out = np.empty((len(pos), self.n_channels, size, size), dtype=self.dtype)
        parts, rows = self._part[pos], self._row[pos]
        for part in np.unique(parts).tolist():
            sel = np.flatnonzero(parts == part)
            order = sel[np.argsort(rows[sel], kind="stable")]
            part_rows = rows[order]
            if (np.diff(part_rows) == 1).all():  # one contiguous run: plain file read
                path = part_file(self.project_dir, part)
                if part not in self._headers:
                    self._headers[part] = part_header(path)
                first, stop = int(part_rows[0]), int(part_rows[-1]) + 1
                out[order] = read_rows(path, first, stop, self._headers[part])
            elif len(part_rows) <= _SCATTERED_MAX:  # a batch: parallel reads, cold-cache fast
                path = part_file(self.project_dir, part)
                if part not in self._headers:
                    self._headers[part] = part_header(path)
                out[order] = read_row_set(path, part_rows, self._headers[part])
            else:
                out[order] = self._memmap(part)[part_rows]
        return out

    def _normalise(self, raw: npt.NDArray, pos: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        out = np.empty(raw.shape, dtype=np.float32)
        idx = self._range_idx[pos]
        for k in np.unique(idx):
            sel = idx == k
            out[sel] = apply_ranges(raw[sel], self._ranges[k])
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

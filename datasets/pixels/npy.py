"""The ingest's temporary ``.npy`` (and the ``.npy`` parts of earlier versions): ingest tasks
fill it through short-lived memory-mapped windows (:class:`PartWriter`), and it is read back
with plain file reads, or copied into a Zarr array shard by shard (:func:`copy_npy_to_zarr`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from datasets.cells import DAMAGED_FIX, PIXELS_DIR
from datasets.errors import ProjectDamagedError
from datasets.pixels.writer import ZarrPartWriter

_WINDOW_BYTES = 32 << 20  # size of one memory-mapped write window of a temporary .npy


def npy_part_file(project_dir: Path, part: int) -> Path:
    """Path of part ``part``'s pixels as earlier versions stored them (a ``.npy`` file)."""
    return Path(project_dir) / PIXELS_DIR / f"part-{part:04d}.npy"


class PartWriter:
    """Writes rows of a new ``(n, C, S, S)`` ``.npy`` file through a moving memory-map window:
    the temporary part that ingest tasks fill in parallel before it becomes a Zarr array.

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
    """Where the rows of a ``.npy`` file start and what they hold."""

    offset: int  # bytes before the first row
    dtype: np.dtype
    shape: tuple[int, ...]  # (n, C, S, S)


def open_npy(path: Path) -> np.memmap:
    """A ``.npy`` file (a temporary or an old-format part) as a read-only memory map.

    Raises:
        ProjectDamagedError: when the file is missing or not a valid ``.npy`` array.
    """
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise ProjectDamagedError(path, err, DAMAGED_FIX) from err


def part_header(path: Path) -> PartHeader:
    """Header of a ``.npy`` file (read through a short-lived read-only mapping)."""
    mapped = open_npy(path)
    header = PartHeader(int(mapped.offset), mapped.dtype, tuple(mapped.shape))
    del mapped
    return header


def read_rows(path: Path, start: int, stop: int, header: PartHeader | None = None) -> npt.NDArray:
    """Rows ``start:stop`` of a ``.npy`` file with plain file reads (no mapping kept).

    Args:
        path: the ``.npy`` file.
        start, stop: row range.
        header: the file's :func:`part_header`, when the caller has it already.

    Returns:
        (stop - start, ...) array in the file's dtype.
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


def copy_npy_to_zarr(
    src: Path,
    dst: Path,
    keep_rows: npt.NDArray[np.bool_] | None = None,
    keep_channels: list[int] | None = None,
) -> int:
    """Copy the kept rows (and channels, axis 1) of the ``.npy`` file ``src`` into a new sharded
    Zarr array ``dst``, one shard at a time.

    Args:
        src: existing (n, ...) ``.npy`` file.
        dst: the new ``.zarr`` folder (replaced when it exists).
        keep_rows: (n,) bool mask of rows to keep; all when None.
        keep_channels: source channel indices to keep, in order; all when None.

    Returns:
        The number of rows written.
    """
    header = part_header(src)
    n = header.shape[0]
    keep_rows = np.ones(n, dtype=bool) if keep_rows is None else np.asarray(keep_rows, bool)
    row_shape = list(header.shape[1:])
    if keep_channels is not None:
        row_shape[0] = len(keep_channels)
    writer = ZarrPartWriter(dst, (int(keep_rows.sum()), *row_shape), header.dtype)
    try:
        chunk = max(1, min(writer.rows_per_shard, _WINDOW_BYTES // _row_bytes(header)))
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            rows = read_rows(src, start, stop, header)[keep_rows[start:stop]]
            writer.append(rows if keep_channels is None else rows[:, keep_channels])
        return writer.close()
    except BaseException:
        writer.discard()
        raise


def _row_bytes(header: PartHeader) -> int:
    return max(1, int(np.prod(header.shape[1:])) * header.dtype.itemsize)

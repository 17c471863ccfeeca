"""The pixel arrays: ``(n, C, S, S)`` Zarr v3 arrays of crops in the source bit depth (uint8,
uint16 or float32), read by :class:`PartArray`.

Each array is sharded: every crop is one inner chunk (Blosc: bit shuffle, lz4; then a crc32c
checksum), a few thousand crops make one shard file (``<array>.zarr/c/K/0/0/0``). A batch of
crops scattered over the screen is a few small reads (each shard's index, then each crop);
reading in table order reads each shard's crops in blocks of a few hundred (one read each,
decoded in threads). A damaged or missing shard is reported as
:class:`~datasets.errors.ProjectDamagedError` naming the shard file. The arrays are written by
:mod:`datasets.pixels.writer`, laid out one per plate by :mod:`datasets.pixels.plates`.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import google_crc32c
import numcodecs
import numpy as np
import numpy.typing as npt
import zarr
import zarr.errors

from datasets.cells import DAMAGED_FIX, PIXELS_DIR
from datasets.errors import ProjectDamagedError

_BLOSC = numcodecs.Blosc()  # decodes one crop's chunk (its settings are in the chunk)
_READ_THREADS = 8  # crops read at once (pread and Blosc release the GIL)
_THREADED_ROWS = 4  # from this many crops a read uses the threads
_BULK_ROWS = 16  # from this many crops of one shard, their bytes are read in one pread
_BLOCK_ROWS = (32, 512)  # crops one thread decodes from one such read, least and most
_BULK_SLACK = 1 << 20  # a bulk read may carry this many unneeded bytes (plus as many as needed)


def cpus() -> int:
    """CPUs this process may use (at most :data:`_READ_THREADS`)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, min(_READ_THREADS, len(os.sched_getaffinity(0))))
    return max(1, min(_READ_THREADS, os.cpu_count() or 1))


#: What reading a damaged Zarr array raises: checksum and JSON errors (ValueError), zstd errors
#: (RuntimeError), an unreadable file (OSError), zarr's own errors.
_ZARR_ERRORS = (ValueError, RuntimeError, OSError, KeyError, TypeError, zarr.errors.BaseZarrError)


def part_file(project_dir: Path, part: int) -> Path:
    """Path of part ``part``'s pixel array (a Zarr folder) when its cells have no plate."""
    return Path(project_dir) / PIXELS_DIR / f"part-{part:04d}.zarr"


def remove_path(path: Path) -> None:
    """Remove a file or a folder (an array), if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


EMPTY_ENTRY = np.uint64(2**64 - 1)  # a shard index entry of a chunk never written


def _sharded_layout(meta: dict[str, Any], row_shape: tuple[int, ...]) -> bool:
    """Whether array metadata ``meta`` is the layout :class:`ZarrPartWriter` writes: one crop
    per inner chunk, little-endian bytes, Blosc, crc32c; the index at the end with a crc32c."""
    codecs = meta.get("codecs") or []
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
        return False
    conf = codecs[0].get("configuration", {})
    inner = [c.get("name") for c in conf.get("codecs", [])]
    index = [c.get("name") for c in conf.get("index_codecs", [])]
    endian = {c.get("configuration", {}).get("endian", "little")
              for c in [*conf.get("codecs", []), *conf.get("index_codecs", [])]
              if c.get("name") == "bytes"}  # fmt: skip
    return (tuple(conf.get("chunk_shape", ())) == (1, *row_shape)
            and inner == ["bytes", "blosc", "crc32c"] and index == ["bytes", "crc32c"]
            and conf.get("index_location", "end") == "end"
            and endian <= {"little"} and meta.get("fill_value") == 0)  # fmt: skip


def shard_error(path: Path, cause: object) -> ProjectDamagedError:
    """A damaged shard file: the message names the file, the app's brief the part."""
    err = ProjectDamagedError(path, cause, DAMAGED_FIX)
    part = next((p.name for p in path.parents if p.suffix == ".zarr"), path.name)
    err.brief = f"{part} in the project's pixels folder is damaged; {DAMAGED_FIX}"
    return err


class PartArray:
    """A part's Zarr array, read-only; any damage is a :class:`ProjectDamagedError` that names
    the Zarr folder or the shard file.

    Arrays in the layout :class:`ZarrPartWriter` writes are read straight from their shard
    files, following the Zarr v3 sharding format: each shard's index (checked against its
    crc32c, then kept), then per crop one ``pread``, its crc32c checked and one Blosc decode,
    from a few threads so that cold-cache reads overlap. Any other layout is read through zarr.

    Attributes:
        path: the ``.zarr`` folder.
        shape, dtype: of the whole array, (n, ...).
        rows_per_shard: rows in one shard file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            cause = "missing" if not self.path.exists() else "no zarr.json"
            raise ProjectDamagedError(self.path, cause, DAMAGED_FIX)
        try:
            self._array = zarr.open_array(str(self.path), mode="r")
            self.shape = tuple(int(s) for s in self._array.shape)
            self.dtype = np.dtype(self._array.dtype)
            shards = self._array.shards or self._array.chunks
            self.direct = _sharded_layout(self._array.metadata.to_dict(), self.shape[1:])
        except _ZARR_ERRORS as err:
            raise ProjectDamagedError(self.path / "zarr.json", err, DAMAGED_FIX) from err
        self.rows_per_shard = int(shards[0])
        self._row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self._checked: set[int] = set()
        self._indexes: dict[int, npt.NDArray[np.uint64]] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def shard_file(self, shard: int) -> Path:
        """The file of shard ``shard`` (rows ``shard * rows_per_shard`` onwards)."""
        return self.path.joinpath("c", str(shard), *["0"] * (len(self.shape) - 1))

    def _check(self, shards: npt.NDArray[np.int64]) -> None:
        """Every shard to read is a file (zarr would read a missing one as zeros)."""
        for shard in np.unique(shards).tolist():
            if shard not in self._checked:
                if not self.shard_file(shard).is_file():
                    raise shard_error(self.shard_file(shard), "missing")
                self._checked.add(shard)

    def _damaged(self, rows: npt.NDArray[np.int64], err: Exception) -> ProjectDamagedError:
        """The error naming the first shard among ``rows`` that fails to read alone."""
        for shard in np.unique(rows // self.rows_per_shard).tolist():
            try:
                self._array.oindex[rows[rows // self.rows_per_shard == shard]]
            except _ZARR_ERRORS as one:
                return shard_error(self.shard_file(shard), one)
        return ProjectDamagedError(self.path, err, DAMAGED_FIX)

    def _in_range(self, last: int) -> None:
        if last >= self.shape[0]:
            raise ProjectDamagedError(
                self.path, f"{self.shape[0]} rows, the cell table names row {last}", DAMAGED_FIX
            )

    def shard_index(self, shard: int, fd: int) -> npt.NDArray[np.uint64]:
        """Shard ``shard``'s (rows_per_shard, 2) ``[offset, nbytes]`` index, checked."""
        if shard in self._indexes:
            return self._indexes[shard]
        path = self.shard_file(shard)
        need = self.rows_per_shard * 16 + 4
        size = os.fstat(fd).st_size
        raw = os.pread(fd, need, size - need) if size >= need else b""
        if len(raw) != need:
            raise shard_error(path, f"{size} bytes, shorter than its index")
        if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise shard_error(path, "shard index checksum mismatch")
        index = np.frombuffer(raw[:-4], dtype="<u8").reshape(-1, 2)
        written = index[:, 0] != EMPTY_ENTRY
        if (index[written].sum(axis=1) > size - need).any():
            raise shard_error(path, "shard index points past its data")
        self._indexes[shard] = index
        return index

    def _decode(self, chunk: bytes, into: npt.NDArray[np.uint8], row: int, shard: int) -> None:
        """Check crop ``row``'s chunk (crc32c, size) and decode it into ``into``."""
        try:
            if google_crc32c.value(chunk[:-4]) != int.from_bytes(chunk[-4:], "little"):
                raise ValueError(f"row {row}: checksum mismatch")
            size = int.from_bytes(chunk[4:8], "little")  # the Blosc header's decoded size
            if size != self._row_bytes:
                raise ValueError(f"row {row} decodes to {size} bytes")
            _BLOSC.decode(chunk[:-4], out=into)
        except (RuntimeError, ValueError, OSError) as err:
            raise shard_error(self.shard_file(shard), err) from err

    def _read_one(
        self,
        fd: int,
        where: npt.NDArray[np.uint64],
        into: npt.NDArray[np.uint8],
        row: int,
        shard: int,
    ) -> None:
        """One crop: one pread and its decode."""
        offset, nbytes = int(where[0]), int(where[1])
        if where[0] == EMPTY_ENTRY:
            into[:] = 0  # never written: the fill value
            return
        try:
            chunk = os.pread(fd, nbytes, offset)
        except OSError as err:
            raise shard_error(self.shard_file(shard), err) from err
        if len(chunk) != nbytes:
            raise shard_error(self.shard_file(shard), f"row {row}: cut short")
        self._decode(chunk, into, row, shard)

    def _read_block(
        self,
        fd: int,
        where: npt.NDArray[np.uint64],
        into: npt.NDArray[np.uint8],
        rows: npt.NDArray[np.int64],
        shard: int,
    ) -> None:
        """Crops of one shard whose bytes lie close together: one pread of their byte range,
        then each crop's check and decode; crops far apart are read one by one."""
        written = where[:, 0] != EMPTY_ENTRY
        if not written.any():
            into[:] = 0
            return
        start = int(where[written, 0].min())
        stop = int((where[written, 0] + where[written, 1]).max())
        if stop - start > 2 * int(where[written, 1].sum()) + _BULK_SLACK:
            for i in range(len(rows)):
                self._read_one(fd, where[i], into[i], int(rows[i]), shard)
            return
        try:
            data = os.pread(fd, stop - start, start)
        except OSError as err:
            raise shard_error(self.shard_file(shard), err) from err
        if len(data) != stop - start:
            raise shard_error(self.shard_file(shard), f"rows {rows[0]}-{rows[-1]}: cut short")
        ends = (where[:, 0] + where[:, 1] - start).tolist()
        for i, (offset, end) in enumerate(zip((where[:, 0] - start).tolist(), ends, strict=True)):
            if written[i]:
                self._decode(data[offset:end], into[i], int(rows[i]), shard)
            else:
                into[i] = 0

    def _read_direct(self, rows: npt.NDArray[np.int64]) -> npt.NDArray:
        """Distinct sorted ``rows`` read from the shard files (see the class text).

        Per shard, many crops are read in blocks (one pread each, decoded in bulk), a few
        crops one pread each; the blocks and crops run in threads."""
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        shards = rows // self.rows_per_shard
        fds: dict[int, int] = {}
        try:
            for shard in np.unique(shards).tolist():
                path = self.shard_file(shard)
                try:
                    fds[shard] = os.open(path, os.O_RDONLY)
                except OSError as err:
                    cause = "missing" if not path.exists() else err
                    raise shard_error(path, cause) from err
            missing = [k for k in fds if k not in self._indexes]
            if len(missing) > 1:  # cold: the shards' index reads overlap
                with ThreadPoolExecutor(min(_READ_THREADS, len(missing))) as pool:
                    list(pool.map(lambda k: self.shard_index(k, fds[k]), missing))
            where = np.empty((len(rows), 2), dtype=np.uint64)
            tasks: list[tuple[Any, ...]] = []
            bounds = np.flatnonzero(np.diff(shards)) + 1
            for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(rows)], strict=True):
                shard = int(shards[lo])
                index = self.shard_index(shard, fds[shard])
                where[lo:hi] = index[rows[lo:hi] % self.rows_per_shard]
                if hi - lo < _BULK_ROWS:
                    for i in range(lo, hi):
                        tasks.append(
                            (self._read_one, fds[shard], where[i], flat[i], int(rows[i]), shard)
                        )
                    continue
                size = -(-(hi - lo) // (2 * cpus()))
                size = min(max(size, _BLOCK_ROWS[0]), _BLOCK_ROWS[1])
                for i in range(lo, hi, size):
                    j = min(i + size, hi)
                    tasks.append(
                        (self._read_block, fds[shard], where[i:j], flat[i:j], rows[i:j], shard)
                    )
            if len(tasks) > 1 and len(rows) >= _THREADED_ROWS:
                with ThreadPoolExecutor(min(_READ_THREADS, len(tasks))) as pool:
                    list(pool.map(lambda task: task[0](*task[1:]), tasks))
            else:
                for task in tasks:
                    task[0](*task[1:])
        finally:
            for fd in fds.values():
                os.close(fd)
        return out

    def _read(self, rows: npt.NDArray[np.int64]) -> npt.NDArray:
        if self.direct:
            return self._read_direct(rows)
        self._check(rows // self.rows_per_shard)
        try:
            return np.asarray(self._array.oindex[rows])
        except _ZARR_ERRORS as err:
            raise self._damaged(rows, err) from err

    def rows(self, start: int, stop: int) -> npt.NDArray:
        """Rows ``start:stop`` in the array's dtype."""
        if stop <= start:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        self._in_range(stop - 1)
        return self._read(np.arange(start, stop, dtype=np.int64))

    def take(self, rows: npt.NDArray[np.int64]) -> npt.NDArray:
        """Rows at ``rows`` (any order, repeats allowed), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        distinct, back = np.unique(rows, return_inverse=True)
        if distinct[0] < 0:
            raise ProjectDamagedError(self.path, f"negative row {distinct[0]}", DAMAGED_FIX)
        self._in_range(int(distinct[-1]))
        return self._read(distinct)[back.reshape(-1)]


def load_part(path: Path) -> npt.NDArray:
    """A whole part's Zarr array in memory (small parts, tests)."""
    part = PartArray(path)
    return part.rows(0, len(part))


def open_part(path: Path) -> PartArray:
    """A part's Zarr array, read-only.

    Raises:
        ProjectDamagedError: when the array is missing or its metadata unreadable.
    """
    return PartArray(path)

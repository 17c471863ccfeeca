"""The pixel store: ``PROJECT/pixels/part-NNNN.zarr`` crops plus ``parts.json``.

Each ingest writes one part, an ``(n, C, S, S)`` Zarr v3 array in the source bit depth (uint8,
uint16 or float32), sharded: every crop is one inner chunk (Blosc: bit shuffle, lz4;
then a crc32c checksum), a few thousand crops make one shard file
(``part-NNNN.zarr/c/K/0/0/0``). A batch of crops scattered over the screen is a few small
reads (each shard's index, then each crop); reading in table order reads each shard's crops in
blocks of a few hundred (one read each, decoded in threads). Ingest tasks still write a
temporary ``.npy`` through short-lived memory-mapped windows (:class:`PartWriter`); its last
step copies it into the Zarr array shard by shard, a few shards encoded at once in threads
(:class:`ZarrPartWriter`), so memory stays at a few shards. Projects stored as ``.npy`` parts by
earlier versions are converted when opened (:mod:`datasets.pixels.npy_migration`).

``parts.json`` records per part its source folder, dtype, layout, kept channels and the
per-channel normalisation ranges (for the whole part, or one set per plate);
:class:`PixelStore` applies them when reading. A damaged or missing shard is reported as
:class:`~datasets.errors.ProjectDamagedError` naming the shard file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import google_crc32c
import numcodecs
import numpy as np
import numpy.typing as npt
import pandas as pd
import zarr
import zarr.errors
from zarr.codecs import BloscCodec, Crc32cCodec

from datasets.cells import (
    DAMAGED_FIX,
    PIXELS_DIR,
)
from datasets.errors import DataError, ProjectDamagedError
from datasets.normalise import compute_ranges

#: Key of the single range set of a part normalised over the whole dataset.
DATASET_GROUP = "*"
_WINDOW_BYTES = 32 << 20  # size of one memory-mapped write window of a temporary .npy
_SHARD_BYTES = 64 << 20  # uncompressed bytes of one shard, at most
_SHARD_MAX_ROWS = 4096  # crops in one shard, at most
#: Each crop's compression: Blosc, bit shuffle, lz4 level 5. On the demo's uint16 crops 0.53 of
#: the raw size; encoded 3x and decoded 4x faster than zstd level 1 (0.49, what format 2 wrote
#: first: such arrays read the same, Blosc's header names the codec of each chunk).
_CNAME: Literal["lz4", "zstd"] = "lz4"
_CLEVEL = 5
_BLOSC = numcodecs.Blosc()  # decodes one crop's chunk (its settings are in the chunk)
_READ_THREADS = 8  # crops read at once (pread and Blosc release the GIL)
_THREADED_ROWS = 4  # from this many crops a read uses the threads
_BULK_ROWS = 16  # from this many crops of one shard, their bytes are read in one pread
_BLOCK_ROWS = (32, 512)  # crops one thread decodes from one such read, least and most
_BULK_SLACK = 1 << 20  # a bulk read may carry this many unneeded bytes (plus as many as needed)
_WRITE_THREADS = 4  # shards encoded at once while writing (Blosc releases the GIL)


def cpus() -> int:
    """CPUs this process may use (at most :data:`_READ_THREADS`)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, min(_READ_THREADS, len(os.sched_getaffinity(0))))
    return max(1, min(_READ_THREADS, os.cpu_count() or 1))


#: What reading a damaged Zarr array raises: checksum and JSON errors (ValueError), zstd errors
#: (RuntimeError), an unreadable file (OSError), zarr's own errors.
_ZARR_ERRORS = (ValueError, RuntimeError, OSError, KeyError, TypeError, zarr.errors.BaseZarrError)


def part_file(project_dir: Path, part: int) -> Path:
    """Path of part ``part``'s pixel array (a Zarr folder)."""
    return Path(project_dir) / PIXELS_DIR / f"part-{part:04d}.zarr"


def npy_part_file(project_dir: Path, part: int) -> Path:
    """Path of part ``part``'s pixels as earlier versions stored them (a ``.npy`` file)."""
    return Path(project_dir) / PIXELS_DIR / f"part-{part:04d}.npy"


def shard_rows(row_shape: tuple[int, ...], dtype: npt.DTypeLike) -> int:
    """Rows of one shard for rows of ``row_shape``: up to 4,096 and about 64 MiB."""
    row_bytes = int(np.prod(row_shape)) * np.dtype(dtype).itemsize
    return int(max(1, min(_SHARD_MAX_ROWS, _SHARD_BYTES // max(row_bytes, 1))))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class ZarrPartWriter:
    """Writes rows into a sharded Zarr array in order, one whole shard at a time.

    zarr writes a new array's metadata; the shard files are encoded here, as zarr's sharding
    codec lays them out (each crop Blosc-compressed plus its crc32c, in row order, then the
    index and its crc32c), a few shards at once in threads (Blosc and the checksum release the
    GIL), so the files are the same bytes as a serial write. Memory holds the shard being
    filled and at most ``threads`` shards being encoded.

    A new array is built in a hidden folder next to ``path`` and moved into place by
    :meth:`close`, so ``path`` is either absent, the earlier array, or complete. With ``at``
    and an array at ``path`` (a plate's array, :mod:`datasets.pixels.plates`), the rows go
    after its first ``at`` rows (its length; less when a retried task writes again what an
    interrupted one appended): the new shard files are staged, then moved in, then
    ``zarr.json`` gets the new length. The shard that held row ``at - 1`` is rewritten with
    the rows before ``at`` byte for byte, so a reader of the old length reads what it read
    before, and an interrupted append leaves the old array (perhaps with rows past its length,
    unread).

    Args:
        path: the ``.zarr`` folder.
        shape: of the rows to write, (n, ...).
        dtype: of the array.
        threads: shards encoded at once (a few by default).
        at: continue the array at ``path`` from this row; None (or 0 with no array there):
            a new array.
    """

    def __init__(
        self,
        path: Path,
        shape: tuple[int, ...],
        dtype: npt.DTypeLike,
        threads: int | None = None,
        at: int | None = None,
    ) -> None:
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self.staged = self.path.with_name(f".{self.path.name}.tmp")
        _remove(self.staged)
        self.start = 0  # rows in the array before these
        self._head: tuple[bytes, npt.NDArray[np.uint64]] = (b"", np.empty((0, 2), "<u8"))
        self.appends = at is not None and (self.path / "zarr.json").is_file()
        if self.appends:
            self._open_for_append(int(at or 0))
        elif at:
            raise DataError(f"{self.path}: missing, cannot append at row {at}")
        else:
            self.rows_per_shard = shard_rows(self.shape[1:], self.dtype)
            zarr.create_array(  # the metadata (zarr.json) only
                store=str(self.staged),
                shape=self.shape,
                dtype=self.dtype,
                chunks=(1, *self.shape[1:]),
                shards=(self.rows_per_shard, *self.shape[1:]),
                compressors=[
                    BloscCodec(cname=_CNAME, clevel=_CLEVEL, shuffle="bitshuffle"),
                    Crc32cCodec(),
                ],
                fill_value=0,
                zarr_format=3,
                config={"write_empty_chunks": True},  # every shard a file: a missing one is damage
            )
        self._blosc = numcodecs.Blosc(
            cname=_CNAME,
            clevel=_CLEVEL,
            shuffle=numcodecs.Blosc.BITSHUFFLE,
            typesize=self.dtype.itemsize,
        )
        self.threads = max(1, _WRITE_THREADS if threads is None else threads)
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self._pending: deque[Future[None]] = deque()
        self._buffer = np.zeros((min(self.rows_per_shard, self.shape[0]), *self.shape[1:]),
                                dtype=self.dtype)  # fmt: skip
        self._filled = 0
        self.n_written = 0

    def _open_for_append(self, at: int) -> None:
        """Continue the array at ``path`` at row ``at``: its shard size and the bytes of the
        rows before ``at`` in that row's shard."""
        array = PartArray(self.path)
        if array.dtype != self.dtype or array.shape[1:] != self.shape[1:]:
            raise DataError(
                f"{self.path}: stores {array.dtype} crops of shape {array.shape[1:]}, cannot "
                f"append {self.dtype} crops of shape {self.shape[1:]}"
            )
        if not array.direct:
            raise DataError(f"{self.path}: not in the layout phenoscout appends to")
        if not 0 <= at <= len(array):
            raise DataError(f"{self.path}: {len(array)} rows, cannot append at row {at}")
        self.rows_per_shard, self.start = array.rows_per_shard, at
        self.staged.mkdir(parents=True)
        kept = self.start % self.rows_per_shard
        if kept:  # the last shard's rows, kept byte for byte
            shard = self.start // self.rows_per_shard
            fd = os.open(array.shard_file(shard), os.O_RDONLY)
            try:
                index = array.shard_index(shard, fd)[:kept].copy()
                end = int((index[:, 0] + index[:, 1]).max())
                self._head = (os.pread(fd, end, 0), index)
            finally:
                os.close(fd)
            if len(self._head[0]) != end:
                raise _shard_error(array.shard_file(shard), "cut short")

    def append(self, rows: npt.NDArray) -> None:
        """Append ``rows`` (k, ...) after the rows appended so far (cast to the dtype)."""
        done = 0
        while done < len(rows):
            if self.n_written + self._filled + len(rows) - done > self.shape[0]:
                raise DataError(f"{self.path}: more than {self.shape[0]} rows appended")
            room = self.rows_per_shard - (self.start + self.n_written) % self.rows_per_shard
            cap = min(room, len(self._buffer))
            take = min(len(rows) - done, cap - self._filled)
            self._buffer[self._filled : self._filled + take] = rows[done : done + take]
            self._filled += take
            done += take
            if self._filled == cap:
                self._flush()

    def _write_shard(self, shard: int, rows: npt.NDArray, first: int) -> None:
        """Encode ``rows`` as shard file ``shard`` from its row ``first`` on (the rows before
        are the array's last rows, kept as they are; see the class text)."""
        index = np.full((self.rows_per_shard, 2), _EMPTY, dtype="<u8")
        head, head_index = self._head if first else (b"", index[:0])
        index[:first] = head_index
        pieces: list[bytes] = [head]
        offset = len(head)
        for i in range(len(rows)):
            chunk = self._blosc.encode(np.ascontiguousarray(rows[i]))
            pieces += [chunk, google_crc32c.value(chunk).to_bytes(4, "little")]
            index[first + i] = (offset, len(chunk) + 4)
            offset += len(chunk) + 4
        raw = index.tobytes()
        pieces += [raw, google_crc32c.value(raw).to_bytes(4, "little")]
        path = self.staged.joinpath("c", str(shard), *["0"] * (len(self.shape) - 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(pieces))

    def _flush(self) -> None:
        if not self._filled:
            return
        shard, first = divmod(self.start + self.n_written, self.rows_per_shard)
        rows = self._buffer[: self._filled]
        self.n_written += self._filled
        self._filled = 0
        if self._pool is None:
            self._write_shard(shard, rows, first)
            return
        self._pending.append(self._pool.submit(self._write_shard, shard, rows, first))
        self._buffer = np.empty_like(self._buffer)  # the task keeps the filled one
        while len(self._pending) >= self.threads:
            self._pending.popleft().result()

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def close(self) -> int:
        """Write the last shard and move the rows into place; returns the rows written.

        Raises:
            DataError: when fewer rows were appended than the shape holds.
        """
        try:
            self._flush()
            self._drain()
        except BaseException:
            self.discard()
            raise
        if self.n_written != self.shape[0]:
            self.discard()
            raise DataError(f"{self.path}: {self.n_written} of {self.shape[0]} rows written")
        if self.appends:
            self._move_appended()
            return self.n_written
        _remove(self.path)  # a leftover of an interrupted ingest (the manifest never named it)
        os.replace(self.staged, self.path)
        return self.n_written

    def _move_appended(self) -> None:
        """Move the staged shard files into the array, then give ``zarr.json`` the new length."""
        for staged in sorted(self.staged.joinpath("c").glob("*/**/*")):
            if staged.is_file():
                target = self.path / staged.relative_to(self.staged)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)
        meta_file = self.path / "zarr.json"
        meta = json.loads(meta_file.read_text())
        meta["shape"][0] = self.start + self.n_written
        tmp = meta_file.with_name(".zarr.json.tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, meta_file)
        _remove(self.staged)

    def discard(self) -> None:
        """Remove the half-written rows (after their shard tasks have ended)."""
        for task in self._pending:
            task.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending.clear()
        _remove(self.staged)


def write_part(path: Path, rows: npt.NDArray, chunk: int | None = None) -> int:
    """Write a whole array ``rows`` (n, ...) as a new sharded Zarr part at ``path``."""
    writer = ZarrPartWriter(path, rows.shape, rows.dtype)
    try:
        step = chunk or writer.rows_per_shard
        for start in range(0, len(rows), step):
            writer.append(rows[start : start + step])
        return writer.close()
    except BaseException:
        writer.discard()
        raise


_EMPTY = np.uint64(2**64 - 1)  # a shard index entry of a chunk never written


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


def _shard_error(path: Path, cause: object) -> ProjectDamagedError:
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
                    raise _shard_error(self.shard_file(shard), "missing")
                self._checked.add(shard)

    def _damaged(self, rows: npt.NDArray[np.int64], err: Exception) -> ProjectDamagedError:
        """The error naming the first shard among ``rows`` that fails to read alone."""
        for shard in np.unique(rows // self.rows_per_shard).tolist():
            try:
                self._array.oindex[rows[rows // self.rows_per_shard == shard]]
            except _ZARR_ERRORS as one:
                return _shard_error(self.shard_file(shard), one)
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
            raise _shard_error(path, f"{size} bytes, shorter than its index")
        if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise _shard_error(path, "shard index checksum mismatch")
        index = np.frombuffer(raw[:-4], dtype="<u8").reshape(-1, 2)
        written = index[:, 0] != _EMPTY
        if (index[written].sum(axis=1) > size - need).any():
            raise _shard_error(path, "shard index points past its data")
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
            raise _shard_error(self.shard_file(shard), err) from err

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
        if where[0] == _EMPTY:
            into[:] = 0  # never written: the fill value
            return
        try:
            chunk = os.pread(fd, nbytes, offset)
        except OSError as err:
            raise _shard_error(self.shard_file(shard), err) from err
        if len(chunk) != nbytes:
            raise _shard_error(self.shard_file(shard), f"row {row}: cut short")
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
        written = where[:, 0] != _EMPTY
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
            raise _shard_error(self.shard_file(shard), err) from err
        if len(data) != stop - start:
            raise _shard_error(self.shard_file(shard), f"rows {rows[0]}-{rows[-1]}: cut short")
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
                    raise _shard_error(path, cause) from err
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

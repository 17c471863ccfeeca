"""One Zarr array per plate, ``PROJECT/pixels/plates/<plate>.zarr``, appended by each ingest.

An ingest (a *part*) orders its cells by plate, stably: the cell table keeps the files' order
and each cell's ``row`` is its place in the plate order. Each plate's rows are then one run of
part rows, appended to that plate's array (:class:`~datasets.pixels.writer.ZarrPartWriter` with
``at``), so a plate imaged again or split over several ``add`` runs stays one array
that zarr and Dask open whole. The part's record in ``parts.json`` lists these runs as
``segments``: part rows ``[start, start + n)`` are rows ``[at, at + n)`` of ``file`` (and of
``mask``, the cells' object masks, for fields). Cells without a plate keep one array per
ingest, ``part-NNNN.zarr``, as every part did before (records without segments: one segment).

A plate's crops must keep one dtype and shape: crops of another bit depth under an existing
plate name are refused before anything is written.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from datasets.cells import DAMAGED_FIX, MANIFEST_FILE, PIXELS_DIR, read_parts
from datasets.errors import DataError, ProjectDamagedError
from datasets.pixels.arrays import PartArray, open_part
from datasets.pixels.writer import ZarrPartWriter

if TYPE_CHECKING:
    from datasets.parallel import Runner

logger = logging.getLogger(__name__)

PLATES_DIR = "plates"  # in PIXELS_DIR
_COPY_BYTES = 32 << 20  # rows copied into an array at a time, at most
_SPAN_SLACK = 4  # rows at most this far apart are read as one span (at most 4x the rows)


@dataclass(frozen=True)
class Segment:
    """Part rows ``[start, start + n)`` stored as rows ``[at, at + n)`` of ``file``."""

    start: int  # first part row
    n: int  # rows
    file: str  # the crops' array, relative to PROJECT/pixels
    at: int  # its first row there
    mask: str | None = None  # the object masks' array (field ingests), relative to pixels/
    mask_at: int = 0  # its first row there


def plate_file(plate: str, masks: bool = False) -> str:
    """Array of ``plate``'s crops (or object masks), relative to ``PROJECT/pixels``: a safe
    form of the name plus a short hash of it (so ``A/1`` and ``A_1`` stay apart)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", plate).strip("._")[:48] or "plate"
    digest = hashlib.sha1(plate.encode()).hexdigest()[:8]
    return f"{PLATES_DIR}/{slug}-{digest}{'.mask' if masks else ''}.zarr"


def part_array_file(part: int, masks: bool = False) -> str:
    """Array of the cells of part ``part`` without a plate, relative to ``PROJECT/pixels``."""
    return f"{'mask-' if masks else ''}part-{part:04d}.zarr"


def segments_of(record: dict[str, Any]) -> list[Segment]:
    """A part record's segments (one for a record written before plates had arrays)."""
    if "segments" not in record:
        part = int(record["part"])
        mask = part_array_file(part, masks=True)
        return [Segment(0, int(record["n_cells"]), str(record["file"]), 0, mask)]
    return [Segment(**s) for s in record["segments"]]


def segment_records(segments: Sequence[Segment]) -> list[dict[str, Any]]:
    """Segments as ``parts.json`` stores them."""
    return [asdict(s) for s in segments]


class PartView:
    """A part's rows, read-only, wherever its segments store them: the interface of
    :class:`~datasets.pixels.arrays.PartArray` (``len``, ``dtype``, ``shape``, ``rows``, ``take``).

    Args:
        pixels_dir: ``PROJECT/pixels``.
        segments: the part's :class:`Segment` list, by start.
        masks: read the object masks' arrays instead of the crops'.
        opened: arrays already open, by file (shared between the parts of one store).
    """

    def __init__(
        self,
        pixels_dir: Path,
        segments: Sequence[Segment],
        masks: bool = False,
        opened: dict[str, PartArray] | None = None,
    ) -> None:
        self.pixels_dir, self.segments = Path(pixels_dir), sorted(segments, key=lambda s: s.start)
        self._files = [s.mask if masks else s.file for s in self.segments]
        self._at = np.array([s.mask_at if masks else s.at for s in self.segments], np.int64)
        self._opened = {} if opened is None else opened
        self._starts = np.array([s.start for s in self.segments], dtype=np.int64)
        self._n = sum(s.n for s in self.segments)
        first = self._array(0)
        self.dtype, self.shape = first.dtype, (self._n, *first.shape[1:])

    def _array(self, k: int) -> PartArray:
        file = self._files[k]
        if file is None:
            raise ProjectDamagedError(self.pixels_dir / MANIFEST_FILE, "no mask array named",
                                      DAMAGED_FIX)  # fmt: skip
        if file not in self._opened:
            self._opened[file] = open_part(self.pixels_dir / file)
        return self._opened[file]

    def __len__(self) -> int:
        return self._n

    def _segment_of(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        seg = np.searchsorted(self._starts, rows, side="right") - 1
        ends = self._starts + np.array([s.n for s in self.segments], dtype=np.int64)
        bad = (rows < 0) | (seg < 0) | (rows >= ends[np.maximum(seg, 0)])
        if bad.any():
            raise ProjectDamagedError(
                self.pixels_dir / MANIFEST_FILE,
                f"no stored pixels for part row {int(rows[bad][0])}",
                DAMAGED_FIX,
            )
        return seg

    def take(self, rows: npt.NDArray[np.int64]) -> npt.NDArray:
        """Rows at ``rows`` (any order, repeats allowed), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(self.segments) == 1 and self.segments[0].start == self._at[0] == 0:
            return self._array(0).take(rows)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        seg = self._segment_of(rows)
        for k in np.unique(seg).tolist():
            sel = seg == k
            out[sel] = self._array(k).take(rows[sel] - self.segments[k].start + self._at[k])
        return out

    def rows(self, start: int, stop: int) -> npt.NDArray:
        """Rows ``start:stop``; whole runs of each array."""
        if stop <= start:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        first, last = self._segment_of(np.array([start, stop - 1], dtype=np.int64)).tolist()
        pieces = []
        for k in range(first, last + 1):
            s, shift = self.segments[k], int(self._at[k]) - self.segments[k].start
            lo, hi = max(start, s.start), min(stop, s.start + s.n)
            pieces.append(self._array(k).rows(lo + shift, hi + shift))
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def open_part_view(
    project_dir: Path, part: int, masks: bool = False, opened: dict[str, PartArray] | None = None
) -> PartView:
    """Part ``part``'s crops (or object masks) by part row, the cell table's ``row``.

    Raises:
        DataError: the project has no part ``part``.
    """
    record = {int(p["part"]): p for p in read_parts(project_dir)}.get(int(part))
    if record is None:
        raise DataError(f"{project_dir}: no part {part} in {PIXELS_DIR}/{MANIFEST_FILE}")
    pixels = Path(project_dir) / PIXELS_DIR
    return PartView(pixels, segments_of(record), masks=masks, opened=opened)


#: Reads sorted row indices of an ingest's written pixels: (k,) int64 -> (k, ...) rows.
RowReader = Callable[[npt.NDArray[np.int64]], npt.NDArray]


def read_in_spans(
    read_span: Callable[[int, int], npt.NDArray], rows: npt.NDArray[np.int64]
) -> npt.NDArray:
    """Sorted ``rows`` through ``read_span(start, stop)``, in few reads: rows less than
    :data:`_SPAN_SLACK` apart come from one span (so a span carries at most that many times
    the rows needed), rows further apart from spans of their own."""
    bounds = [0, *(np.flatnonzero(np.diff(rows) > _SPAN_SLACK) + 1).tolist(), len(rows)]
    pieces = []
    for i, j in zip(bounds[:-1], bounds[1:], strict=True):
        lo = int(rows[i])
        pieces.append(read_span(lo, int(rows[j - 1]) + 1)[rows[i:j] - lo])
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


@dataclass(frozen=True)
class FileRows:
    """A :data:`RowReader` over a flat file of (n, *row_shape) ``dtype`` rows starting at byte
    ``offset``: an ingest's raw file, or the data of its temporary ``.npy``."""

    path: Path
    row_shape: tuple[int, ...]
    dtype: np.dtype
    offset: int = 0  # bytes before the first row
    source: npt.NDArray[np.int64] | None = None  # the file row of each reader row; same if None
    channels: tuple[int, ...] | None = None  # channels (axis 1) kept; all if None

    def span(self, start: int, stop: int) -> npt.NDArray:
        """File rows ``start:stop`` (kept channels)."""
        items = int(np.prod(self.row_shape))
        at = self.offset + start * items * self.dtype.itemsize
        data = np.fromfile(self.path, dtype=self.dtype, count=(stop - start) * items, offset=at)
        if data.size != (stop - start) * items:
            raise DataError(f"{self.path}: truncated before row {stop}; run the ingest again")
        rows = data.reshape(stop - start, *self.row_shape)
        return rows if self.channels is None else rows[:, list(self.channels)]

    def __call__(self, rows: npt.NDArray[np.int64]) -> npt.NDArray:
        return read_in_spans(self.span, rows if self.source is None else self.source[rows])


@dataclass(frozen=True)
class PartPixels:
    """An ingest's written pixels, in the order of its cell table."""

    n: int  # cells
    row_shape: tuple[int, ...]  # (C, S, S) per crop
    dtype: np.dtype
    crops: RowReader
    masks: RowReader | None = None  # (S, S) uint8 object masks, for fields


def plate_groups(
    plates: pd.Series | None, n: int
) -> tuple[npt.NDArray[np.int64], list[str | None]]:
    """Each cell's group code, and the groups: plate names in order, then None (no plate:
    missing or blank)."""
    if plates is None:
        return np.zeros(n, dtype=np.int64), [None]
    codes, names = pd.factorize(plates.astype("string").str.strip().replace("", pd.NA),
                                sort=True)  # fmt: skip
    groups: list[str | None] = [str(x) for x in names]
    codes = np.asarray(codes, dtype=np.int64)
    if (codes < 0).any():
        codes[codes < 0] = len(groups)
        groups.append(None)
    return codes, groups


def _check_plates(pixels_dir: Path, groups: list[str | None], pixels: PartPixels) -> None:
    """Refuse crops whose dtype or shape differs from an existing array of their plate."""
    for plate in groups:
        path = pixels_dir / plate_file(plate) if plate is not None else None
        if path is None or not (path / "zarr.json").is_file():
            continue
        array = PartArray(path)
        if array.dtype != pixels.dtype or array.shape[1:] != pixels.row_shape:
            raise DataError(
                f"{path}: plate {plate!r} stores {array.dtype} crops of shape "
                f"{array.shape[1:]}, these are {pixels.dtype} {pixels.row_shape}; give them "
                "another plate name in metadata.csv, or ingest them into a new project"
            )


def _copy(path: Path, reader: RowReader, members: npt.NDArray[np.int64], shape: tuple[int, ...],
          dtype: np.dtype, at: int | None) -> None:  # fmt: skip
    """Write rows ``members`` of ``reader`` into the array ``path`` from its row ``at`` (a new
    array when None)."""
    writer = ZarrPartWriter(path, (len(members), *shape), dtype, at=at)
    try:
        row_bytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        step = max(1, min(writer.rows_per_shard, _COPY_BYTES // row_bytes))
        for lo in range(0, len(members), step):
            writer.append(reader(members[lo : lo + step]))
        writer.close()
    except BaseException:
        writer.discard()
        raise


def runs_of(members: npt.NDArray[np.int64]) -> tuple[tuple[int, int], ...]:
    """Sorted ``members`` as ``(start, stop)`` runs (a task's argument stays small)."""
    if not len(members):
        return ()
    breaks = np.flatnonzero(np.diff(members) != 1) + 1
    starts = members[np.r_[0, breaks]].tolist()
    stops = (members[np.r_[breaks - 1, len(members) - 1]] + 1).tolist()
    return tuple(zip(starts, stops, strict=True))


@dataclass(frozen=True)
class CopyTask:
    """One task: a group's cells written into its arrays (see :func:`copy_cells`)."""

    pixels_dir: str
    pixels: PartPixels
    runs: tuple[tuple[int, int], ...]  # the cells, as runs of rows of ``pixels``
    segment: Segment  # where they go; ``at``/``mask_at`` -1: into a new array


def copy_cells(task: CopyTask) -> int:
    """Task: copy a group's cells into its arrays, from the rows the driver chose, so a task
    run again after its worker died writes the same rows again. Returns the cells copied."""
    members = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in task.runs])
    pixels, seg, folder = task.pixels, task.segment, Path(task.pixels_dir)
    _copy(folder / seg.file, pixels.crops, members, pixels.row_shape, pixels.dtype,
          seg.at if seg.at >= 0 else None)  # fmt: skip
    if pixels.masks is not None and seg.mask is not None:
        _copy(folder / seg.mask, pixels.masks, members, pixels.row_shape[1:],
              np.dtype(np.uint8), seg.mask_at if seg.mask_at >= 0 else None)  # fmt: skip
    return len(members)


def _length(path: Path) -> int:
    """Rows of the array at ``path``; -1 when there is none (a new array)."""
    return len(PartArray(path)) if (path / "zarr.json").is_file() else -1


def plan_copy(
    pixels_dir: Path, pixels: PartPixels, members: npt.NDArray[np.int64], plate: str | None,
    part: int,
) -> CopyTask:  # fmt: skip
    """The task that appends cells ``members`` (sorted rows of ``pixels``) to ``plate``'s
    arrays, or writes them as part ``part``'s arrays when ``plate`` is None; its segment
    starts at part row 0 (``at`` -1 for a new array)."""
    named = plate is not None
    file = plate_file(plate) if plate is not None else part_array_file(part)
    at = _length(pixels_dir / file) if named else -1
    mask, mask_at = None, 0
    if pixels.masks is not None:
        mask = plate_file(plate, masks=True) if plate is not None else part_array_file(part, True)
        mask_at = _length(pixels_dir / mask) if named else -1
    segment = Segment(0, len(members), file, at, mask, mask_at)
    return CopyTask(str(pixels_dir), pixels, runs_of(members), segment)


def stored_segment(task: CopyTask, start: int) -> Segment:
    """Where ``task``'s cells are, once copied, as part rows from ``start``."""
    seg = task.segment
    return replace(seg, start=start, at=max(seg.at, 0), mask_at=max(seg.mask_at, 0))


def store_part(
    project_dir: Path,
    part: int,
    pixels: PartPixels,
    plates: pd.Series | None,
    runner: Runner | None = None,
) -> tuple[npt.NDArray[np.int64], list[Segment]]:
    """Store an ingest's pixels: each plate's cells appended to the plate's array, cells
    without a plate in ``part-NNNN.zarr``; one task per plate.

    Args:
        project_dir: the project folder.
        part: the ingest's part number.
        pixels: the written pixels, in cell-table order (readers workers can run).
        plates: (n,) each cell's plate (missing or empty: none), or None when there are none.
        runner: where the tasks run (:mod:`datasets.parallel`); in this process when None.

    Returns:
        ``(rows, segments)``: each cell's part row (the cell table's ``row``) and the part's
        segments for ``parts.json``.

    Raises:
        DataError: crops of another dtype or shape than their plate's existing array.
    """
    pixels_dir = Path(project_dir) / PIXELS_DIR
    (pixels_dir / PLATES_DIR).mkdir(parents=True, exist_ok=True)
    codes, groups = plate_groups(plates, pixels.n)
    _check_plates(pixels_dir, groups, pixels)
    order = np.argsort(codes, kind="stable")
    rows = np.empty(pixels.n, dtype=np.int64)
    rows[order] = np.arange(pixels.n, dtype=np.int64)
    tasks, starts, start = [], [], 0
    for code, plate in enumerate(groups):
        members = order[start : start + int((codes == code).sum())]
        if len(members):
            tasks.append(plan_copy(pixels_dir, pixels, members, plate, part))
            starts.append(start)
            start += len(members)
    weights = [t.segment.n for t in tasks]
    began = time.perf_counter()
    if runner is None or len(tasks) < 2:
        for task in tasks:
            copy_cells(task)
    else:
        runner.map(copy_cells, tasks, weights=weights)
    logger.info("pixels: %d cells stored in %d array(s) (%s) in %.1f s", pixels.n, len(tasks),
                ", ".join(t.segment.file for t in tasks[:4]) + (", ..." if len(tasks) > 4 else ""),
                time.perf_counter() - began)  # fmt: skip
    return rows, [stored_segment(t, s) for t, s in zip(tasks, starts, strict=True)]

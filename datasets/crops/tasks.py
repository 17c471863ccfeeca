"""The crop ingest's second pass as tasks: read files, fit their crops and write them into the
rows of the part file that the first pass planned for them.

Each task takes a run of consecutive files (:data:`CHUNK_CELLS` crops or so) and writes their
rows of the new part file (already created at full size by the driver) through one
memory-mapped window of its own. The rows are fixed before any task runs, so a task run again
(its worker died) writes the same bytes to the same rows: no cell is lost or doubled. What a
task learns (which channels hold data, which files failed or held NaN) comes back to the driver,
which merges it in file order, so the result does not depend on where or in which order tasks
ran (:mod:`datasets.parallel`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from datasets.crops.plan import read_source
from datasets.crops.readers import replace_non_finite
from datasets.crops.resize import fit_crops, rescale_images
from datasets.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["CHUNK_CELLS", "FileJob", "PixelChunk", "PixelResult", "chunk_files", "write_chunk"]

#: Crops per task, about: a few seconds of reading, little lost when a worker dies.
CHUNK_CELLS = 4096


@dataclass(frozen=True)
class FileJob:
    """One source file and the rows its crops go to."""

    path: str
    rel: str  # posix path relative to the crops root (for the report)
    shape: tuple[int, int, int, int]  # (n, C, H, W) its header promised
    first_row: int
    channel_files: tuple[str, ...] = ()  # one file per channel (``path`` is the first)


@dataclass(frozen=True)
class PixelChunk:
    """One task: consecutive files written into ``part_path`` (an ``(N, C, S, S)`` .npy)."""

    part_path: str
    dtype: str
    crop_size: int
    scale: float
    files: tuple[FileJob, ...]


@dataclass
class PixelResult:
    """What a task reports back."""

    nonzero: npt.NDArray[np.bool_]  # (C,) source channels with any nonzero pixel
    failed: list[tuple[str, str]] = field(default_factory=list)  # (rel, reason), file order
    non_finite: list[tuple[str, int]] = field(default_factory=list)  # (rel, pixels replaced)


def chunk_files(jobs: list[FileJob], cells: int = CHUNK_CELLS) -> list[list[FileJob]]:
    """Consecutive runs of ``jobs`` of about ``cells`` crops each (a file is never split)."""
    runs: list[list[FileJob]] = [[]]
    n = 0
    for job in jobs:
        if n >= cells:
            runs.append([])
            n = 0
        runs[-1].append(job)
        n += job.shape[0]
    return [r for r in runs if r]


def _read(job: FileJob, dtype: np.dtype, result: PixelResult) -> npt.NDArray:
    path = Path(job.path)
    pixels = read_source(path, job.rel, tuple(Path(f) for f in job.channel_files))
    if pixels.shape != job.shape:
        raise DataError(f"{path}: pixels have shape {pixels.shape}, header said {job.shape}")
    pixels, n_bad = replace_non_finite(pixels.astype(dtype, copy=False), path)
    if n_bad:
        result.non_finite.append((job.rel, n_bad))
        logger.warning("%s: %d NaN or infinite pixels replaced", job.rel, n_bad)
    return pixels


def write_chunk(chunk: PixelChunk) -> PixelResult:
    """Task: read, fit and write the crops of ``chunk.files``; a file that fails to read is
    reported (its rows stay zero and are dropped by the driver), the others are written."""
    dtype = np.dtype(chunk.dtype)
    n_channels = chunk.files[0].shape[1]
    result = PixelResult(np.zeros(n_channels, dtype=bool))
    first = chunk.files[0].first_row
    stop = chunk.files[-1].first_row + chunk.files[-1].shape[0]
    header = np.load(chunk.part_path, mmap_mode="r")
    offset, shape = header.offset, header.shape
    del header
    row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
    window = np.memmap(chunk.part_path, dtype=dtype, mode="r+", offset=offset + first * row_bytes,
                       shape=(stop - first, *shape[1:]))  # fmt: skip
    try:
        for job in chunk.files:
            try:
                pixels = _read(job, dtype, result)
            except DataError as err:
                result.failed.append((job.rel, str(err).removeprefix(f"{job.path}: ")))
                continue
            result.nonzero |= pixels.any(axis=(0, 2, 3))
            crops = fit_crops(rescale_images(pixels, chunk.scale), chunk.crop_size)
            at = job.first_row - first
            window[at : at + len(crops)] = crops
        window.flush()
    finally:
        del window
    return result

"""Embedding a whole screen as Dask tasks: one task per run of cells (:mod:`datasets.parallel`).

Each task embeds its rows of the cell table with :func:`models.backbone.embed.embed_cells` into a
folder of its own, written under a temporary name and renamed into place, so a task run again
after its worker died rewrites the same files; the driver then copies the chunks, in order,
into the version's ``embeddings.npy`` (and ``predictions.npy`` for a classifier) and writes
``cell_ids.npy``, as :func:`~models.backbone.embed.embed_cells` does in one process. A worker
with a GPU (dask-cuda) uses it; the others use their CPU, one thread each.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from datasets.parallel import Runner
from datasets.pixels.store import PixelStore
from models.backbone.embed import EmbedConfig, EmbedResult, embed_cells
from models.backbone.unet import Classifier, Encoder, UNet

__all__ = ["CHUNK_CELLS", "EmbedJob", "embed_chunk", "embed_cells_distributed"]

#: Cells per embedding task.
CHUNK_CELLS = 16384
_STORES: dict[str, PixelStore] = {}  # per worker process: the project's pixel store


class _Rows:
    """The cells ``ids`` of a pixel store, as :func:`embed_cells` reads a store."""

    def __init__(self, store: PixelStore, ids: list[str]) -> None:
        self.store, self.cell_ids, self.n_cells = store, ids, len(ids)
        self.n_channels, self.crop_size = store.n_channels, store.crop_size

    def read(self, ids: list[str]) -> npt.NDArray[np.float32]:
        return self.store.read(ids)


@dataclass(frozen=True)
class EmbedJob:
    """One embedding task: the model and the cells of one chunk."""

    model: Any  # UNet | Classifier | Encoder (sent to the worker with the task)
    project_dir: str
    chunks_dir: str
    index: int
    cell_ids: list[str]
    config: EmbedConfig  # batch size, bfloat16 and views, as for embed_cells


def embed_chunk(job: EmbedJob) -> int:
    """Task: embed ``job.cell_ids`` into ``chunks_dir/chunk-NNNNN/`` (renamed into place)."""
    store = _STORES.get(job.project_dir)
    if store is None:
        _STORES.clear()
        store = _STORES[job.project_dir] = PixelStore(Path(job.project_dir))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    out = Path(job.chunks_dir) / f"chunk-{job.index:05d}"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        rows = _Rows(store, job.cell_ids)  # reads like a PixelStore of these cells only
        embed_cells(job.model, rows, tmp, device, job.config)  # type: ignore[arg-type]
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(job.cell_ids)


def embed_cells_distributed(
    model: UNet | Classifier | Encoder,
    pixels: PixelStore,
    out_dir: Path,
    runner: Runner,
    config: EmbedConfig | None = None,
    progress: Any = None,
) -> EmbedResult:
    """:func:`models.backbone.embed.embed_cells` with the cells cut into tasks run by ``runner``.

    Writes the same files (``embeddings.npy``, ``cell_ids.npy``, ``predictions.npy`` for a
    classifier) in cell-table order; ``config`` (batch size, bfloat16 on a CPU) applies in
    every task, :class:`~models.backbone.embed.EmbedConfig` defaults when None.
    """
    from models.backbone.training import all_cell_ids

    config = config or EmbedConfig()
    start = time.perf_counter()
    out_dir = Path(out_dir)
    ids = all_cell_ids(pixels)
    chunks_dir = out_dir / ".chunks"
    shutil.rmtree(chunks_dir, ignore_errors=True)
    chunks_dir.mkdir(parents=True)
    model = model.to("cpu").eval()
    jobs = [EmbedJob(model, str(pixels.project_dir), str(chunks_dir), k,
                     ids[s : s + CHUNK_CELLS], config)
            for k, s in enumerate(range(0, len(ids), CHUNK_CELLS))]  # fmt: skip
    try:
        runner.map(embed_chunk, jobs, weights=[len(j.cell_ids) for j in jobs], progress=progress)
        dim = _assemble(chunks_dir, out_dir, len(jobs), len(ids))
    finally:
        shutil.rmtree(chunks_dir, ignore_errors=True)
    np.save(out_dir / "cell_ids.npy", np.asarray(ids, dtype=str))
    return EmbedResult(len(ids), dim, time.perf_counter() - start, config.batch_size)


def _assemble(chunks_dir: Path, out_dir: Path, n_chunks: int, n: int) -> int:
    """Copy the chunks' arrays, in order, into the version's files; the embedding width."""
    dim = 0
    for name in ("embeddings.npy", "predictions.npy"):
        first = chunks_dir / "chunk-00000" / name
        if not first.exists():
            continue
        width = np.load(first, mmap_mode="r").shape[1]
        dim = dim or width
        out = np.lib.format.open_memmap(out_dir / name, "w+", np.float32, (n, width))
        row = 0
        for k in range(n_chunks):
            part = np.load(chunks_dir / f"chunk-{k:05d}" / name)
            out[row : row + len(part)] = part
            row += len(part)
        out.flush()
        del out
    return dim

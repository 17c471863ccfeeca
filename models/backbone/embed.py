"""Embeddings (and class probabilities) for every cell, streamed in batches to .npy files.

Raw crops are read in threads ahead of the network (into pinned memory on CUDA), scaled on the
device, and run under bfloat16 autocast on CUDA; outputs stay on the GPU until the end (no host
sync per batch), on a CPU they are written batch by batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from datasets.pixels.store import PixelStore
from models.backbone.training import Progress, all_cell_ids, iter_device_batches
from models.backbone.unet import Classifier, Encoder, UNet
from models.device import with_oom_retry
from models.errors import ModelError

logger = logging.getLogger(__name__)
CUDA_BATCH = 4096  # cells per read and forward pass on CUDA, at least
CUDA_READ_THREADS = 8  # pixel-store reads in flight on CUDA


class EmbedResult(NamedTuple):
    """What :func:`embed_cells` wrote."""

    n_cells: int
    dim: int
    seconds: float
    batch_size: int  # the batch size that fit (smaller after an out-of-memory error)


@dataclass(frozen=True)
class EmbedConfig:
    """How :func:`embed_cells` batches and casts (the trainer's ``TrainerConfig.embed``)."""

    #: cells per forward pass (halved after an out-of-memory error); on CUDA at least CUDA_BATCH
    batch_size: int = 1024
    bf16: bool = False  # bfloat16 autocast on a CPU too (always on CUDA)
    #: the embedding averaged over this many of the crop's 8 rotations and flips (1, 2, 4 or 8;
    #: 8: the same embedding whichever way a cell lies). Costs as many forward passes. Jurkat,
    #: CPU schedule, 5 folds: the fine-tuned embedding alone 0.853 -> 0.882 balanced accuracy
    #: with 8, beside morphology 0.872 -> 0.879 (README, "The deep backbone").
    views: int = 1

    def __post_init__(self) -> None:
        if self.views not in VIEWS:
            raise ModelError(f"EmbedConfig.views={self.views}; use one of {VIEWS}")


#: Allowed numbers of views: the identity, then a flip, the quarter turns, their flips.
VIEWS = (1, 2, 4, 8)


def dihedral(x: torch.Tensor, i: int) -> torch.Tensor:
    """View ``i`` (0-7) of crops (n, C, H, W) under the square's 8 symmetries: ``i % 2`` a
    left-right flip, ``i // 2`` quarter turns. View 0 is ``x``."""
    out = torch.rot90(x, i // 2, dims=(2, 3)) if i // 2 else x
    return torch.flip(out, dims=(3,)) if i % 2 else out


def _order(views: int) -> list[int]:
    """Which views to average: the identity and a flip first, then the quarter turns."""
    return [0, 1, 2, 3, 4, 5, 6, 7][:views] if views != 4 else [0, 2, 4, 6]


def _autocast(device: torch.device, bf16: bool):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if bf16 and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def _forward(model: UNet | Classifier | Encoder, x: torch.Tensor, with_probs: bool, views: int = 1):
    encoder = model if isinstance(model, Encoder) else model.encoder
    emb = encoder.embed(x)
    if views > 1:
        emb = emb.float()
        for i in _order(views)[1:]:
            emb = emb + encoder.embed(dihedral(x, i)).float()
        emb = emb / views
    probs = torch.softmax(model.head(emb).float(), dim=1) if with_probs else None
    return emb.float(), probs


def embed_cells(
    model: UNet | Classifier | Encoder,
    pixels: PixelStore,
    out_dir: Path,
    device: torch.device,
    config: EmbedConfig | None = None,
    progress: Progress | None = None,
) -> EmbedResult:
    """Write ``embeddings.npy`` (n, d) float32 and ``cell_ids.npy`` (n,) str, in cell-table order,
    plus ``predictions.npy`` (n, k) float32 softmax when ``model`` is a Classifier.

    Batches stream from the pixel store to memory-mapped output; on a CPU only one batch is in
    memory, on CUDA the outputs (n x d floats) are kept on the GPU until the end.

    Args:
        model: network whose encoder gives the embedding.
        pixels: the project's crops.
        out_dir: existing folder to write into.
        device: where to run (bfloat16 autocast on CUDA; on CPU too when ``config.bf16``).
        config: batch size and bfloat16 on a CPU; :class:`EmbedConfig` defaults when None.
        progress: ``progress(done_cells, n_cells)``.
    """
    config = config or EmbedConfig()
    batch_size, bf16 = config.batch_size, config.bf16
    out_dir = Path(out_dir)
    encoder = model if isinstance(model, Encoder) else model.encoder
    with_probs = isinstance(model, Classifier)
    n, dim = pixels.n_cells, encoder.config.embedding_dim
    emb_out = np.lib.format.open_memmap(out_dir / "embeddings.npy", "w+", np.float32, (n, dim))
    prob_out = None
    if with_probs:
        k = model.head.out_features
        prob_out = np.lib.format.open_memmap(out_dir / "predictions.npy", "w+", np.float32, (n, k))
    model.to(device).eval()
    if device.type != "mps":
        model.to(memory_format=torch.channels_last)
    ids = all_cell_ids(pixels)
    start, done, size = time.perf_counter(), 0, batch_size
    pending: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []  # (row, emb, probs)

    def flush(emb_out: np.ndarray, prob_out: np.ndarray | None) -> None:
        for row, emb, probs in pending:
            emb_out[row : row + len(emb)] = emb.cpu().numpy()
            if prob_out is not None and probs is not None:
                prob_out[row : row + len(emb)] = probs.cpu().numpy()
        pending.clear()

    if device.type == "cuda":  # a small network: big batches keep the GPU busy
        size = max(batch_size, CUDA_BATCH)
    workers = CUDA_READ_THREADS if device.type == "cuda" else 2
    for x in iter_device_batches(pixels, ids, device, size, workers=workers):

        def run(sub: int, x=x):
            parts = []
            for s in range(0, len(x), sub):
                part = (
                    x[s : s + sub].contiguous(memory_format=torch.channels_last)
                    if device.type != "mps"
                    else x[s : s + sub]
                )
                with torch.inference_mode(), _autocast(device, bf16):
                    parts.append(_forward(model, part, with_probs, config.views))
            return parts

        parts, fit = with_oom_retry(run, min(size, len(x)), what="embedding batch")
        size = fit if fit < min(size, len(x)) else size
        emb = torch.cat([p[0] for p in parts])
        probs = torch.cat([p[1] for p in parts]) if with_probs else None
        pending.append((done, emb, probs))
        done += len(emb)
        if device.type != "cuda":
            flush(emb_out, prob_out)
        if progress is not None:
            progress(done, n)
    flush(emb_out, prob_out)
    emb_out.flush()
    del emb_out
    if prob_out is not None:
        prob_out.flush()
        del prob_out
    np.save(out_dir / "cell_ids.npy", np.asarray(ids, dtype=str))
    seconds = time.perf_counter() - start
    logger.info("embedded %d cells in %.1f s (%.0f cells/s)", n, seconds, n / max(seconds, 1e-9))
    return EmbedResult(n, dim, seconds, size)


def embed_ids(
    model: UNet | Classifier | Encoder,
    pixels: PixelStore,
    ids: Sequence[str],
    device: torch.device,
    config: EmbedConfig | None = None,
) -> npt.NDArray[np.float32]:
    """(len(ids), d) float32 embeddings of the cells ``ids``, in that order, in memory: for a
    few cells of a large project, where :func:`embed_cells` would embed every cell."""
    config = config or EmbedConfig()
    encoder = model if isinstance(model, Encoder) else model.encoder
    encoder.to(device).eval()
    out = [np.zeros((0, encoder.config.embedding_dim), np.float32)]
    for x in iter_device_batches(pixels, list(ids), device, config.batch_size, workers=2):
        with torch.inference_mode(), _autocast(device, config.bf16):
            out.append(_forward(encoder, x, False, config.views)[0].cpu().numpy())
    return np.concatenate(out)

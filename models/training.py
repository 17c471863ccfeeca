"""Pieces shared by pretraining and fine-tuning: batches with prefetch, augmentation, one step."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from datasets.progress import Progress as Progress  # the one definition, re-exported
from models.device import with_oom_retry

Reader = Callable[[Sequence[str]], npt.NDArray[np.float32]]


def all_cell_ids(pixels: Any) -> list[str]:
    """Every cell id of a pixel store in cell-table order (``cell_ids`` attribute if it has one)."""
    ids = getattr(pixels, "cell_ids", None)
    if ids is not None:
        return [str(c) for c in ids]
    from datasets.cells import read_cells

    return read_cells(pixels.project_dir, ["cell_id"])["cell_id"].astype(str).tolist()


def prefetched(reader: Reader, batches: Sequence[Sequence[str]]) -> Iterator[npt.NDArray]:
    """Crops of each id list in ``batches``, the next one read in a thread while this one runs.

    Args:
        reader: ``cell_ids -> (k, C, S, S) float32`` (e.g. ``PixelStore.read``).
        batches: lists of cell ids.
    """
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(reader, list(batches[0]))
        for i in range(len(batches)):
            crops = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(reader, list(batches[i + 1]))
            yield crops


def augment(
    crops: npt.NDArray[np.float32], rng: np.random.Generator, jitter: float
) -> torch.Tensor:
    """Random flip + 90-degree rotation (one of 8 per crop) and small intensity jitter.

    Args:
        crops: (n, C, S, S) float32 in [0, 1].
        rng: draws the transform and jitter of every crop.
        jitter: intensity scale drawn from [1 - jitter, 1 + jitter] and offset from
            [-jitter / 2, jitter / 2], per crop and channel.

    Returns:
        (n, C, S, S) float32 tensor, clipped to [0, 1].
    """
    x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))
    kinds = rng.integers(0, 8, size=len(x))
    out = torch.empty_like(x)
    for k in np.unique(kinds).tolist():
        sel = torch.from_numpy(np.flatnonzero(kinds == k))
        part = torch.rot90(x[sel], k % 4, dims=(2, 3))
        out[sel] = torch.flip(part, dims=(3,)) if k >= 4 else part
    if jitter > 0:
        shape = (len(x), x.shape[1], 1, 1)
        scale = rng.uniform(1 - jitter, 1 + jitter, size=shape).astype(np.float32)
        shift = rng.uniform(-jitter / 2, jitter / 2, size=shape).astype(np.float32)
        out = out * torch.from_numpy(scale) + torch.from_numpy(shift)
    return out.clamp_(0.0, 1.0)


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """Mixed precision on CUDA (float16) when ``enabled``; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class Stepper:
    """One optimiser step on a batch, split into micro-batches after an out-of-memory error.

    Args:
        model: the network being trained.
        optimizer: its optimiser.
        device: where the model lives.
        amp: float16 autocast and a grad scaler on CUDA.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, amp: bool
    ) -> None:
        self.model, self.optimizer, self.device = model, optimizer, device
        self.amp = amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.micro: int | None = None  # micro-batch size once an OOM happened

    def step(self, loss_fn: Callable[[slice], torch.Tensor], n: int) -> float:
        """Run ``loss_fn(rows)`` (mean loss over those rows of the batch) and update the model.

        Returns:
            The batch's mean loss.
        """

        def run(size: int) -> float:
            self.optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for start in range(0, n, size):
                rows = slice(start, min(start + size, n))
                with autocast(self.device, self.amp):
                    loss = loss_fn(rows) * ((rows.stop - rows.start) / n)
                self.scaler.scale(loss).backward()
                total += float(loss.detach())
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return total

        total, size = with_oom_retry(run, self.micro or n, what="training batch")
        if size < n:
            self.micro = size
        return total

"""Pieces shared by pretraining, fine-tuning and embedding: crops on the device, augmentation
on the device, one optimiser step without a host sync.

The same code runs on a CPU and on a GPU. :class:`DeviceCrops` keeps the crops of the cells
being trained on in one float16 tensor on the training device when they fit its budget
(:func:`resident_budget`), so a step is an index gather, never a file read; otherwise each
batch is read from the pixel store (in a thread, into pinned memory on CUDA). Raw crops are
scaled to [0, 1] on the device with the store's per-cell ranges (the same arithmetic as
``PixelStore.read``). :func:`augment` draws flips, transposes (together the 8 rotations and
reflections) and small integer shifts per crop, in batched torch ops: it never changes
absolute intensity or size, which on screens like Jurkat (DNA content) are the phenotype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from datasets.progress import Progress as Progress  # the one definition, re-exported
from models.device import with_oom_retry

_T = TypeVar("_T")  # what a reader returns for one batch
Reader = Callable[[Sequence[str]], npt.NDArray[np.float32]]
CPU_RESIDENT_BYTES = 512 * 2**20  # crops kept in RAM for CPU training (20,000 x 2 x 64^2: 328 MB)
GPU_RESIDENT_SHARE = 0.5  # share of the GPU's free memory the crops may take
LOAD_CHUNK = 4096  # cells per read while loading crops onto the device
READ_THREADS = 4  # parallel reads from the pixel store (numpy releases the GIL)


def all_cell_ids(pixels: Any) -> list[str]:
    """Every cell id of a pixel store in cell-table order (``cell_ids`` attribute if it has one)."""
    ids = getattr(pixels, "cell_ids", None)
    if ids is not None:
        return [str(c) for c in ids]
    from datasets.cells import read_cells

    return read_cells(pixels.project_dir, ["cell_id"])["cell_id"].astype(str).tolist()


def prefetched(
    reader: Callable[[list[str]], _T], batches: Sequence[Sequence[str]], workers: int = 1
) -> Iterator[_T]:
    """Crops of each id list in ``batches``, the next ``workers`` read in threads meanwhile.

    Args:
        reader: ``cell_ids -> (k, C, S, S)`` array (e.g. ``PixelStore.read``).
        batches: lists of cell ids.
        workers: reads in flight.
    """
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = [pool.submit(reader, list(b)) for b in batches[:workers]]
        for i in range(len(batches)):
            crops = pending.pop(0).result()
            if i + workers < len(batches):
                pending.append(pool.submit(reader, list(batches[i + workers])))
            yield crops


def _store_ranges(pixels: Any) -> Callable | None:
    """``ids -> (raw, low, span)``: raw crops and per-cell, per-channel scaling of a
    ``PixelStore`` (so scaling can run on the device), or None for other readers."""
    needed = ("read_raw", "_positions", "_ranges", "_range_idx")
    if not all(hasattr(pixels, name) for name in needed):
        return None
    sets = np.stack([np.asarray(r, np.float32) for r in pixels._ranges])  # (k, C, 2)

    def read(ids: Sequence[str]) -> tuple[npt.NDArray, npt.NDArray, npt.NDArray]:
        pos = pixels._positions(ids)
        r = sets[pixels._range_idx[pos]]
        raw = pixels.read_raw(ids)
        return raw, r[:, :, 0], r[:, :, 1] - r[:, :, 0]

    return read


def _torch_raw(raw: npt.NDArray) -> torch.Tensor:
    """A torch view of raw crops (uint16 as its int16 bits, wide ints as float32)."""
    if raw.dtype == np.uint16:  # reinterpreted, widened on the device (scale_on_device)
        return torch.from_numpy(np.ascontiguousarray(raw).view(np.int16))
    if raw.dtype.kind in "ui" and raw.dtype.itemsize > 2 or raw.dtype == np.float64:
        return torch.from_numpy(raw.astype(np.float32))
    return torch.from_numpy(np.ascontiguousarray(raw))


def scale_on_device(
    raw: torch.Tensor, low: torch.Tensor, span: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """``PixelStore.read``'s scaling: ``(raw - low) / span`` clipped to [0, 1], NaN -> 0."""
    if raw.dtype == torch.int16:  # uint16 bits (see _torch_raw)
        raw = raw.to(torch.int32) & 0xFFFF
    x = (raw.float() - low[:, :, None, None]) / span[:, :, None, None]
    return torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0).to(dtype)


def read_to_device(
    pixels: Any, ids: Sequence[str], device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(k, C, S, S) crops of ``ids`` in [0, 1] on ``device``: raw pixels are copied and scaled
    there when ``pixels`` is a PixelStore, else ``pixels.read`` scales them on the host."""
    ranged = _store_ranges(pixels)
    pin = device.type == "cuda"
    if ranged is None:
        x = torch.from_numpy(pixels.read(list(ids)))
        x = x.pin_memory() if pin else x
        return x.to(device, dtype, non_blocking=pin)
    raw, low, span = ranged(list(ids))
    t = _torch_raw(raw)
    t = t.pin_memory() if pin else t
    return scale_on_device(
        t.to(device, non_blocking=pin),
        torch.from_numpy(low).to(device),
        torch.from_numpy(span).to(device),
        dtype,
    )


def iter_device_batches(
    pixels: Any,
    ids: Sequence[str],
    device: torch.device,
    batch: int,
    dtype: torch.dtype = torch.float32,
    workers: int = READ_THREADS,
) -> Iterator[torch.Tensor]:
    """Crops of ``ids`` in order, ``batch`` at a time, on ``device``; reads run ahead in
    ``workers`` threads (the host part: file read, pinned copy)."""
    ranged = _store_ranges(pixels)
    groups = [list(ids[i : i + batch]) for i in range(0, len(ids), batch)]
    pin = device.type == "cuda"

    def host(group: list[str]):
        if ranged is None:
            x = torch.from_numpy(pixels.read(group))
            return (x.pin_memory() if pin else x), None, None
        raw, low, span = ranged(group)
        t = _torch_raw(raw)
        return (t.pin_memory() if pin else t), torch.from_numpy(low), torch.from_numpy(span)

    for x, low, span in prefetched(host, groups, workers):
        x = x.to(device, non_blocking=pin)
        if low is None:
            yield x.to(dtype)
        else:
            yield scale_on_device(x, low.to(device), span.to(device), dtype)


def resident_budget(device: torch.device) -> int:
    """Bytes of crops :class:`DeviceCrops` may keep on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(GPU_RESIDENT_SHARE * free)
    return CPU_RESIDENT_BYTES


class DeviceCrops:
    """Crops of ``cell_ids`` served by position: resident on ``device`` (float16) when they fit
    ``budget`` bytes, else read from the pixel store per batch.

    Args:
        pixels: a PixelStore (or anything with ``read(ids)``, ``n_channels``, ``crop_size``).
        cell_ids: the cells; :meth:`batch` takes positions into this list.
        device: where batches are returned.
        budget: bytes the resident copy may take (default :func:`resident_budget`).
    """

    def __init__(
        self,
        pixels: Any,
        cell_ids: Sequence[str],
        device: torch.device,
        budget: int | None = None,
    ) -> None:
        self.pixels, self.ids, self.device = pixels, np.asarray(cell_ids), device
        c, s = int(pixels.n_channels), int(pixels.crop_size)
        need = len(self.ids) * c * s * s * 2
        self.resident = need <= (resident_budget(device) if budget is None else budget)
        self.data: torch.Tensor | None = None
        if self.resident:
            self.data = torch.empty((len(self.ids), c, s, s), dtype=torch.float16, device=device)
            done = 0
            for x in iter_device_batches(pixels, list(self.ids), device, LOAD_CHUNK, torch.float16):
                self.data[done : done + len(x)] = x
                done += len(x)

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, rows: torch.Tensor | npt.NDArray) -> torch.Tensor:
        """(k, C, S, S) float32 crops at positions ``rows`` on the device."""
        if self.data is not None:
            rows = torch.as_tensor(rows, device=self.device)
            return self.data.index_select(0, rows).float()
        rows = np.asarray(torch.as_tensor(rows).cpu())
        return read_to_device(self.pixels, self.ids[rows].tolist(), self.device)

    def batches(self, plan: npt.NDArray[np.int64]) -> Iterator[torch.Tensor]:
        """Batches for each row of ``plan`` (steps, batch): gathers on the device when resident
        (the plan is copied once), else reads run one batch ahead in a thread."""
        if self.data is not None:
            on_device = torch.from_numpy(np.ascontiguousarray(plan)).to(self.device)
            for rows in on_device:
                yield self.data.index_select(0, rows).float()
            return
        groups = [self.ids[rows].tolist() for rows in plan]
        yield from (
            x.float()
            for x in iter_device_batches(
                self.pixels, [i for g in groups for i in g], self.device, plan.shape[1], workers=2
            )
        )


def augment(x: torch.Tensor, generator: torch.Generator, shift: int = 0) -> torch.Tensor:
    """Random flips and transposes (one of the 8 rotations/reflections per crop) and integer
    shifts of up to ``shift`` pixels (border pixels repeated), all on ``x``'s device.

    Intensities are only moved, never rescaled: every output pixel is an input pixel of the
    same crop and channel.

    Args:
        x: (n, C, S, S) crops, square.
        generator: a torch generator on ``x``'s device; draws every choice.
        shift: largest shift, pixels (0: none).
    """
    n, c, s, _ = x.shape
    flips = torch.rand((n, 3, 1, 1, 1), generator=generator, device=x.device) < 0.5
    x = torch.where(flips[:, 0], x.flip(3), x)
    x = torch.where(flips[:, 1], x.flip(2), x)
    x = torch.where(flips[:, 2], x.transpose(2, 3), x)
    if shift > 0:
        d = torch.randint(-shift, shift + 1, (n, 2), generator=generator, device=x.device)
        ar = torch.arange(s, device=x.device)
        rows = (ar[None, :] + d[:, :1]).clamp_(0, s - 1)
        cols = (ar[None, :] + d[:, 1:]).clamp_(0, s - 1)
        x = x.gather(2, rows[:, None, :, None].expand(n, c, s, s))
        x = x.gather(3, cols[:, None, None, :].expand(n, c, s, s))
    return x.contiguous()


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def use_channels_last(flag: bool | None, device: torch.device) -> bool:
    """``flag``, or with None: NHWC on CUDA (faster convolutions), NCHW elsewhere (NHWC
    training was 4x slower on the 2-core CPU)."""
    return device.type == "cuda" if flag is None else bool(flag)


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """bfloat16 autocast on CUDA when ``enabled`` (no loss scaling needed); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
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
        amp: bfloat16 autocast on CUDA.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, amp: bool
    ) -> None:
        self.model, self.optimizer, self.device = model, optimizer, device
        self.amp = amp and device.type == "cuda"
        self.micro: int | None = None  # micro-batch size once an OOM happened

    def step_tensor(self, loss_fn: Callable[[slice], torch.Tensor], n: int) -> torch.Tensor:
        """Run ``loss_fn(rows)`` (mean loss over those rows of the batch), update the model and
        return the batch's mean loss as a 0-d tensor on the device: no host sync."""

        def run(size: int) -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            total = None
            for start in range(0, n, size):
                rows = slice(start, min(start + size, n))
                with autocast(self.device, self.amp):
                    loss = loss_fn(rows) * ((rows.stop - rows.start) / n)
                loss.backward()
                total = loss.detach() if total is None else total + loss.detach()
            self.optimizer.step()
            return total

        total, size = with_oom_retry(run, self.micro or n, what="training batch")
        if size < n:
            self.micro = size
        return total

    def step(self, loss_fn: Callable[[slice], torch.Tensor], n: int) -> float:
        """:meth:`step_tensor` returning a float (one host sync)."""
        return float(self.step_tensor(loss_fn, n))

"""Self-supervised pretraining of the U-Net on a project's unlabeled crops.

Each step takes a batch of augmented crops (flips, 90-degree rotations, small shifts: never an
intensity or size change, see ``models.backbone.training``), hides random square patches and adds
Gaussian noise, and trains the U-Net to reconstruct the clean crop: masked-patch inpainting plus
denoising. The loss weighs hidden pixels fully and visible pixels by ``visible_weight``, so the
skip connections alone cannot solve the task. Crops stay on the training device when they fit
(``DeviceCrops``); augmentation, masks and noise are drawn there, and the loss is read back only
at logged steps.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from datasets.pixels.store import PixelStore
from models.backbone.lr_schedule import cosine_decay, mark_stopped, out_of_time
from models.backbone.training import (
    DeviceCrops,
    Progress,
    Stepper,
    all_cell_ids,
    augment,
    device_generator,
    use_channels_last,
)
from models.backbone.unet import UNet, check_input_size
from models.device import set_deterministic
from models.errors import ModelError

logger = logging.getLogger(__name__)
LOG_EVERY = 10  # steps between history entries


@dataclass(frozen=True)
class TrainConfig:
    """Schedule of self-supervised pretraining; saved with the checkpoint."""

    epochs: int = 3  # passes over the cells (stops earlier at max_steps)
    max_steps: int = 600  # cap on optimiser steps, so big screens stay within minutes
    max_seconds: float = 0.0  # wall-clock budget, checked after every step (0: none)
    batch_size: int = 64  # crops per step
    lr: float = 2e-3  # AdamW peak learning rate (cosine decay to 5 %)
    weight_decay: float = 1e-4  # AdamW weight decay
    patch: int = 8  # side of a hidden square patch, pixels
    mask_ratio: float = 0.4  # fraction of patches hidden per crop
    noise_std: float = 0.05  # Gaussian noise added to the input
    shift: int = 2  # largest random shift of a crop, pixels (see models.backbone.training.augment)
    visible_weight: float = 0.2  # loss weight of visible pixels relative to hidden ones
    channels_last: bool | None = None  # NHWC layout; None: on CUDA only (4x slower on CPU)
    amp: bool = True  # bfloat16 autocast on CUDA
    deterministic: bool = True  # deterministic kernels; False: cudnn.benchmark, faster on GPU
    seed: int = 0  # data order, augmentation and masks

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.max_steps < 1 or self.batch_size < 1:
            raise ModelError(
                f"TrainConfig epochs={self.epochs}, max_steps={self.max_steps}, "
                f"batch_size={self.batch_size}: each must be at least 1"
            )
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ModelError(f"TrainConfig.mask_ratio={self.mask_ratio}; allowed [0, 1)")
        if self.max_seconds < 0:
            raise ModelError(
                f"TrainConfig.max_seconds={self.max_seconds}; use 0 (no budget) or more"
            )


def patch_mask(n: int, size: int, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, size, size) float32 on the generator's device, 1 where a pixel is hidden."""
    cells = math.ceil(size / config.patch)
    grid = torch.rand((n, 1, cells, cells), generator=generator, device=generator.device)
    full = (grid < config.mask_ratio).float()
    full = full.repeat_interleave(config.patch, 2).repeat_interleave(config.patch, 3)
    return full[:, :, :size, :size].contiguous()


def corrupt(
    clean: torch.Tensor, config: TrainConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide patches and add noise to ``clean`` (n, C, S, S); returns ``(input, mask)``."""
    mask = patch_mask(len(clean), clean.shape[-1], config, generator)
    noise = torch.randn(clean.shape, generator=generator, device=clean.device)
    noisy = clean + config.noise_std * noise
    return noisy * (1.0 - mask), mask


def reconstruction_loss(
    pred: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, visible_weight: float
) -> torch.Tensor:
    """Mean squared error with hidden pixels weighted 1 and visible ones ``visible_weight``."""
    weight = mask + visible_weight * (1.0 - mask)
    return ((pred.float() - clean) ** 2 * weight).sum() / (weight.sum() * clean.shape[1])


def _schedule(n_cells: int, config: TrainConfig) -> int:
    steps_per_epoch = max(1, n_cells // config.batch_size)
    return min(config.max_steps, config.epochs * steps_per_epoch)


def _plan(
    n_cells: int, n_steps: int, batch: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """(n_steps, batch) cell positions: consecutive slices of reshuffled passes."""
    out = np.empty((n_steps, batch), dtype=np.int64)
    order, pos = rng.permutation(n_cells), 0
    for step in range(n_steps):
        if pos + batch > n_cells:
            order, pos = rng.permutation(n_cells), 0
        out[step] = order[pos : pos + batch]
        pos += batch
    return out


def pretrain(
    model: UNet,
    pixels: PixelStore,
    config: TrainConfig,
    device: torch.device,
    progress: Progress | None = None,
) -> list[dict]:
    """Train ``model`` in place to reconstruct masked, noisy crops of every cell of ``pixels``.

    Args:
        model: a U-Net whose output channels equal its input channels.
        pixels: the project's crops, (C, S, S) each, C equal to ``model.config.in_channels``.
        config: the schedule.
        device: where to train.
        progress: ``progress(done_steps, total_steps)``.

    Training stops after the scheduled steps or, with ``config.max_seconds``, at the first step
    that ends past the time budget (the learning-rate schedule stays the step-based one, so a
    run that fits its budget is deterministic).

    Returns:
        History, one dict per logged step: ``step``, ``loss``, ``seconds``, ``crops``; the last
        one also has ``stopped``: ``"steps"`` (schedule done) or ``"max_seconds"`` (budget).

    Raises:
        ModelError: when the crops do not fit the model.
    """
    if pixels.n_channels != model.config.in_channels:
        raise ModelError(
            f"{pixels.project_dir}: crops have {pixels.n_channels} channels but the U-Net "
            f"expects {model.config.in_channels}; build it with in_channels={pixels.n_channels}"
        )
    check_input_size(pixels.crop_size, model.config)
    set_deterministic(config.deterministic)
    rng = np.random.default_rng(config.seed)
    gen = device_generator(device, config.seed)
    cell_ids = all_cell_ids(pixels)
    n_steps = _schedule(len(cell_ids), config)
    batch = min(config.batch_size, len(cell_ids))
    start = time.perf_counter()
    crops = DeviceCrops(pixels, cell_ids, device)
    channels_last = use_channels_last(config.channels_last, device)
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = cosine_decay(opt, n_steps)
    stepper = Stepper(model, opt, device, config.amp)
    history: list[dict] = []
    losses: list[torch.Tensor] = []  # running loss at each logged step, still on the device
    running = None
    plan = _plan(len(cell_ids), n_steps, batch, rng)
    for step, x in enumerate(crops.batches(plan)):
        clean = augment(x, gen, config.shift)
        noisy, mask = corrupt(clean, config, gen)
        if channels_last:
            clean, noisy = (t.contiguous(memory_format=torch.channels_last) for t in (clean, noisy))

        def loss_fn(rows: slice, noisy=noisy, clean=clean, mask=mask) -> torch.Tensor:
            pred = model(noisy[rows])
            return reconstruction_loss(pred, clean[rows], mask[rows], config.visible_weight)

        # 1) forward + backward + update (micro-batches after an out-of-memory error)
        loss = stepper.step_tensor(loss_fn, len(clean))
        sched.step()
        running = loss if running is None else 0.9 * running + 0.1 * loss
        seconds = time.perf_counter() - start
        stop_now = out_of_time(config.max_seconds, seconds, step, n_steps)
        # 2) log every LOG_EVERY steps and at the end (the loss stays on the device)
        if (step + 1) % LOG_EVERY == 0 or step + 1 == n_steps or stop_now:
            losses.append(running)
            history.append({"step": step + 1, "seconds": seconds, "crops": (step + 1) * batch})
        if progress is not None:
            progress(step + 1, step + 1 if stop_now else n_steps)
        if stop_now:
            logger.info(
                "pretraining stopped by its %.0f s budget after %d of %d steps",
                config.max_seconds,
                step + 1,
                n_steps,
            )
            break
    if history:
        values = torch.stack(losses).float().cpu().tolist()  # the one host sync
        for entry, value in zip(history, values):
            entry["loss"] = value
        history[-1]["seconds"] = time.perf_counter() - start
        mark_stopped(history, n_steps)
        history[-1]["resident"] = crops.resident
        logger.debug("pretrain %d steps, loss %.5f", history[-1]["step"], values[-1])
    model.eval()
    return history

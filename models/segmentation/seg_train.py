"""Training of the U-Net segmenter: configs, per-pixel targets, augmented crops, the loop.

Each (image, mask) pair is normalised once per image (robust percentiles, as at inference),
then every step draws random crops: a random rescale (so that one network covers several
nucleus sizes), one of the 8 flips/rotations, random gamma, gain, offset and noise. The target
of each pixel is one of three classes, background / interior / boundary (the object's own
outermost pixels, so that touching nuclei are split by two boundary pixels), learned with a
class-weighted cross-entropy.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from datasets.normalise import apply_ranges, compute_ranges
from datasets.progress import Progress
from datasets.segmentation.watershed import targets_from_labels
from models.backbone.lr_schedule import cosine_decay, mark_stopped, out_of_time
from models.backbone.training import Stepper, to_device
from models.backbone.unet import UNet, config_from_dict
from models.errors import ModelError

logger = logging.getLogger(__name__)

N_CLASSES = 3  # background, interior, boundary
_SAMPLE_PIXELS = 1 << 20  # percentiles of bigger images come from a strided sample


@dataclass(frozen=True)
class SegmenterConfig:
    """Network shape and inference settings of a segmenter; saved with its checkpoint."""

    width: int = 8  # U-Net channels of the first level
    depth: int = 4  # U-Net levels
    p_low: float = 1.0  # percentile mapped to 0 by the per-image normalisation
    p_high: float = 99.8  # percentile mapped to 1
    tile: int = 576  # largest inference tile side, pixels (multiple of 2**(depth-1))
    overlap: int = 32  # context pixels dropped at each inner tile edge
    fg_threshold: float = 0.5  # foreground = 1 - P(background) above this
    interior_threshold: float = 0.5  # interior mask = P(interior) above this
    seed_sigma: float = 1.0  # smoothing of the interior's distance map before seeding (px)
    seed_h: float = 0.5  # seeds = h-maxima of that map (px); higher splits less
    min_size: int = 16  # objects smaller than this many pixels are dropped

    def __post_init__(self) -> None:
        step = 2 ** (self.depth - 1)
        if self.tile % step or self.tile <= 2 * self.overlap or self.overlap < 0:
            raise ModelError(
                f"SegmenterConfig tile={self.tile}, overlap={self.overlap}: the tile must be a "
                f"multiple of {step} (2**(depth-1)) and larger than 2 * overlap"
            )
        if not 0 <= self.p_low < self.p_high <= 100:
            raise ModelError(
                f"SegmenterConfig p_low={self.p_low}, p_high={self.p_high}; need "
                "0 <= p_low < p_high <= 100"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SegmenterConfig:
        """Rebuild from ``dataclasses.asdict`` output; unknown keys are a ModelError."""
        return config_from_dict(cls, values, "segmenter config")


@dataclass(frozen=True)
class SegTrainConfig:
    """Schedule and augmentation of segmenter training; saved with the checkpoint."""

    steps: int = 1000  # optimiser steps
    #: wall-clock safety, checked after every step (0: none): far above the schedule's time
    #: (about 2 minutes on a 2-core CPU), so the steps decide and the same seed gives the same
    #: weights on a busy machine too (a 240 s budget cut training short under load)
    max_seconds: float = 1800.0
    batch_size: int = 8  # crops per step
    crop: int = 128  # side of a training crop, pixels
    lr: float = 3e-3  # AdamW peak learning rate (cosine decay to 5 %)
    weight_decay: float = 1e-4  # AdamW weight decay
    scale_min: float = 0.6  # random rescale of a crop: objects shrink down to this factor
    scale_max: float = 1.6  # ... and grow up to this factor
    gamma_max: float = 2.0  # intensity gamma drawn log-uniformly in [1/gamma_max, gamma_max]
    gain: float = 0.4  # intensity gain drawn from [1 - gain, 1 + gain]
    noise_max: float = 0.05  # Gaussian noise sd drawn from [0, noise_max]
    boundary_weight: float = 2.0  # cross-entropy weight of the boundary class
    channels_last: bool = True  # NHWC layout (about 1.5x faster on this CPU for 1 channel)
    amp: bool = True  # float16 autocast on CUDA
    seed: int = 0  # crops, augmentation

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size) < 1 or self.crop < 16 or self.max_seconds < 0:
            raise ModelError(
                f"SegTrainConfig steps={self.steps}, batch_size={self.batch_size}, "
                f"crop={self.crop}, max_seconds={self.max_seconds}: need steps and batch_size "
                ">= 1, crop >= 16, max_seconds >= 0"
            )
        if not 0 < self.scale_min <= self.scale_max:
            raise ModelError(
                f"SegTrainConfig scale_min={self.scale_min}, scale_max={self.scale_max}; "
                "need 0 < scale_min <= scale_max"
            )

    @classmethod
    def for_device(cls, device: torch.device) -> SegTrainConfig:
        """The shipped schedule: about 2 CPU-minutes on this 2-core CPU (200 CPU-s with one
        thread), longer with bigger crops on a GPU."""
        if device.type == "cpu":
            return cls()
        return cls(steps=3000, max_seconds=600.0, batch_size=16, crop=192)


def normalise_image(image: npt.NDArray, config: SegmenterConfig) -> npt.NDArray[np.float32]:
    """Scale one channel to [0, 1] with its own robust percentiles (training and inference).

    Args:
        image: (H, W) raw intensities of any numeric dtype.
        config: gives ``p_low`` and ``p_high``.

    Returns:
        (H, W) float32 in [0, 1].
    """
    stride = max(1, int(math.sqrt(image.size / _SAMPLE_PIXELS)))
    sample = image[::stride, ::stride][None, None]
    ranges = compute_ranges(sample, (config.p_low, config.p_high))
    return apply_ranges(image[None], ranges)[0]


def pick_channel(image: npt.NDArray, channel: int, what: str = "image") -> npt.NDArray:
    """The (H, W) plane of ``image`` (C, H, W) at ``channel``, or ``image`` itself when 2-D."""
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        raise ModelError(f"{what}: shape {image.shape}, expected (C, H, W) or (H, W)")
    if not 0 <= channel < image.shape[0]:
        raise ModelError(
            f"{what}: channel {channel} asked for, but the image has {image.shape[0]} "
            f"channels (shape {image.shape}); pass channel=0..{image.shape[0] - 1}"
        )
    return image[channel]


def prepare_pairs(
    pairs: Sequence[tuple[npt.NDArray, npt.NDArray]],
    channel: int,
    config: SegmenterConfig,
    min_side: int,
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]]:
    """Check pairs and return normalised (H, W) float32 images with int32 masks, each padded
    with background up to ``min_side`` pixels per axis.

    Raises:
        ModelError: no pairs, a wrong shape or dtype, a bad channel, or no object at all.
    """
    if not pairs:
        raise ModelError("no (image, mask) pairs to train the segmenter on; give at least one")
    out = []
    for i, (image, mask) in enumerate(pairs):
        plane = pick_channel(np.asarray(image), channel, f"training image {i}")
        mask = np.asarray(mask)
        if mask.shape != plane.shape or not np.issubdtype(mask.dtype, np.integer):
            raise ModelError(
                f"training mask {i}: shape {mask.shape} dtype {mask.dtype}, expected an integer "
                f"label image of shape {plane.shape} (0 = background)"
            )
        pad = [(0, max(0, min_side - s)) for s in plane.shape]
        out.append(
            (np.pad(normalise_image(plane, config), pad), np.pad(mask.astype(np.int32), pad))
        )
    if not any(m.any() for _, m in out):
        raise ModelError(f"all {len(out)} training masks are empty; give masks with objects")
    return out


def _resize(image: npt.NDArray, labels: npt.NDArray, size: int) -> tuple[npt.NDArray, ...]:
    """Image (bilinear, antialiased) and labels (nearest) of a square crop resized to ``size``."""
    if image.shape[0] == size:
        return image, labels
    x = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    img = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[
        0, 0
    ].numpy()
    idx = ((np.arange(size) + 0.5) * image.shape[0] / size).astype(np.int64)
    return img, labels[np.ix_(idx, idx)]


def _intensity(img: npt.NDArray, cfg: SegTrainConfig, rng: np.random.Generator) -> npt.NDArray:
    gamma = math.exp(rng.uniform(-math.log(cfg.gamma_max), math.log(cfg.gamma_max)))
    gain = rng.uniform(1 - cfg.gain, 1 + cfg.gain)
    offset = rng.uniform(-0.05, 0.05)
    noise = rng.uniform(0, cfg.noise_max) * rng.standard_normal(img.shape, dtype=np.float32)
    out = np.clip(img, 0, 1) ** gamma * gain + offset + noise
    return np.clip(out, 0, 1).astype(np.float32)


def sample_crop(
    field: tuple[npt.NDArray, npt.NDArray], cfg: SegTrainConfig, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """One augmented (crop, crop) image and its class targets from a prepared field (a random
    square of side crop / scale, clipped to the field, resized to crop)."""
    image, labels = field
    scale = math.exp(rng.uniform(math.log(cfg.scale_min), math.log(cfg.scale_max)))
    side = min(round(cfg.crop / scale), *image.shape)
    y0 = int(rng.integers(0, image.shape[0] - side + 1))
    x0 = int(rng.integers(0, image.shape[1] - side + 1))
    img, lab = _resize(
        image[y0 : y0 + side, x0 : x0 + side], labels[y0 : y0 + side, x0 : x0 + side], cfg.crop
    )
    k = int(rng.integers(0, 8))
    img, lab = np.rot90(img, k % 4), np.rot90(lab, k % 4)
    if k >= 4:
        img, lab = img[:, ::-1], lab[:, ::-1]
    return _intensity(img, cfg, rng), targets_from_labels(np.ascontiguousarray(lab))


def sample_batch(
    fields: list[tuple[npt.NDArray, npt.NDArray]], cfg: SegTrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, 1, crop, crop) float32 inputs and (batch, crop, crop) int64 targets."""
    picks = rng.integers(0, len(fields), size=cfg.batch_size)
    crops = [sample_crop(fields[int(i)], cfg, rng) for i in picks]
    x = torch.from_numpy(np.stack([c[0] for c in crops])[:, None])
    y = torch.from_numpy(np.stack([c[1] for c in crops]))
    return x, y


def fit_segmenter(
    model: UNet,
    fields: list[tuple[npt.NDArray, npt.NDArray]],
    cfg: SegTrainConfig,
    device: torch.device,
    progress: Progress | None = None,
) -> list[dict]:
    """Train ``model`` (1 input, 3 output channels) in place on prepared fields.

    Args:
        model: the segmentation U-Net.
        fields: :func:`prepare_pairs` output.
        cfg: schedule and augmentation.
        device: where to train.
        progress: ``progress(done_steps, total_steps)``.

    Returns:
        History, one dict per logged step (``step``, ``loss``, ``seconds``); the last one also
        has ``stopped``: ``"steps"`` or ``"max_seconds"``.
    """
    rng = np.random.default_rng(cfg.seed)
    model.to(device).train()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = cosine_decay(opt, cfg.steps)
    weight = torch.tensor([1.0, 1.0, cfg.boundary_weight], device=device)
    stepper = Stepper(model, opt, device, cfg.amp)
    history: list[dict] = []
    start, running = time.perf_counter(), 0.0
    for step in range(cfg.steps):
        # 1) a batch of augmented crops and their per-pixel classes
        x, y = sample_batch(fields, cfg, rng)
        x, y = to_device(x, device, cfg.channels_last), y.to(device)

        def loss_fn(rows: slice, x=x, y=y) -> torch.Tensor:
            return F.cross_entropy(model(x[rows]).float(), y[rows], weight=weight)

        # 2) forward + backward + update (micro-batches after an out-of-memory error)
        loss = stepper.step(loss_fn, len(x))
        sched.step()
        running = loss if step == 0 else 0.95 * running + 0.05 * loss
        seconds = time.perf_counter() - start
        stop_now = out_of_time(cfg.max_seconds, seconds, step, cfg.steps)
        # 3) log every 25 steps and at the end
        if (step + 1) % 25 == 0 or step + 1 == cfg.steps or stop_now:
            history.append({"step": step + 1, "loss": running, "seconds": seconds})
            logger.debug("segmenter step %d/%d loss %.4f", step + 1, cfg.steps, running)
        if progress is not None:
            progress(step + 1, step + 1 if stop_now else cfg.steps)
        if stop_now:
            logger.warning(
                "segmenter training stopped by its %.0f s budget after %d of %d steps: another "
                "run may segment differently",
                cfg.max_seconds,
                step + 1,
                cfg.steps,
            )
            break
    mark_stopped(history, cfg.steps)
    model.eval()
    return history

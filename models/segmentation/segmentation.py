"""U-Net nuclei segmentation: train on (image, mask) pairs, segment whole fields into labels.

The U-Net of :mod:`models.backbone.unet` (1 input channel, 3 output classes: background, interior,
boundary) runs over a field in overlapping tiles (bounded memory for any field size). Instance
labels: the interior mask (high interior probability) is seeded at the h-maxima of its smoothed
distance transform (each connected interior region at least once; necks split touching nuclei),
the seeds grow by a watershed over the foreground, then a small-object filter. Training lives in
:mod:`models.segmentation.seg_train`. ``make_unet_segmenter`` is what field ingest calls for
``--segment unet``: it trains on the user's masks, or on synthetic demo fields when there are
none (never on the fields it segments), and caches the checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from datasets.segmentation.watershed import labels_from_probs
from models.backbone.checkpoint import build_model, load_checkpoint, save_checkpoint
from models.backbone.unet import UNet, UNetConfig
from models.device import resolve_device, seed_everything
from models.errors import ModelError
from models.segmentation.seg_train import (
    N_CLASSES,
    Progress,
    SegmenterConfig,
    SegTrainConfig,
    fit_segmenter,
    normalise_image,
    pick_channel,
    prepare_pairs,
)

logger = logging.getLogger(__name__)

Pair = tuple[npt.NDArray, npt.NDArray]
DEMO_FIELDS = 32  # demo fields trained on when the user gives no masks
DEMO_SIZE = 256  # their side, pixels
_EXTRA_KEY = "segmenter"
_CACHE_VERSION = 1  # bump when training changes in ways the configs do not show

__all__ = [
    "SegTrainConfig",
    "SegTrainRun",
    "SegmenterConfig",
    "SegmenterModel",
    "demo_training_pairs",
    "labels_from_probs",
    "load_segmenter",
    "make_unet_segmenter",
    "train_segmenter",
]


class SegmenterModel:
    """A trained segmentation U-Net with its settings.

    Args:
        net: U-Net with 1 input and 3 output channels, in eval mode.
        config: network shape and inference settings.
        channel: the channel of a (C, H, W) field that shows the nuclei.
        device: where inference runs.
        extra: JSON-able facts saved with the checkpoint (training config, history, cache key).
    """

    def __init__(
        self,
        net: UNet,
        config: SegmenterConfig,
        channel: int = 0,
        device: torch.device | None = None,
        extra: dict | None = None,
    ) -> None:
        self.config, self.channel = config, channel
        self.device = device or torch.device("cpu")
        self.net = net.to(self.device).eval()
        if self.device.type == "cpu":
            self.net.to(memory_format=torch.channels_last)
        self.extra = dict(extra or {})

    def probabilities(self, image: npt.NDArray) -> npt.NDArray[np.float32]:
        """Foreground and interior probability maps of a field.

        Args:
            image: (C, H, W) or (H, W) raw field, any numeric dtype.

        Returns:
            (2, H, W) float32: P(foreground) = 1 - P(background), and P(interior).
        """
        plane = pick_channel(np.asarray(image), self.channel, "field")
        return _tiled_probs(self.net, normalise_image(plane, self.config), self.config, self.device)

    def segment(self, image: npt.NDArray) -> npt.NDArray[np.int32]:
        """Instance labels of a field: (C, H, W) or (H, W) -> (H, W) int32, 0 background,
        objects numbered 1..n."""
        probs = self.probabilities(image)
        return labels_from_probs(probs[0], probs[1], self.config)

    def save(self, path: Path) -> Path:
        """Write the checkpoint (weights, configs, channel) atomically to ``path``."""
        extra = {**self.extra, _EXTRA_KEY: dataclasses.asdict(self.config), "channel": self.channel}
        return save_checkpoint(Path(path), self.net, extra=extra)


def load_segmenter(path: Path, device: str = "auto") -> SegmenterModel:
    """Read a segmenter checkpoint (``torch.load(weights_only=True)``).

    Raises:
        ModelError: missing or corrupt file, or a checkpoint that is not a segmenter.
    """
    dev = resolve_device(device)
    ckpt = load_checkpoint(Path(path))
    if (
        ckpt.kind != "unet"
        or _EXTRA_KEY not in ckpt.extra
        or ckpt.config.out_channels != N_CLASSES
        or ckpt.config.in_channels != 1
    ):
        raise ModelError(
            f"{path}: not a U-Net segmentation checkpoint (kind {ckpt.kind!r}); give a file "
            "written by SegmenterModel.save or train one with --segment unet"
        )
    extra = dict(ckpt.extra)
    try:
        config = SegmenterConfig.from_dict(extra.pop(_EXTRA_KEY))
    except (ModelError, TypeError) as err:
        raise ModelError(f"{path}: {err}; train the segmenter again") from err
    channel = int(extra.pop("channel", 0))
    return SegmenterModel(build_model(ckpt), config, channel, dev, extra)


@dataclass(frozen=True)
class SegTrainRun:
    """Where one segmenter training runs, its seed, and how long (over the schedule's)."""

    device: str = "auto"  # auto, cpu, cuda or mps; CUDA trains with mixed precision
    seed: int = 0  # weights, crops and augmentation; the same seed, the same weights on CPU
    max_seconds: float | None = None  # wall-clock budget; None: the schedule's
    steps: int | None = None  # optimiser steps; None: the schedule's


def train_segmenter(
    pairs: Sequence[Pair],
    *,
    channel: int = 0,
    run: SegTrainRun | None = None,
    progress: Progress | None = None,
    config: SegmenterConfig | None = None,
    train_config: SegTrainConfig | None = None,
) -> SegmenterModel:
    """Train a segmentation U-Net on (image, mask) pairs.

    Args:
        pairs: ``(image, mask)``: image (C, H, W) or (H, W) raw intensities, mask (H, W)
            integer instance labels (0 background). Fields smaller than a crop are padded.
        channel: the nuclei channel of (C, H, W) images (also used by ``segment``).
        run: device, seed, and the budget and steps that override ``train_config``'s (the
            seed always does); :class:`SegTrainRun` defaults when None.
        progress: ``progress(done_steps, total_steps)``.
        config: network and inference settings (default :class:`SegmenterConfig`).
        train_config: schedule and augmentation (default ``SegTrainConfig.for_device``).

    Raises:
        ModelError: bad pairs, or a device that is not available.
    """
    run = run or SegTrainRun()
    dev = resolve_device(run.device)
    config = config or SegmenterConfig()
    cfg = train_config or SegTrainConfig.for_device(dev)
    overrides: dict[str, Any] = {
        "seed": run.seed,
        "steps": run.steps,
        "max_seconds": run.max_seconds,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    fields = prepare_pairs(pairs, channel, config, min_side=cfg.crop)
    seed_everything(run.seed)
    net = UNet(
        UNetConfig(in_channels=1, out_channels=N_CLASSES, width=config.width, depth=config.depth)
    )
    history = fit_segmenter(net, fields, cfg, dev, progress)
    extra = {"train": dataclasses.asdict(cfg), "history": history, "n_pairs": len(fields)}
    return SegmenterModel(net, config, channel, dev, extra)


def _tile_axis(length: int, config: SegmenterConfig) -> tuple[int, int]:
    """``(tile, n_tiles)`` along one axis: as few tiles as ``config.tile`` allows, each just
    big enough (a multiple of 2**(depth-1)) to cover ``length`` with its rims dropped."""
    mult = 2 ** (config.depth - 1)
    n = math.ceil(length / (config.tile - 2 * config.overlap))
    inner = math.ceil(length / n)
    return math.ceil((inner + 2 * config.overlap) / mult) * mult, n


TILE_BATCH = {"cuda": 16}  # tiles per forward pass by device type (1 elsewhere)


def _tiled_probs(
    net: UNet,
    plane: npt.NDArray[np.float32],
    config: SegmenterConfig,
    device: torch.device,
    batch: int | None = None,
) -> npt.NDArray[np.float32]:
    """(2, H, W) float32 P(foreground), P(interior) of a normalised (H, W) plane, computed in
    overlapping tiles whose ``overlap``-wide rims are dropped; ``batch`` tiles (default
    ``TILE_BATCH`` of the device) run in one forward pass, so memory is bounded by a batch of
    tiles."""
    h, w = plane.shape
    m = config.overlap
    (th, ny), (tw, nx) = _tile_axis(h, config), _tile_axis(w, config)
    sy, sx = th - 2 * m, tw - 2 * m
    padded = np.pad(plane, ((m, ny * sy + m - h), (m, nx * sx + m - w)), mode="reflect")
    out = np.empty((2, h, w), np.float32)
    corners = [(y0, x0) for y0 in range(0, ny * sy, sy) for x0 in range(0, nx * sx, sx)]
    size = max(1, batch or TILE_BATCH.get(device.type, 1))
    amp = torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda")
    with torch.inference_mode(), amp:
        for i in range(0, len(corners), size):
            group = corners[i : i + size]
            tiles = np.stack([padded[y0 : y0 + th, x0 : x0 + tw] for y0, x0 in group])
            probs = _tile_probs(net, tiles, device)
            for (y0, x0), prob in zip(group, probs):
                ch, cw = min(sy, h - y0), min(sx, w - x0)
                out[0, y0 : y0 + ch, x0 : x0 + cw] = 1.0 - prob[0, m : m + ch, m : m + cw]
                out[1, y0 : y0 + ch, x0 : x0 + cw] = prob[1, m : m + ch, m : m + cw]
    return out


def _tile_probs(net: UNet, tiles: npt.NDArray, device: torch.device) -> npt.NDArray[np.float32]:
    """(k, 3, h, w) float32 class probabilities of k (h, w) tiles."""
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    x = torch.from_numpy(np.ascontiguousarray(tiles))[:, None].to(device, memory_format=fmt)
    return torch.softmax(net(x).float(), dim=1).cpu().numpy()


def demo_training_pairs(n: int, size: int = DEMO_SIZE, seed: int = 0) -> list[Pair]:
    """``n`` synthetic nuclei fields with their true masks (random nucleus sizes and contrast).

    Returns:
        ``[(image (C, size, size) uint16, mask (size, size) int32), ...]``, nuclei on channel 0.
    """
    from datasets.fields.demo import make_field

    rng = np.random.default_rng(seed)
    return [make_field(rng, size=size)[:2] for _ in range(n)]


def _pairs_key(pairs: Sequence[Pair] | None, channel: int, seed: int) -> str:
    """A fingerprint of what a cached segmenter was trained on."""
    settings = {
        "version": _CACHE_VERSION,
        "channel": channel,
        "seed": seed,
        "config": dataclasses.asdict(SegmenterConfig()),
        "train": dataclasses.asdict(SegTrainConfig()),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    if pairs is None:
        digest.update(f"demo:{DEMO_FIELDS}:{DEMO_SIZE}".encode())
    for image, mask in pairs or ():
        for arr in (np.ascontiguousarray(image), np.ascontiguousarray(mask)):
            digest.update(f"{arr.shape}{arr.dtype}".encode())
            digest.update(arr.tobytes())
    return digest.hexdigest()


def _cached(cache: Path | None, key: str, device: str) -> SegmenterModel | None:
    if cache is None or not Path(cache).is_file():
        return None
    try:
        model = load_segmenter(cache, device)
    except ModelError as err:
        logger.warning("%s; retraining the segmenter", err)
        return None
    if model.extra.get("key") != key:
        logger.info("%s: trained on other data or settings; retraining the segmenter", cache)
        return None
    return model


def make_unet_segmenter(
    train_pairs: Sequence[Pair] | None = None,
    *,
    channel: int = 0,
    device: str = "auto",
    seed: int = 0,
    progress: Progress | None = None,
    cache: Path | None = None,
) -> Callable[[npt.NDArray], npt.NDArray[np.int32]]:
    """A field segmenter for ingest: ``field (C, H, W) or (H, W) -> (H, W) int32 labels``.

    Args:
        train_pairs: the user's ``(image, mask)`` pairs (see :func:`train_segmenter`); when
            None, :data:`DEMO_FIELDS` synthetic demo fields (never the fields segmented).
        channel: the nuclei channel of the user's fields (and of ``train_pairs``).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        seed: training seed.
        progress: ``progress(done_steps, total_steps)`` while training.
        cache: a checkpoint file (``.pt``), reused when it was trained on the same data and
            settings, otherwise (re)written after training; or a folder of checkpoints, one per
            training data and settings (``segmenter-<fingerprint>.pt``), so that ``init``,
            ``add`` and ``predict`` on the same masks (or none) train once.
    """
    resolve_device(device)  # an absent device is an error before any cache or training
    key = _pairs_key(train_pairs, channel, seed)
    if cache is not None and Path(cache).suffix != ".pt":  # a folder of checkpoints
        cache = Path(cache) / f"segmenter-{key[:20]}.pt"
    model = _cached(cache, key, device)
    if model is not None:
        logger.info("using the cached segmenter %s", cache)
    else:
        demo = train_pairs is None
        pairs = (
            demo_training_pairs(DEMO_FIELDS, DEMO_SIZE, seed)
            if train_pairs is None
            else train_pairs
        )
        run = SegTrainRun(device=device, seed=seed)
        model = train_segmenter(pairs, channel=0 if demo else channel, run=run, progress=progress)
        model.extra["key"] = key
        if cache is not None:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            model.save(Path(cache))
    model.channel = channel
    return model.segment

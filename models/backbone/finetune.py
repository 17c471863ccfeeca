"""Fine-tuning encoder + linear head end to end on the labeled cells.

Batches are class-balanced (every class drawn equally often). Below ``min_per_class`` labels
in any class a fixed short schedule runs on all labels. Below ``holdout_min_per_class`` (20)
the full schedule runs on all labels, without early stopping: a held-out split of a few cells
per class is too noisy to choose weights by (on Jurkat at 10 labels per class, early stopping
on 2 held-out cells per class kept first-epoch weights: balanced accuracy 0.34 against 0.62
without it). With at least that many in every class, a stratified part is held out and the
weights with the best held-out balanced accuracy are kept (early stopping).

The labeled crops are loaded onto the training device once (``DeviceCrops``); augmentation
(flips, rotations, small shifts: no intensity change) runs there, and losses are read back
once per epoch.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from datasets.pixels.store import PixelStore
from models.backbone.training import (
    DeviceCrops,
    Progress,
    Stepper,
    all_cell_ids,
    augment,
    autocast,
    device_generator,
    use_channels_last,
)
from models.backbone.unet import Classifier
from models.device import set_deterministic
from models.errors import ModelError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Schedule of fine-tuning; saved with the checkpoint."""

    max_epochs: int = 15  # epochs with a held-out split (early stopping may end sooner)
    short_epochs: int = 5  # fixed epochs while any class has fewer than min_per_class labels
    steps_per_epoch: int = 0  # 0 = labeled cells / batch_size (at least min_steps)
    min_steps: int = 8  # optimiser steps per epoch at least
    batch_size: int = 64  # crops per step
    lr: float = 3e-2  # AdamW learning rate of the head (1e-3 lost 0.18 bal. acc on Jurkat)
    encoder_lr: float = 3e-4  # AdamW learning rate of the encoder
    weight_decay: float = 1e-4  # AdamW weight decay
    val_fraction: float = 0.2  # held-out share of each class
    min_per_class: int = 5  # below this in any class: no split, fixed short schedule
    holdout_min_per_class: int = 20  # below this in any class: no held-out split (max_epochs)
    head_epochs: int = 0  # first epochs train the head only (encoder frozen)
    freeze_bn: bool = False  # keep the encoder's BatchNorm statistics from pretraining
    patience: int = 3  # epochs without held-out improvement before stopping
    # weight of a supervised contrastive loss (Khosla et al. 2020) on the L2-normalised
    # embedding, added to the head's cross-entropy; 0: cross-entropy only
    supcon: float = 0.0
    temperature: float = 0.1  # of the supervised contrastive loss
    # largest random shift of a crop, pixels (no intensity augmentation). 0: on Jurkat (H200,
    # 5 folds) shifts of 2 cost the fine-tuned embedding 0.04 balanced accuracy (0.804 vs
    # 0.844) and morphology + it 0.014 (0.851 vs 0.865).
    shift: int = 0
    channels_last: bool | None = None  # NHWC layout; None: on CUDA only (slower on CPU)
    amp: bool = True  # bfloat16 autocast on CUDA
    deterministic: bool = True  # deterministic kernels; False: cudnn.benchmark, faster on GPU
    seed: int = 0  # split, sampling and augmentation

    def __post_init__(self) -> None:
        if min(self.max_epochs, self.short_epochs, self.min_steps, self.batch_size) < 1:
            raise ModelError(f"FinetuneConfig: epochs, steps and batch_size must be >= 1 ({self})")
        if self.supcon < 0 or self.temperature <= 0:
            raise ModelError(f"FinetuneConfig: supcon must be >= 0 and temperature > 0 ({self})")
        if not 0.0 < self.val_fraction < 1.0:
            raise ModelError(f"FinetuneConfig.val_fraction={self.val_fraction}; allowed (0, 1)")


@dataclass(frozen=True)
class LabeledCells:
    """What :func:`finetune` trains on: the labeled cells and the head's class order."""

    labels: Mapping[str, str]  # cell_id -> class name of every labeled cell
    classes: tuple[str, ...]  # class names in output order; every labeled class among them


def stratified_split(
    y: npt.NDArray[np.int64], fraction: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Indices ``(train, held_out)``: about ``fraction`` of each class held out, at least one
    per class and at least one left for training."""
    train, held = [], []
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        n_held = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def balanced_batches(
    y: npt.NDArray[np.int64], n_steps: int, batch: int, rng: np.random.Generator
) -> list[npt.NDArray[np.int64]]:
    """``n_steps`` index arrays; each draws a class uniformly, then a cell of that class."""
    classes = np.unique(y)
    members = [np.flatnonzero(y == k) for k in classes]
    out = []
    for _ in range(n_steps):
        picks = rng.integers(0, len(classes), size=batch)
        out.append(np.array([members[c][rng.integers(len(members[c]))] for c in picks]))
    return out


def balanced_accuracy(y_true: npt.NDArray, y_pred: npt.NDArray) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    return float(np.mean([np.mean(y_pred[y_true == k] == k) for k in np.unique(y_true)]))


def supcon_loss(z: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss of embeddings ``z`` (n, d) with classes ``y`` (n,): for each
    cell, minus the mean log-probability of its same-class cells among all other cells of the
    batch, by cosine similarity / ``temperature``; averaged over cells with a same-class
    partner (0 when none has one)."""
    z = nn.functional.normalize(z.float(), dim=1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    per_cell = -log_prob.masked_fill(~pos, 0.0).sum(1) / n_pos.clamp(min=1)
    return (per_cell * (n_pos > 0)).sum() / (n_pos > 0).sum().clamp(min=1)


def predict_logits(
    model: Classifier,
    pixels: PixelStore | DeviceCrops,
    cell_ids: list[str] | None,
    device: torch.device,
    batch: int = 1024,
) -> npt.NDArray[np.float32]:
    """(n, k) logits of ``cell_ids`` (no augmentation); with ``DeviceCrops`` and
    ``cell_ids=None``, of all its cells."""
    model.eval()
    if isinstance(pixels, DeviceCrops):
        crops = pixels
    else:
        ids = cell_ids if cell_ids is not None else all_cell_ids(pixels)
        crops = DeviceCrops(pixels, ids, device)
    out = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch):
            rows = np.arange(start, min(start + batch, len(crops)))
            x = crops.batch(rows)
            if use_channels_last(None, device):
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, True):
                out.append(model(x).float())
    if not out:
        return np.zeros((0, model.head.out_features), np.float32)
    return torch.cat(out).cpu().numpy()


def _encode(labels: Mapping[str, str], classes: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({c for c in labels.values() if c not in index})
    if unknown:
        raise ModelError(f"labels use classes {unknown} that are not in {list(classes)}")
    ids = sorted(labels)
    return ids, np.array([index[labels[c]] for c in ids], dtype=np.int64)


def _train_mode(model: Classifier, frozen_encoder: bool, freeze_bn: bool) -> None:
    """Training mode, with the encoder frozen (weights and BatchNorm statistics) when
    ``frozen_encoder``, or only its BatchNorm statistics kept when ``freeze_bn``."""
    model.train()
    model.encoder.requires_grad_(not frozen_encoder)
    if frozen_encoder:
        model.encoder.eval()
    elif freeze_bn:
        for module in model.encoder.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def finetune(
    model: Classifier,
    pixels: PixelStore,
    cells: LabeledCells,
    config: FinetuneConfig,
    device: torch.device,
    progress: Progress | None = None,
) -> list[dict]:
    """Fine-tune ``model`` in place on ``cells.labels`` (cell_id -> class name).

    Args:
        model: encoder (e.g. copied from a pretrained U-Net) + head with
            ``len(cells.classes)`` outputs.
        pixels: the project's crops.
        cells: the labeled cells and the class names in output order (every labeled class
            must be among them).
        config: the schedule.
        device: where to train.
        progress: ``progress(done_steps, total_steps)``.

    Returns:
        History, one dict per epoch: ``epoch``, ``loss``, ``val_balanced_accuracy`` (None
        without a split), ``seconds``, ``split``.

    Raises:
        ModelError: fewer than two labeled classes, or a class not in ``classes``.
    """
    classes = cells.classes
    ids, y = _encode(cells.labels, classes)
    counts = np.bincount(y, minlength=len(classes))
    if (counts > 0).sum() < 2:
        raise ModelError(
            "fine-tuning needs labels of at least 2 classes; have "
            f"{dict(zip(classes, counts.tolist()))}"
        )
    set_deterministic(config.deterministic)
    rng = np.random.default_rng(config.seed)
    gen = device_generator(device, config.seed)
    fewest = int(counts[counts > 0].min())
    short = fewest < config.min_per_class
    with_split = not short and fewest >= config.holdout_min_per_class
    train_idx, val_idx = (
        stratified_split(y, config.val_fraction, rng)
        if with_split
        else (np.arange(len(y)), np.zeros(0, np.int64))
    )
    epochs = config.short_epochs if short else config.max_epochs
    steps = config.steps_per_epoch or max(config.min_steps, len(train_idx) // config.batch_size)
    channels_last = use_channels_last(config.channels_last, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": config.encoder_lr},
            {"params": model.head.parameters(), "lr": config.lr},
        ],
        weight_decay=config.weight_decay,
    )
    stepper = Stepper(model, opt, device, config.amp)
    start = time.perf_counter()
    crops = DeviceCrops(pixels, ids, device)
    val_crops = None
    y_dev = torch.from_numpy(y).to(device)
    history: list[dict] = []
    best, best_state, stale = -1.0, None, 0
    for epoch in range(epochs):
        _train_mode(model, epoch < config.head_epochs, config.freeze_bn)
        # 1) one epoch of class-balanced batches over the training part (positions into ids)
        plan = np.stack(
            [train_idx[b] for b in balanced_batches(y[train_idx], steps, config.batch_size, rng)]
        )
        plan_dev = torch.from_numpy(plan).to(device)
        total = torch.zeros((), device=device)
        for s, x in enumerate(crops.batches(plan)):
            x = augment(x, gen, config.shift)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target = y_dev.index_select(0, plan_dev[s])

            def loss_fn(rows: slice, x=x, t=target) -> torch.Tensor:
                z = model.embed(x[rows])
                loss = nn.functional.cross_entropy(model.head(z).float(), t[rows])
                if config.supcon:
                    loss = loss + config.supcon * supcon_loss(z, t[rows], config.temperature)
                return loss

            total = total + stepper.step_tensor(loss_fn, len(x))
            if progress is not None:
                progress(epoch * steps + s + 1, epochs * steps)
        # 2) held-out balanced accuracy; keep the best weights
        score = None
        if with_split:
            if val_crops is None:
                val_crops = _Subset(crops, val_idx)
            pred = predict_logits(model, val_crops, None, device).argmax(1)
            score = balanced_accuracy(y[val_idx], pred)
            if score > best:
                best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        history.append(
            {
                "epoch": epoch + 1,
                "loss": float(total) / steps,
                "val_balanced_accuracy": score,
                "split": with_split,
                "seconds": time.perf_counter() - start,
            }
        )
        # 3) early stopping
        if with_split and stale >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.encoder.requires_grad_(True)
    model.eval()
    return history


class _Subset(DeviceCrops):
    """Rows ``rows`` of another DeviceCrops (a copy of those rows when resident)."""

    def __init__(self, parent: DeviceCrops, rows: npt.NDArray[np.int64]) -> None:
        self.pixels, self.device, self.resident = parent.pixels, parent.device, parent.resident
        self.ids = parent.ids[rows]
        self.data = (
            parent.data[torch.from_numpy(rows).to(parent.device)]
            if parent.data is not None
            else None
        )

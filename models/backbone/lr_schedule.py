"""The learning-rate schedule and wall-clock budget shared by every training loop.

Pretraining (``models.backbone.pretrain``) and segmenter training
(``models.segmentation.seg_train``) both decay the learning rate along a cosine to 5 % of its
peak and may stop early on a time budget; they use these three helpers rather than copies of them.
"""

from __future__ import annotations

import math

import torch

__all__ = ["cosine_decay", "mark_stopped", "out_of_time"]

FLOOR = 0.05  # the learning rate ends at this fraction of its peak


def cosine_decay(
    optimizer: torch.optim.Optimizer, n_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler (call ``.step()`` after each optimiser step) that decays the learning rate
    along a cosine from its peak to ``FLOOR`` of it over ``n_steps``, then holds it there."""

    def factor(step: int) -> float:
        return FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * min(step / n_steps, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def out_of_time(max_seconds: float, seconds: float, step: int, n_steps: int) -> bool:
    """Whether a run with budget ``max_seconds`` (0: none) stops after 0-based ``step``: the
    budget is spent and scheduled steps remain. The schedule stays step-based, so a run that
    fits its budget is deterministic."""
    return 0 < max_seconds <= seconds and step + 1 < n_steps


def mark_stopped(history: list[dict], n_steps: int) -> None:
    """Record on the last history entry why training stopped: ``"steps"`` (schedule done) or
    ``"max_seconds"`` (the budget)."""
    if history:
        history[-1]["stopped"] = "max_seconds" if history[-1]["step"] < n_steps else "steps"

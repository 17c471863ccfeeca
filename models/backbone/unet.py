"""A small U-Net in plain torch: encoder (embeddings), decoder (reconstruction, segmentation).

Each level is two 3x3 conv + BatchNorm + ReLU blocks; level ``i`` has ``width * 2**i``
channels, and a 2x2 max-pool sits between levels. The decoder upsamples (nearest), concatenates
the skip features of the same level and applies two conv blocks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from models.errors import ModelError

MAX_CHANNELS = 5


_Config = TypeVar("_Config")


def config_from_dict(cls: type[_Config], values: dict[str, Any], what: str) -> _Config:
    """``cls(**values)`` for a config dataclass saved with ``dataclasses.asdict``.

    Raises:
        ModelError: when ``values`` has keys ``cls`` does not know (a checkpoint of another
            version), naming ``what`` and the keys.
    """
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # a dataclass
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelError(f"{what} has unknown keys {unknown}; allowed {sorted(known)}")
    return cls(**values)


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the U-Net; saved with every checkpoint."""

    in_channels: int = 2  # channels of the input crops (1-5)
    out_channels: int = 0  # decoder output channels; 0 = same as in_channels (reconstruction)
    width: int = 8  # channels of the first level; level i has width * 2**i
    depth: int = 4  # number of levels (the last one is the bottleneck)
    pool_skips: bool = True  # the embedding also pools every skip level, not just the bottleneck

    def __post_init__(self) -> None:
        if not 1 <= self.in_channels <= MAX_CHANNELS:
            raise ModelError(f"UNetConfig.in_channels={self.in_channels}; allowed 1-{MAX_CHANNELS}")
        if self.out_channels < 0 or self.width < 1 or not 1 <= self.depth <= 6:
            raise ModelError(
                f"UNetConfig out_channels={self.out_channels}, width={self.width}, "
                f"depth={self.depth}; need out_channels >= 0, width >= 1, depth 1-6"
            )

    @property
    def widths(self) -> list[int]:
        return [self.width * 2**i for i in range(self.depth)]

    @property
    def embedding_dim(self) -> int:
        return sum(self.widths) if self.pool_skips else self.widths[-1]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> UNetConfig:
        """Rebuild from ``dataclasses.asdict`` output; unknown keys are a ModelError."""
        return config_from_dict(cls, values, "U-Net config")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """The U-Net's contracting path; usable alone for embeddings and classifiers."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        self.levels = nn.ModuleList(
            _block(c_in, c_out) for c_in, c_out in zip([config.in_channels, *widths], widths)
        )
        self.pool = nn.MaxPool2d(2)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every level, finest first.

        Args:
            x: (n, in_channels, H, W) float, H and W divisible by ``2**(depth-1)``.
        """
        out = []
        for i, level in enumerate(self.levels):
            x = level(x if i == 0 else self.pool(x))
            out.append(x)
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features: (n, config.embedding_dim)."""
        feats = self.features(x)
        if not self.config.pool_skips:
            feats = feats[-1:]
        return torch.cat([f.mean(dim=(2, 3)) for f in feats], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


class UNet(nn.Module):
    """Encoder + decoder; ``forward`` maps (n, C, H, W) to (n, out_channels or C, H, W)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        widths = config.widths
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.decoders = nn.ModuleList(
            _block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(config.depth - 1))
        )
        self.head = nn.Conv2d(widths[0], config.out_channels or config.in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encoder.features(x)
        y = skips[-1]
        for decoder, skip in zip(self.decoders, reversed(skips[:-1])):
            y = decoder(torch.cat([self.up(y), skip], dim=1))
        return self.head(y)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed(x)


class Classifier(nn.Module):
    """Encoder + linear head: (n, C, H, W) -> (n, n_classes) logits."""

    def __init__(self, config: UNetConfig, n_classes: int) -> None:
        super().__init__()
        if n_classes < 2:
            raise ModelError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.config = config
        self.encoder = Encoder(config)
        self.head = nn.Linear(config.embedding_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.embed(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed(x)


def check_input_size(size: int, config: UNetConfig) -> None:
    """Raise ModelError unless crops of side ``size`` pass through every pooling level."""
    step = 2 ** (config.depth - 1)
    if size % step:
        raise ModelError(
            f"crop size {size} is not divisible by {step} (2**(depth-1) for depth "
            f"{config.depth}); use a crop size that is a multiple of {step} or a smaller depth"
        )

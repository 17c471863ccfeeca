"""Tiny stand-ins for the model tests: a fake pixel store and a tiny U-Net config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


class FakePixels:
    """n synthetic (C, S, S) crops: class 0 a bright disc in channel 0, class 1 a bright square
    in channel 1 (ids ``c0000``...; even index -> class 0)."""

    def __init__(self, n: int = 32, channels: int = 2, size: int = 16, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n_cells, self.n_channels, self.crop_size = n, channels, size
        self.project_dir = Path("/nonexistent")
        self.cell_ids = [f"c{i:04d}" for i in range(n)]
        yy, xx = np.mgrid[:size, :size]
        disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2).astype(np.float32)
        square = np.zeros((size, size), np.float32)
        square[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
        crops = rng.uniform(0, 0.2, (n, channels, size, size)).astype(np.float32)
        crops[0::2, 0] += 0.7 * disc
        crops[1::2, min(1, channels - 1)] += 0.7 * square
        self.crops = np.clip(crops, 0, 1)
        names = ("round", "square")
        self.labels = {cid: names[i % 2] for i, cid in enumerate(self.cell_ids)}

    def read(self, cell_ids):
        index = {c: i for i, c in enumerate(self.cell_ids)}
        return self.crops[[index[c] for c in cell_ids]].copy()


@pytest.fixture
def fake_pixels() -> FakePixels:
    return FakePixels()


@pytest.fixture
def tiny_config():
    from models.backbone.unet import UNetConfig

    return UNetConfig(in_channels=2, width=4, depth=2)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny networks gain nothing from threads, and spinning threads suffer on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Factories for small synthetic crop files (TIFF, PNG, JPEG, npz) written into tmp_path."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from PIL import Image


def blob(
    rng: np.random.Generator,
    channels: int = 2,
    size: int = 40,
    dtype: npt.DTypeLike = np.uint16,
    peak: float = 1000.0,
    background: float = 100.0,
) -> npt.NDArray:
    """One synthetic cell: a bright disc on a noisy background, (C, size, size)."""
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4) ** 2
    out = np.empty((channels, size, size), dtype=np.float64)
    for c in range(channels):
        out[c] = background + disc * peak * (c + 1) / channels + rng.normal(0, 5, (size, size))
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(dtype)


def write_tiff(path: Path, array: npt.NDArray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, photometric="minisblack")
    return path


def write_pil(path: Path, array: npt.NDArray, mode: str | None = None) -> Path:
    """Write (H, W) or (H, W, bands) with PIL (PNG or JPEG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path)
    return path


def write_npz(path: Path, images: npt.NDArray, labels: npt.NDArray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if labels is None:
        np.savez(path, images=images)
    else:
        np.savez(path, images=images, labels=labels)
    return path


@pytest.fixture
def make() -> SimpleNamespace:
    """The file factories: ``make.blob``, ``make.tiff``, ``make.pil``, ``make.npz``."""
    return SimpleNamespace(blob=blob, tiff=write_tiff, pil=write_pil, npz=write_npz)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder (the project layer creates it before calling ingest)."""
    out = tmp_path / "project"
    out.mkdir()
    return out


@pytest.fixture
def tiff_folder(tmp_path: Path, rng: np.random.Generator) -> Path:
    """Six 2-channel uint16 40x40 channel-first TIFF crops in two class folders + labels.csv."""
    root = tmp_path / "crops"
    lines = ["path,label"]
    for label in ("A", "B"):
        for i in range(3):
            write_tiff(root / "images" / label / f"cell{i}.tif", blob(rng))
            lines.append(f"images/{label}/cell{i}.tif,{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root

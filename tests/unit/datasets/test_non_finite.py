"""NaN and infinite pixels: ignored by ranges and features, named in the report (issue 11.2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from datasets.config import IngestConfig
from datasets.crops.ingest import ingest_crops
from datasets.crops.readers import replace_non_finite
from datasets.errors import DataError
from datasets.features import read_features
from datasets.fields.ingest import ingest_fields
from datasets.fields.spec import FieldSpec
from datasets.morphology import morphology_features
from datasets.normalise import apply_ranges, compute_ranges
from datasets.pixels.store import PixelStore

SIZE = 32


def _crop(rng: np.random.Generator, channels: int = 2) -> np.ndarray:
    """A float crop: a bright disc of random size and brightness on a dim background."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = rng.normal(100.0, 5.0, (channels, SIZE, SIZE)).astype(np.float32)
    for c in range(channels):
        r = rng.uniform(4, 11)
        out[c][(yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 < r * r] += rng.uniform(200, 2000)
    return out


def _folder(root: Path, n: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(n):
        tifffile.imwrite(root / f"c{i:02d}.tif", _crop(rng))
    return root


def test_one_nan_and_one_inf_pixel_leave_ranges_and_features_finite(tmp_path):
    src = _folder(tmp_path / "crops")
    bad = tifffile.imread(src / "c03.tif")
    bad[0, 5, 5], bad[1, 7, 7] = np.nan, np.inf
    tifffile.imwrite(src / "c03.tif", bad)
    report = ingest_crops(src, tmp_path / "p", IngestConfig(crop_size=SIZE))
    assert report.n_cells == 24 and not report.skipped
    assert report.non_finite == [("c03.tif", 2)]
    assert "c03.tif" in report.summary() and "NaN or infinite" in report.summary()
    ranges = json.loads((tmp_path / "p/pixels/parts.json").read_text())["parts"][0]["ranges"]
    assert np.isfinite(np.asarray(ranges["*"])).all()
    crops = PixelStore(tmp_path / "p").read([f"c{i:02d}.tif" for i in range(24)])
    assert np.isfinite(crops).all()
    ids, feats, names = read_features(tmp_path / "p")
    assert np.isfinite(feats).all()
    for c in (0, 1):  # no channel's features went constant
        cols = [j for j, name in enumerate(names) if name.startswith(f"ch{c}_")]
        assert feats[:, cols].std(axis=0).max() > 0


def test_all_nan_file_is_skipped_with_a_reason(tmp_path):
    src = _folder(tmp_path / "crops", n=6)
    tifffile.imwrite(src / "empty.tif", np.full((2, SIZE, SIZE), np.nan, np.float32))
    report = ingest_crops(src, tmp_path / "p", IngestConfig(crop_size=SIZE))
    assert report.n_cells == 6
    ((name, reason),) = report.skipped
    assert name == "empty.tif" and "no finite pixel" in reason and "\n" not in reason


def test_ranges_and_scaling_ignore_non_finite_values():
    sample = np.arange(2 * 100, dtype=np.float32).reshape(1, 2, 10, 10)
    sample[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    ranges = compute_ranges(sample)
    assert np.isfinite(ranges).all() and ranges[0, 1] > ranges[0, 0]
    assert compute_ranges(np.full((1, 1, 4, 4), np.nan)).tolist() == [[0.0, 1.0]]
    scaled = apply_ranges(sample, ranges)
    assert np.isfinite(scaled).all() and scaled[0, 0, 0, 1] == 1.0


def test_morphology_ignores_non_finite_pixels():
    crops = np.stack([_crop(np.random.default_rng(i), 1) for i in range(3)]) / 2500
    clean, names = morphology_features(crops.astype(np.float32))
    dirty = crops.astype(np.float32)
    dirty[0, 0, 0, 0] = np.nan
    feats, _ = morphology_features(dirty)
    assert np.isfinite(feats).all()
    np.testing.assert_allclose(feats[1:], clean[1:])


def test_replace_non_finite_uses_the_crops_median():
    pixels = np.array([[[[1, 2], [3, np.nan]]]], dtype=np.float32)
    out, count = replace_non_finite(pixels, Path("x.tif"))
    assert count == 1 and out[0, 0, 1, 1] == 2.0
    ints = np.ones((1, 1, 2, 2), np.uint8)
    assert replace_non_finite(ints, Path("x.tif"))[0] is ints
    with pytest.raises(DataError, match="x.npz: no finite pixel left"):
        replace_non_finite(np.full((2, 1, 2, 2), np.inf), Path("x.npz"))


def test_npz_crops_with_nan_are_cleaned(tmp_path):
    rng = np.random.default_rng(1)
    images = np.stack([_crop(rng) for _ in range(8)])
    images[2, 1, 3, 3] = np.nan
    (tmp_path / "crops").mkdir()
    np.savez(tmp_path / "crops/a.npz", images=images)
    report = ingest_crops(tmp_path / "crops", tmp_path / "p", IngestConfig(crop_size=SIZE))
    assert report.non_finite == [("a.npz", 1)] and report.n_cells == 8


def test_field_with_nan_is_cleaned_and_named(tmp_path):
    rng = np.random.default_rng(2)
    field = rng.normal(100, 5, (1, 120, 120)).astype(np.float32)
    yy, xx = np.mgrid[:120, :120]
    for cy, cx in [(30, 30), (30, 90), (90, 30), (90, 90)]:
        field[0][(yy - cy) ** 2 + (xx - cx) ** 2 < 64] += 1000
    field[0, 60, 60], field[0, 0, 5] = np.nan, np.inf
    path = tmp_path / "A01.tif"
    tifffile.imwrite(path, field)
    empty = tmp_path / "A02.tif"
    tifffile.imwrite(empty, np.full((1, 120, 120), np.nan, np.float32))
    specs = [FieldSpec("A01", (path,)), FieldSpec("A02", (empty,))]
    report = ingest_fields(specs, tmp_path / "p", IngestConfig(crop_size=SIZE))
    assert report.non_finite == [(str(path), 2)] and report.n_cells == 4
    assert report.skipped[0][0] == "A02" and "no finite pixel" in report.skipped[0][1]
    ranges = json.loads((tmp_path / "p/pixels/parts.json").read_text())["parts"][0]["ranges"]
    assert np.isfinite(np.asarray(ranges["*"])).all()

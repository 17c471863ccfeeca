"""Synthetic whole fields with true masks (datasets.fields.demo)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from datasets.errors import DataError
from datasets.fields.demo import (
    FILENAME_PATTERN,
    MULTICHANNEL_PATTERN,
    PHENOTYPES,
    generate_demo_fields,
    make_field,
)
from datasets.segmentation.classical import segment_field
from datasets.segmentation.metrics import score_segmentation


def test_make_field_is_deterministic_by_seed():
    a = make_field(np.random.default_rng(7), size=128)
    b = make_field(np.random.default_rng(7), size=128)
    c = make_field(np.random.default_rng(8), size=128)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_image_and_phenotypes_agree(seed):
    image, mask, phenotypes = make_field(np.random.default_rng(seed), size=192)
    assert image.shape == (2, 192, 192) and image.dtype == np.uint16
    assert mask.shape == (192, 192) and mask.dtype == np.int32
    n = int(mask.max())
    assert n > 5
    assert set(np.unique(mask)) == set(range(n + 1))  # consecutive, none empty
    assert set(phenotypes) == set(range(1, n + 1))
    assert set(phenotypes.values()) <= set(PHENOTYPES)
    dna, cyto = image.astype(float)
    assert np.median(dna[mask > 0]) > np.median(dna[mask == 0]) + 3 * dna[mask == 0].std() / 4
    assert cyto[mask > 0].mean() > cyto[mask == 0].mean()  # cells around nuclei, not everywhere


def test_every_phenotype_appears_and_sizes_vary():
    rng = np.random.default_rng(3)
    seen: set[str] = set()
    radii = []
    for _ in range(6):
        _, mask, phenotypes = make_field(rng, size=256)
        seen |= set(phenotypes.values())
        areas = np.bincount(mask.ravel())[1:]
        radii.append(np.sqrt(np.median(areas) / np.pi))
    assert seen == set(PHENOTYPES)
    assert max(radii) > 1.6 * min(radii)  # nuclear scale differs between fields


def test_object_count_channels_and_dtype_options():
    image, mask, phenotypes = make_field(np.random.default_rng(0), 128, 12, 3, np.uint8)
    assert image.shape == (3, 128, 128) and image.dtype == np.uint8
    assert mask.max() == 12 and len(phenotypes) == 12
    assert make_field(np.random.default_rng(0), 64, n_objects=0)[1].max() == 0
    with pytest.raises(DataError, match="dtype float32 is not supported"):
        make_field(np.random.default_rng(0), dtype=np.float32)
    with pytest.raises(DataError, match="1-5 channels"):
        make_field(np.random.default_rng(0), channels=6)


def test_classical_segmentation_finds_demo_nuclei():
    rng = np.random.default_rng(11)
    scores = [score_segmentation(m, segment_field(img)) for img, m, _ in
              (make_field(rng, size=256) for _ in range(3))]  # fmt: skip
    assert np.mean([s.f1 for s in scores]) > 0.75


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_generate_demo_fields_layout_and_truth(tmp_path):
    out = tmp_path / "fields"
    summary = generate_demo_fields(out, n_fields=5, size=96, seed=2)
    assert summary.n_fields == 5 and summary.pattern == FILENAME_PATTERN
    assert summary.fields == ("P1_B02_s1", "P1_B02_s2", "P1_C02_s1", "P2_B02_s1", "P2_B02_s2")
    rows = list(csv.DictReader(open(out / "objects.csv")))
    assert len(rows) == summary.n_objects == sum(summary.class_counts.values())
    for key in summary.fields:
        plate, well, site = key.split("_")
        channels = [out / FILENAME_PATTERN.format(plate=plate, well=well, site=site[1:], channel=c)
                    for c in (1, 2)]  # fmt: skip
        images = [tifffile.imread(p) for p in channels]
        assert all(i.shape == (96, 96) and i.dtype == np.uint16 for i in images)
        mask = tifffile.imread(summary.mask_dir / f"{key}.tif")
        assert mask.shape == (96, 96) and mask.dtype == np.uint16
        objects = {int(r["object"]): r["phenotype"] for r in rows if r["field"] == key}
        assert set(objects) == set(range(1, int(mask.max()) + 1))
    assert not any(out.glob("*_w3.tif"))


def test_same_seed_same_bytes_and_multichannel_layout(tmp_path):
    generate_demo_fields(tmp_path / "a", n_fields=2, size=80, seed=4)
    generate_demo_fields(tmp_path / "b", n_fields=2, size=80, seed=4)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    summary = generate_demo_fields(
        tmp_path / "m", n_fields=2, size=80, seed=4, layout="multichannel"
    )
    assert summary.pattern == MULTICHANNEL_PATTERN
    stacked = tifffile.imread(tmp_path / "m" / "P1_B02_s1.tif")
    per_channel = [tifffile.imread(tmp_path / "a" / f"P1_B02_s1_w{c}.tif") for c in (1, 2)]
    assert stacked.shape == (2, 80, 80) and np.array_equal(stacked, np.stack(per_channel))


def test_refuses_a_foreign_folder_and_replaces_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty and holds no earlier demo fields"):
        generate_demo_fields(foreign, n_fields=1, size=64)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "demo"
    generate_demo_fields(out, n_fields=3, size=64, seed=0)
    generate_demo_fields(out, n_fields=1, size=64, seed=1)  # an earlier demo: replaced
    assert sorted(p.name for p in out.glob("*.tif")) == ["P1_B02_s1_w1.tif", "P1_B02_s1_w2.tif"]
    assert sorted(p.name for p in (out / "masks").glob("*.tif")) == ["P1_B02_s1.tif"]
    with pytest.raises(DataError, match="layout"):
        generate_demo_fields(tmp_path / "x", layout="stacked")

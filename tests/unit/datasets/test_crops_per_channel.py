"""Crops held in one file per channel: grouped by --pattern, or named in a hint without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from datasets.cells import read_cells
from datasets.config import CropSource, IngestConfig
from datasets.crops.ingest import ingest_crops
from datasets.errors import DataError
from datasets.pixels.store import PixelStore

SMALL = IngestConfig(crop_size=32, scale=1.0)


def _write(folder: Path, n_cells: int, n_channels: int, skip: tuple[int, int] | None = None):
    """cell{i}_w{c}.tif with channel c filled by 100 * c + i (so stacking order shows)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_cells):
        for c in range(1, n_channels + 1):
            if (i, c) == skip:
                continue
            plane = np.full((24, 24), 100 * c + i, dtype=np.uint16)
            tifffile.imwrite(folder / f"plate{i % 2}_cell{i}_w{c}.tif", plane)


def test_pattern_groups_channel_files_into_one_crop_with_metadata(tmp_path: Path, project: Path):
    _write(tmp_path / "crops", 4, 3)
    source = CropSource(tmp_path / "crops", pattern="{plate}_{cell}_w{channel}.tif")
    report = ingest_crops(source, project, SMALL)
    assert (report.n_cells, report.n_channels, report.n_files) == (4, 3, 12)
    table = read_cells(project).sort_values("cell")
    assert table["source"].iloc[0] == "plate0_cell0_w1.tif" and table["cell"].iloc[1] == "cell1"
    assert table["plate"].tolist() == ["plate0", "plate1", "plate0", "plate1"]
    raw = PixelStore(project).read_raw([table["cell_id"].iloc[1]])[0]  # cell1, channel order
    assert [int(raw[c].max()) for c in range(3)] == [101, 201, 301]


def test_pattern_skips_a_cell_with_a_missing_channel_file(tmp_path: Path, project: Path):
    _write(tmp_path / "crops", 4, 3, skip=(2, 3))
    source = CropSource(tmp_path / "crops", pattern="{plate}_{cell}_w{channel}.tif")
    report = ingest_crops(source, project, SMALL)
    assert report.n_cells == 3
    assert any("missing channel 3" in reason for _, reason in report.skipped)


def test_pattern_that_matches_nothing_is_a_one_line_error(tmp_path: Path, project: Path):
    _write(tmp_path / "crops", 2, 2)
    with pytest.raises(DataError, match="no crop matches pattern"):
        ingest_crops(CropSource(tmp_path / "crops", pattern="{cell}_c{channel}.png"), project)


def test_channel_files_without_a_pattern_name_the_pattern_to_use(tmp_path: Path, project: Path):
    _write(tmp_path / "crops", 3, 2)
    report = ingest_crops(tmp_path / "crops", project, SMALL)
    assert report.n_cells == 6  # read one by one, as asked, but the report says how to group
    assert any("--pattern '{cell}_w{channel}.tif'" in note for note in report.notes)


def test_single_channel_crops_named_by_number_get_no_hint(tmp_path: Path, project: Path):
    folder = tmp_path / "crops"
    folder.mkdir()
    for i in range(6):
        tifffile.imwrite(folder / f"cell_{i}.tif", np.full((24, 24), i + 1, dtype=np.uint16))
    report = ingest_crops(folder, project, SMALL)
    assert not any("--pattern" in note for note in report.notes)


def test_the_hint_survives_a_cell_missing_one_channel_file(tmp_path: Path, project: Path):
    _write(tmp_path / "crops", 12, 3, skip=(5, 3))
    report = ingest_crops(tmp_path / "crops", project, SMALL)
    note = next(n for n in report.notes if "--pattern" in n)
    assert "3 channels of 12 cells, 1 of them with other channels" in note

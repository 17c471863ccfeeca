"""Whole fields and CellProfiler objects: one crop size for the screen from the objects' sizes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from datasets.cells import read_manifest
from datasets.config import IngestConfig
from datasets.crops.resize import choose_crop_size
from datasets.fields.ingest import ingest_fields
from datasets.fields.sizes import given_sides
from datasets.fields.spec import FieldSpec
from datasets.pixels.store import PixelStore

SHAPE = (400, 400)


def big_field(tmp_path, key="A01", radius=40, centres=((100, 100), (100, 300), (300, 200))):
    """A field of discs of the given radius (side 2r + 1), saved with its mask."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    mask = np.zeros(SHAPE, np.uint16)
    for k, (y, x) in enumerate(centres, start=1):
        mask[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = k
    image = np.where(mask > 0, 1000, 100).astype(np.uint16)[None]
    (tmp_path / "masks").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(tmp_path / f"{key}.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "masks" / f"{key}.tif", mask)
    return FieldSpec(key, (tmp_path / f"{key}.tif",), {}, tmp_path / "masks" / f"{key}.tif")


def test_rule_keeps_the_default_for_small_objects_and_fits_large_ones():
    assert choose_crop_size([20, 25, 30]) == 64  # fits: never smaller than the default
    assert choose_crop_size([81] * 10) == 104  # 81 * 1.25 = 101.25, up to a multiple of 8
    assert choose_crop_size([81] * 19 + [400]) == 104  # the 90% quantile, not the largest
    assert choose_crop_size([2000]) == 512
    assert choose_crop_size([]) == 64 and choose_crop_size([np.nan]) == 64


def test_fields_of_large_objects_get_one_larger_crop_size(tmp_path):
    spec = big_field(tmp_path / "f")
    project = tmp_path / "p"
    project.mkdir()
    report = ingest_fields([spec], project, IngestConfig(crop_size=None))
    assert report.crop_size == 104 and read_manifest(project)["crop_size"] == 104
    assert PixelStore(project).crop_size == 104
    assert any("Crop size 104 px chosen" in note for note in report.notes)
    assert "crops 104x104" in report.summary()
    # adding to the project: its crop size, whatever the new fields' objects
    small = big_field(tmp_path / "g", key="B01", radius=5)
    again = ingest_fields([small], project, IngestConfig(crop_size=None))
    assert again.crop_size == 104 and PixelStore(project).crop_size == 104


def test_a_given_crop_size_overrides(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    report = ingest_fields([big_field(tmp_path / "f")], project, IngestConfig(crop_size=48))
    assert report.crop_size == 48 and not any("Crop size" in n for n in report.notes)


def test_cellprofiler_sizes_from_areashape():
    major = pd.DataFrame({"cp_AreaShape_MajorAxisLength": [30.0, 90.0], "cp_AreaShape_Area": 1})
    assert given_sides(major).tolist() == [30.0, 90.0]
    area = pd.DataFrame({"cp_AreaShape_Area": [np.pi * 50**2]})
    assert given_sides(area) == pytest.approx([100.0])
    assert np.isnan(given_sides(pd.DataFrame({"y": [1.0]}))).all()


def test_project_stores_the_number_and_add_reuses_it(tmp_path):
    from labeling.config import load_config
    from labeling.project import FieldSource, add_fields, create_project_from_fields

    source = FieldSource([big_field(tmp_path / "f")], segment="given")
    project, report = create_project_from_fields(
        tmp_path / "p", source, IngestConfig(crop_size=None)
    )
    assert load_config(tmp_path / "p" / "project.toml").ingest.crop_size == 104
    added = add_fields(
        project, FieldSource([big_field(tmp_path / "g", key="B01", radius=5)], "given")
    )
    assert added.crop_size == 104
    project.close()


def test_cli_says_and_stores_the_chosen_crop_size(tmp_path, capsys):
    from labeling.cli.commands import main
    from labeling.config import load_config

    big_field(tmp_path / "f")
    argv = ["init", str(tmp_path / "p"), "--fields", str(tmp_path / "f"),
            "--masks", str(tmp_path / "f" / "masks")]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert "Crop size 104 px chosen" in capsys.readouterr().out
    assert load_config(tmp_path / "p" / "project.toml").ingest.crop_size == 104
    assert main([*argv[:1], str(tmp_path / "q"), *argv[2:], "--crop-size", "48"]) == 0
    assert load_config(tmp_path / "q" / "project.toml").ingest.crop_size == 48


def test_an_unchosen_crop_size_is_not_read_as_a_number():
    from datasets.errors import DataError

    with pytest.raises(DataError, match="not chosen yet"):
        _ = IngestConfig(crop_size=None).crop_px

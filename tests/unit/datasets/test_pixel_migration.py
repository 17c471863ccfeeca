"""Projects stored as .npy parts (earlier versions) become sharded Zarr in place, with a backup."""

from __future__ import annotations

import json
import logging
import shutil
import threading

import numpy as np
import pytest

import datasets.pixels.npy as npy_module
import datasets.pixels.npy_migration as migration
import datasets.pixels.writer as writer_module
from datasets import cells
from datasets.cells import read_cells, read_manifest
from datasets.config import IngestConfig
from datasets.crops.ingest import ingest_crops
from datasets.errors import DataError
from datasets.fields.store import mask_part_file, npy_mask_part_file
from datasets.pixels.arrays import load_part, part_file
from datasets.pixels.npy import npy_part_file
from datasets.pixels.npy_migration import BACKUP_DIR, migrate_pixels, needs_migration
from datasets.pixels.plates import open_part_view
from datasets.pixels.store import PixelStore


def make_old_format(project, masks=None):
    """Store a project's parts the way earlier versions did: ``pixels/part-NNNN.npy`` (and
    ``mask-part-NNNN.npy``), parts.json of format 1 naming the .npy files."""
    manifest, table = read_manifest(project), read_cells(project)
    for record in manifest["parts"]:
        part = record["part"]
        in_part = (table["part"] == part).to_numpy()
        rows = table.loc[in_part, "row"].to_numpy()  # the part's rows in table order
        np.save(npy_part_file(project, part), open_part_view(project, part).take(rows))
        table.loc[in_part, "row"] = np.arange(len(rows))
        record["file"] = f"part-{part:04d}.npy"
        record.pop("segments", None)
    for path in [*(project / "pixels").glob("*.zarr"), project / "pixels" / "plates"]:
        shutil.rmtree(path, ignore_errors=True)
    table.to_parquet(project / "cells.parquet", index=False)
    for part, mask in (masks or {}).items():
        np.save(npy_mask_part_file(project, part), mask)
    manifest["format"] = 1
    (project / "pixels" / "parts.json").write_text(json.dumps(manifest, indent=1))


@pytest.fixture
def two_parts(make, tmp_path, project, rng):
    """A project of two ingests (uint16 and uint8 crops); returns (project, ids, raw crops)."""
    images = np.stack([make.blob(rng, channels=2, size=24) for _ in range(30)])
    for i in range(3):
        make.npz(tmp_path / "in" / f"f{i}.npz", images[10 * i : 10 * (i + 1)])
    ingest_crops(tmp_path / "in", project, IngestConfig(crop_size=24))
    small = np.stack([make.blob(rng, channels=2, size=24, dtype=np.uint8) for _ in range(7)])
    make.npz(tmp_path / "in8" / "g.npz", small)
    ingest_crops(tmp_path / "in8", project, IngestConfig(crop_size=24))
    ids = read_cells(project)["cell_id"].tolist()
    return project, ids, PixelStore(project).read_raw(ids)


def test_constants_match_the_cell_table_module():
    assert migration._PIXELS_DIR == cells.PIXELS_DIR
    assert migration._MANIFEST_FILE == cells.MANIFEST_FILE
    assert migration._ZARR_FORMAT == min(cells.READABLE_FORMATS)


def test_old_npy_parts_are_converted_verified_and_backed_up(two_parts, caplog):
    project, ids, raw = two_parts
    masks = (np.random.default_rng(0).random((30, 24, 24)) > 0.5).astype(np.uint8)
    make_old_format(project, {0: masks})
    with pytest.raises(DataError, match=r"parts\.json: pixels stored as \.npy parts .*convert"):
        PixelStore(project)
    assert needs_migration(project)
    with caplog.at_level(logging.INFO, logger="datasets.pixels.npy_migration"):
        moved = migrate_pixels(project)
    assert moved == ["part-0000.npy", "mask-part-0000.npy", "part-0001.npy"]
    lines = [r.getMessage() for r in caplog.records]
    assert sum("converted to" in line and "verified" in line for line in lines) == 3
    backup = project / "pixels" / BACKUP_DIR
    assert sorted(p.name for p in backup.iterdir()) == sorted(moved)
    assert not list((project / "pixels").glob("*.npy"))
    manifest = read_manifest(project)
    assert manifest["format"] == 2
    assert [p["file"] for p in manifest["parts"]] == ["part-0000.zarr", "part-0001.zarr"]
    store = PixelStore(project)
    np.testing.assert_array_equal(store.read_raw(ids), raw)
    np.testing.assert_array_equal(store.read_raw(ids[::-3]), raw[::-3])
    np.testing.assert_array_equal(load_part(mask_part_file(project, 0)), masks)
    np.testing.assert_array_equal(np.load(backup / "part-0001.npy"), raw[30:])
    # a second opening does nothing
    stamp = (part_file(project, 0) / "zarr.json").stat().st_mtime_ns
    assert not needs_migration(project) and migrate_pixels(project) == []
    assert (part_file(project, 0) / "zarr.json").stat().st_mtime_ns == stamp


def test_a_crash_mid_conversion_leaves_the_npy_files_and_the_next_opening_finishes(
    two_parts, monkeypatch
):
    project, ids, raw = two_parts
    make_old_format(project)
    real = npy_module.copy_npy_to_zarr
    calls = []

    def dies_on_the_second_part(src, dst, *args):
        calls.append(src.name)
        if len(calls) == 2:
            real(src, dst, *args)
            shutil.rmtree(dst / "c")  # a half-written copy, then the process dies
            raise KeyboardInterrupt
        return real(src, dst, *args)

    monkeypatch.setattr(npy_module, "copy_npy_to_zarr", dies_on_the_second_part)
    with pytest.raises(KeyboardInterrupt):
        migrate_pixels(project)
    assert npy_part_file(project, 0).is_file() and npy_part_file(project, 1).is_file()
    assert read_manifest(project)["format"] == 1 and not (project / "pixels" / BACKUP_DIR).exists()
    monkeypatch.setattr(npy_module, "copy_npy_to_zarr", real)
    converted = []
    monkeypatch.setattr(npy_module, "copy_npy_to_zarr",
                        lambda src, dst: converted.append(src.name) or real(src, dst))  # fmt: skip
    assert migrate_pixels(project) == ["part-0000.npy", "part-0001.npy"]
    assert converted == ["part-0001.npy"]  # part 0's verified copy is kept, part 1 redone
    np.testing.assert_array_equal(PixelStore(project).read_raw(ids), raw)


def test_a_wrong_copy_is_redone_and_a_damaged_npy_is_one_line(two_parts):
    project, ids, raw = two_parts
    make_old_format(project)
    writer_module.write_part(part_file(project, 0), np.zeros((30, 2, 24, 24), np.uint16))
    migrate_pixels(project)  # the leftover copy differs from the .npy: converted again
    np.testing.assert_array_equal(PixelStore(project).read_raw(ids), raw)

    shutil.rmtree(project / "pixels" / BACKUP_DIR)
    make_old_format(project)
    npy_part_file(project, 1).write_bytes(b"not an array")
    with pytest.raises(DataError, match=r"part-0001\.npy: damaged \(") as err:
        migrate_pixels(project)
    assert "\n" not in str(err.value)
    assert npy_part_file(project, 0).is_file()  # nothing moved


def test_two_processes_never_convert_at_once(two_parts):
    project, ids, raw = two_parts
    make_old_format(project)
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(migrate_pixels(project)))
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=len) == [[], ["part-0000.npy", "part-0001.npy"]]
    np.testing.assert_array_equal(PixelStore(project).read_raw(ids), raw)

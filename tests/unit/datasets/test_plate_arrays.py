"""One Zarr array per plate: appending to a sharded array, ingests that append to their
plates' arrays, parts over several arrays, and projects stored one array per part."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

import datasets.pixels.arrays as pixels_module
import datasets.pixels.writer as writer_module
from datasets.cells import read_cells, read_manifest, write_manifest
from datasets.config import IngestConfig
from datasets.crops.ingest import ingest_crops
from datasets.errors import DataError
from datasets.pixels.arrays import PartArray, load_part
from datasets.pixels.plate_migration import BACKUP_DIR, migrate_to_plates, needs_plate_layout
from datasets.pixels.plates import (
    PLATES_DIR,
    PartPixels,
    PartView,
    Segment,
    copy_cells,
    open_part_view,
    plan_copy,
    plate_file,
    read_in_spans,
    segments_of,
    stored_segment,
)
from datasets.pixels.store import PixelStore
from datasets.pixels.writer import ZarrPartWriter, write_part

SMALL = IngestConfig(crop_size=24)


def _rows(n: int, seed: int, dtype=np.uint16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, (n, 2, 3, 3)).astype(dtype)


# ---------------------------------------------------------------- appending to an array


@pytest.mark.parametrize("threads", [1, 3])
def test_appending_keeps_the_old_rows_bytes_and_zarr_reads_the_whole(tmp_path, monkeypatch,
                                                                      threads):  # fmt: skip
    monkeypatch.setattr(writer_module, "_SHARD_MAX_ROWS", 4)
    path = tmp_path / "p.zarr"
    first, second, third = _rows(10, 0), _rows(7, 1), _rows(4, 2)
    write_part(path, first)
    old_shard = (path / "c" / "2" / "0" / "0" / "0").read_bytes()  # rows 8, 9 of 4 per shard
    for rows in (second, third):
        writer = ZarrPartWriter(
            path, rows.shape, rows.dtype, threads=threads, at=len(PartArray(path))
        )
        assert writer.start == len(PartArray(path))
        writer.append(rows[:3])
        writer.append(rows[3:])
        assert writer.close() == len(rows)
    whole = np.concatenate([first, second, third])
    np.testing.assert_array_equal(load_part(path), whole)
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(path), mode="r")[:]), whole)
    new_shard = (path / "c" / "2" / "0" / "0" / "0").read_bytes()
    index_bytes = 4 * 16 + 4
    assert new_shard[: len(old_shard) - index_bytes] == old_shard[:-index_bytes]
    assert not (tmp_path / ".p.zarr.tmp").exists()


def test_an_interrupted_append_leaves_the_array_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "_SHARD_MAX_ROWS", 4)
    path = tmp_path / "p.zarr"
    first = _rows(6, 0)
    write_part(path, first)
    writer = ZarrPartWriter(path, (9, 2, 3, 3), np.uint16, threads=1, at=6)
    writer.append(_rows(5, 1))  # shard 1 rewritten, staged; the rest never comes
    with pytest.raises(DataError, match="5 of 9 rows written"):
        writer.close()
    np.testing.assert_array_equal(load_part(path), first)
    assert not (tmp_path / ".p.zarr.tmp").exists()


def test_appending_another_dtype_or_shape_is_refused(tmp_path):
    path = tmp_path / "p.zarr"
    write_part(path, _rows(5, 0))
    with pytest.raises(DataError, match=r"p\.zarr: stores uint16 crops of shape \(2, 3, 3\)"):
        ZarrPartWriter(path, (3, 2, 3, 3), np.uint8, at=5)
    with pytest.raises(DataError, match="cannot append uint16 crops of shape"):
        ZarrPartWriter(path, (3, 1, 3, 3), np.uint16, at=5)


# ---------------------------------------------------------------- parts over several arrays


def test_a_part_view_maps_part_rows_to_its_arrays(tmp_path):
    a, b = _rows(8, 0), _rows(5, 1)
    write_part(tmp_path / "a.zarr", a)
    write_part(tmp_path / "b.zarr", b)
    view = PartView(tmp_path, [Segment(4, 3, "b.zarr", 2), Segment(0, 4, "a.zarr", 3)])
    expected = np.concatenate([a[3:7], b[2:5]])
    assert len(view) == 7 and view.shape == (7, 2, 3, 3) and view.dtype == np.uint16
    np.testing.assert_array_equal(view.rows(0, 7), expected)
    np.testing.assert_array_equal(view.rows(2, 6), expected[2:6])
    np.testing.assert_array_equal(view.take(np.array([6, 0, 4, 4])), expected[[6, 0, 4, 4]])
    with pytest.raises(DataError, match="no stored pixels for part row 7"):
        view.take(np.array([7]))


def test_rows_are_read_in_spans_with_few_reads():
    spans = []

    def read_span(start, stop):
        spans.append((start, stop))
        return np.arange(start, stop) * 10

    rows = np.array([0, 1, 3, 4, 100, 101, 500])
    np.testing.assert_array_equal(read_in_spans(read_span, rows), rows * 10)
    assert spans == [(0, 5), (100, 102), (500, 501)]


def test_plate_file_names_are_safe_and_distinct():
    names = {plate_file(p) for p in ("A/1", "A_1", "A 1", "..", "")}
    assert len(names) == 5
    assert all(n.startswith(f"{PLATES_DIR}/") and "/" not in n[len(PLATES_DIR) + 1 :]
               and n.endswith(".zarr") for n in names)  # fmt: skip
    assert plate_file("P1", masks=True).endswith(".mask.zarr")


# ---------------------------------------------------------------- ingests append per plate


def _plate_folder(make, root: Path, plates: list[str | None], seed: int, dtype=np.uint16) -> dict:
    """One 2-channel crop per entry of ``plates`` (None: no plate in metadata.csv)."""
    rng = np.random.default_rng(seed)
    lines, crops = ["path,plate"], {}
    for i, plate in enumerate(plates):
        image = make.blob(rng, channels=2, size=20).astype(dtype)
        make.tiff(root / f"c{i:02d}.tif", image)
        crops[f"c{i:02d}.tif"] = image
        lines.append(f"c{i:02d}.tif,{plate if plate is not None else ''}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return crops


def _raw_by_source(project: Path) -> dict[str, np.ndarray]:
    """Each cell's stored crop by ``part/source``."""
    table = read_cells(project, ["cell_id", "source", "part"])
    raw = PixelStore(project).read_raw(table["cell_id"].tolist())
    keys = table["part"].astype(str) + "/" + table["source"]
    return dict(zip(keys, raw, strict=True))


def test_each_plate_is_one_array_that_add_appends_to(make, tmp_path, project):
    first = _plate_folder(make, tmp_path / "a", ["P1", "P2", "P1", None, "P2", "P1"], seed=0)
    ingest_crops(tmp_path / "a", project, SMALL)
    second = _plate_folder(make, tmp_path / "b", ["P3", "P1", "P1"], seed=1)
    ingest_crops(tmp_path / "b", project, SMALL)
    pixels = project / "pixels"
    assert sorted(p.name for p in (pixels / PLATES_DIR).iterdir()) == sorted(
        Path(plate_file(p)).name for p in ("P1", "P2", "P3")
    )
    assert len(PartArray(pixels / plate_file("P1"))) == 5  # 3 cells, then 2 more
    assert (pixels / "part-0000.zarr").is_dir() and not (pixels / "part-0001.zarr").exists()
    manifest = read_manifest(project)
    assert manifest["format"] == 3
    assert [s.file for s in segments_of(manifest["parts"][1])] == [plate_file("P1"),
                                                                  plate_file("P3")]  # fmt: skip
    stored = _raw_by_source(project)
    assert len(stored) == 9
    for part, crops in enumerate((first, second)):
        for name, image in crops.items():
            np.testing.assert_array_equal(stored[f"{part}/{name}"][:, 2:22, 2:22], image)
    table = read_cells(project)
    new = table[table["part"] == 1]
    assert new["source"].tolist() == ["c00.tif", "c01.tif", "c02.tif"]  # files' order kept
    assert new["row"].tolist() == [2, 0, 1]  # P1's cells first, then P3's
    np.testing.assert_array_equal(
        open_part_view(project, 1).take(np.array([2]))[0, :, 2:22, 2:22], second["c00.tif"]
    )


def test_crops_of_another_bit_depth_under_an_existing_plate_are_refused(make, tmp_path,
                                                                       project):  # fmt: skip
    _plate_folder(make, tmp_path / "a", ["P1", "P1"], seed=0)
    ingest_crops(tmp_path / "a", project, SMALL)
    before = (read_cells(project), read_manifest(project))
    _plate_folder(make, tmp_path / "b", ["P2", "P1"], seed=1, dtype=np.uint8)
    with pytest.raises(DataError, match=r"plate 'P1' stores uint16 crops .* these are uint8"):
        ingest_crops(tmp_path / "b", project, SMALL)
    assert read_cells(project).equals(before[0]) and read_manifest(project) == before[1]
    assert not (project / "pixels" / plate_file("P2")).exists()  # refused before any write
    assert not list((project / "pixels").glob(".*tmp"))


def _as_format_2(project: Path) -> None:
    """Lay the project out as format 2 did: each part's rows, in table order, in one array."""
    manifest, table = read_manifest(project), read_cells(project)
    for record in manifest["parts"]:
        part = int(record["part"])
        in_part = (table["part"] == part).to_numpy()
        view = open_part_view(project, part)
        write_part(project / "pixels" / f"part-{part:04d}.zarr",
                   view.take(table.loc[in_part, "row"].to_numpy()))  # fmt: skip
        table.loc[in_part, "row"] = np.arange(in_part.sum())
        del record["segments"]
        record["file"] = f"part-{part:04d}.zarr"
    pixels_module.remove_path(project / "pixels" / PLATES_DIR)  # noqa: SLF001
    manifest["format"] = 2
    write_manifest(project, manifest)
    table.to_parquet(project / "cells.parquet", index=False)


def test_a_project_stored_one_array_per_part_reads_and_takes_new_plates(make, tmp_path,
                                                                         project):  # fmt: skip
    first = _plate_folder(make, tmp_path / "a", ["P1", "P2", "P1"], seed=0)
    ingest_crops(tmp_path / "a", project, SMALL)
    _as_format_2(project)
    record = read_manifest(project)["parts"][0]
    assert segments_of(record) == [Segment(0, 3, "part-0000.zarr", 0, "mask-part-0000.zarr")]
    for name, image in first.items():
        np.testing.assert_array_equal(_raw_by_source(project)[f"0/{name}"][:, 2:22, 2:22], image)
    _plate_folder(make, tmp_path / "b", ["P1"], seed=1)
    ingest_crops(tmp_path / "b", project, SMALL)
    assert read_manifest(project)["format"] == 3
    assert len(_raw_by_source(project)) == 4
    assert len(PartArray(project / "pixels" / plate_file("P1"))) == 1


def test_a_format_2_project_is_laid_out_per_plate_once(make, tmp_path, project):
    _plate_folder(make, tmp_path / "a", ["P1", "P2", None, "P1", "P1", "P2"], seed=0)
    ingest_crops(tmp_path / "a", project, SMALL)
    _plate_folder(make, tmp_path / "b", ["P2", "P3"], seed=1)
    ingest_crops(tmp_path / "b", project, SMALL)
    _as_format_2(project)
    before = _raw_by_source(project)
    cells_bytes = (project / "cells.parquet").read_bytes()
    assert needs_plate_layout(project)
    moved = migrate_to_plates(project)
    assert moved == ["part-0001.zarr"]  # part 0 keeps its cell without a plate
    assert (project / "pixels" / BACKUP_DIR / "part-0001.zarr").is_dir()
    assert (project / "cells.parquet").read_bytes() == cells_bytes  # rows keep their meaning
    manifest = read_manifest(project)
    assert manifest["format"] == 3 and all("file" not in r for r in manifest["parts"])
    runs = [(s.start, s.n, s.file) for s in segments_of(manifest["parts"][0])]
    assert runs == [(0, 1, plate_file("P1")), (1, 1, plate_file("P2")),
                    (2, 1, "part-0000.zarr"), (3, 2, plate_file("P1")),
                    (5, 1, plate_file("P2"))]  # fmt: skip
    assert len(PartArray(project / "pixels" / plate_file("P2"))) == 3
    after = _raw_by_source(project)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    assert not needs_plate_layout(project) and migrate_to_plates(project) == []


def test_zarr_json_of_an_appended_array_names_its_new_length(make, tmp_path, project):
    _plate_folder(make, tmp_path / "a", ["P1"] * 3, seed=0)
    ingest_crops(tmp_path / "a", project, SMALL)
    _plate_folder(make, tmp_path / "b", ["P1"] * 2, seed=1)
    ingest_crops(tmp_path / "b", project, SMALL)
    meta = json.loads((project / "pixels" / plate_file("P1") / "zarr.json").read_text())
    assert meta["shape"] == [5, 2, 24, 24]


def test_a_copy_task_run_again_writes_the_same_rows_again(tmp_path):
    """A worker that dies after its append is retried: the rows land where they did."""
    write_part(tmp_path / plate_file("P1"), _rows(5, 0))
    new = _rows(6, 1)
    pixels = PartPixels(6, (2, 3, 3), np.dtype(np.uint16), lambda rows: new[rows])
    task = plan_copy(tmp_path, pixels, np.array([0, 1, 2, 4, 5]), "P1", part=0)
    assert task.segment.at == 5 and task.runs == ((0, 3), (4, 6))
    for _ in range(2):
        assert copy_cells(task) == 5
    stored = load_part(tmp_path / plate_file("P1"))
    assert len(stored) == 10
    np.testing.assert_array_equal(stored[5:], new[[0, 1, 2, 4, 5]])
    assert stored_segment(task, 7) == Segment(7, 5, plate_file("P1"), 5)

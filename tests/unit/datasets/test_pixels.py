"""PixelStore reads, the windowed temporary writer, the sharded Zarr parts and their damage."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

import datasets.pixels.arrays as pixels_module
import datasets.pixels.npy as npy_module
import datasets.pixels.store as pixel_store_module
import datasets.pixels.writer as writer_module
from datasets.cells import read_cells, read_manifest
from datasets.config import IngestConfig
from datasets.crops.ingest import ingest_crops
from datasets.errors import DataError
from datasets.normalise import apply_ranges
from datasets.pixels.arrays import PartArray, load_part
from datasets.pixels.npy import PartWriter, copy_npy_to_zarr, read_rows
from datasets.pixels.store import PixelStore
from datasets.pixels.writer import ZarrPartWriter, write_part


@pytest.fixture
def npz_project(make, tmp_path, project, rng):
    """A project of 3 npz files x 10 cells, 2 channels, 24x24 crops; returns (project, images)."""
    images = np.stack([make.blob(rng, channels=2, size=24) for _ in range(30)])
    for i in range(3):
        make.npz(tmp_path / "in" / f"f{i}.npz", images[10 * i : 10 * (i + 1)])
    ingest_crops(tmp_path / "in", project, IngestConfig(crop_size=24))
    return project, images


def test_store_shape_attributes(npz_project):
    project, _ = npz_project
    store = PixelStore(project)
    assert (store.n_cells, store.n_channels, store.crop_size) == (30, 2, 24)
    assert store.dtype == np.uint16


def test_read_raw_any_order_with_repeats(npz_project):
    project, images = npz_project
    store = PixelStore(project)
    ids = read_cells(project)["cell_id"].tolist()
    assert ids[12] == "f1.npz:2"
    picked = [ids[29], ids[3], ids[12], ids[3]]
    np.testing.assert_array_equal(store.read_raw(picked), images[[29, 3, 12, 3]])
    for rows in ([3, 3, 5], [7, 8, 9], [5, 4], []):  # repeats and gaps, a run, reversed, none
        np.testing.assert_array_equal(store.read_raw([ids[r] for r in rows]), images[rows])


def test_read_is_normalised_with_the_stored_ranges(npz_project):
    project, images = npz_project
    store = PixelStore(project)
    ranges = np.array(read_manifest(project)["parts"][0]["ranges"]["*"])
    ids = read_cells(project)["cell_id"].tolist()
    crops = store.read([ids[5], ids[20]])
    assert crops.dtype == np.float32 and crops.min() >= 0 and crops.max() <= 1
    np.testing.assert_allclose(crops, apply_ranges(images[[5, 20]], ranges))
    assert crops.max() == 1.0 and crops.min() == 0.0  # range spans the data, clipped at ends


def test_iter_batches_covers_all_cells_in_table_order(npz_project):
    project, images = npz_project
    store = PixelStore(project)
    batches = list(store.iter_batches(batch_size=8))
    assert [len(ids) for ids, _ in batches] == [8, 8, 8, 6]
    all_ids = [i for ids, _ in batches for i in ids]
    assert all_ids == read_cells(project)["cell_id"].tolist()
    stacked = np.concatenate([crops for _, crops in batches])
    np.testing.assert_array_equal(stacked, store.read(all_ids))
    with pytest.raises(DataError, match="batch_size 0"):
        next(store.iter_batches(0))


def test_unknown_ids_and_missing_store(npz_project, tmp_path):
    project, _ = npz_project
    with pytest.raises(DataError, match=r"2 unknown cell id\(s\), e.g. \['nope', 'also'\]"):
        PixelStore(project).read(["f0.npz:0", "nope", "also"])
    with pytest.raises(DataError, match="no pixels stored"):
        PixelStore(tmp_path)
    ids = read_cells(project)["cell_id"].tolist()
    shutil.rmtree(project / "pixels" / "part-0000.zarr")
    with pytest.raises(DataError, match=r"part-0000\.zarr: damaged \(missing\)"):
        PixelStore(project).read([ids[0], ids[5]])


def test_store_spans_parts_of_different_dtypes(npz_project, make, tmp_path, rng):
    project, images = npz_project
    small = np.stack(
        [make.blob(rng, channels=2, size=24, dtype=np.uint8, peak=100) for _ in range(4)]
    )
    make.npz(tmp_path / "in8" / "f0.npz", small)  # same relative name as part 0's first file
    report = ingest_crops(tmp_path / "in8", project, IngestConfig(crop_size=24))
    assert report.dtype == "uint8"
    store = PixelStore(project)
    assert store.n_cells == 34 and store.dtype == np.uint16
    raw = store.read_raw(["f0.npz:1.2", "f0.npz:1"])
    np.testing.assert_array_equal(raw, np.stack([small[1], images[1]]))
    ranges = [np.array(p["ranges"]["*"]) for p in read_manifest(project)["parts"]]
    assert ranges[1][1, 1] < ranges[0][1, 1] / 2  # the uint8 part has its own, lower ranges
    np.testing.assert_allclose(
        store.read(["f0.npz:1.2", "f0.npz:1"]),
        np.stack([apply_ranges(small[1], ranges[1]), apply_ranges(images[1], ranges[0])]),
    )


def test_part_writer_windows(tmp_path, monkeypatch):
    monkeypatch.setattr(npy_module, "_WINDOW_BYTES", 3 * 2 * 4 * 4 * 2)  # 3 rows a window
    data = np.arange(10 * 2 * 4 * 4, dtype=np.uint16).reshape(10, 2, 4, 4)
    writer = PartWriter(tmp_path / "p.npy", data.shape, np.uint16)
    writer.write(0, data[:1])
    writer.write(1, data[1:8])  # crosses two window boundaries
    writer.write(8, data[8:])
    writer.close()
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), data)
    np.testing.assert_array_equal(read_rows(tmp_path / "p.npy", 4, 9), data[4:9])


def test_the_npy_copy_keeps_rows_and_channels_in_a_sharded_zarr_array(tmp_path, monkeypatch):
    monkeypatch.setattr(npy_module, "_WINDOW_BYTES", 64)  # force many chunks
    monkeypatch.setattr(writer_module, "_SHARD_MAX_ROWS", 4)  # 6 rows: shards of 4 and 2
    data = np.random.default_rng(1).random((9, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "src.npy", data)
    keep = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1], bool)
    n = copy_npy_to_zarr(tmp_path / "src.npy", tmp_path / "dst.zarr", keep, [0, 2])
    assert n == 6
    np.testing.assert_array_equal(load_part(tmp_path / "dst.zarr"), data[keep][:, [0, 2]])
    part = PartArray(tmp_path / "dst.zarr")
    assert part.rows_per_shard == 4 and part.dtype == np.float32
    assert sorted(p.name for p in (tmp_path / "dst.zarr" / "c").iterdir()) == ["0", "1"]
    assert not (tmp_path / ".dst.zarr.tmp").exists()  # staged, then moved into place
    np.testing.assert_array_equal(
        part.take(np.array([5, 0, 5, 3])), data[keep][[5, 0, 5, 3]][:, [0, 2]]
    )


def test_zarr_writer_refuses_a_short_or_long_part(tmp_path):
    writer = ZarrPartWriter(tmp_path / "p.zarr", (5, 2, 3, 3), np.uint8)
    writer.append(np.ones((3, 2, 3, 3), np.uint8))
    with pytest.raises(DataError, match=r"p\.zarr: 3 of 5 rows written"):
        writer.close()
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / ".p.zarr.tmp").exists()
    writer = ZarrPartWriter(tmp_path / "p.zarr", (2, 2, 3, 3), np.uint8)
    with pytest.raises(DataError, match="more than 2 rows"):
        writer.append(np.ones((3, 2, 3, 3), np.uint8))


def _cut_short(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _noise(path):
    path.write_bytes(bytes(range(256)) * 16)


def _flip_middle(path):
    data = bytearray(path.read_bytes())
    data[100:140] = b"\xa5" * 40  # inside the first crop's compressed bytes (row 8)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("spoil", [_cut_short, _noise, _flip_middle, lambda p: p.unlink()])
def test_a_damaged_shard_is_one_line_naming_its_file(tmp_path, monkeypatch, spoil):
    monkeypatch.setattr(writer_module, "_SHARD_MAX_ROWS", 8)
    data = np.random.default_rng(2).integers(0, 4000, (20, 2, 6, 6)).astype(np.uint16)
    write_part(tmp_path / "p.zarr", data)
    shard = tmp_path / "p.zarr" / "c" / "1" / "0" / "0" / "0"  # rows 8..15
    spoil(shard)
    part = PartArray(tmp_path / "p.zarr")
    np.testing.assert_array_equal(part.rows(0, 8), data[:8])  # other shards still read
    np.testing.assert_array_equal(part.take(np.array([19, 2])), data[[19, 2]])
    for read in (lambda: part.rows(4, 12), lambda: part.take(np.array([1, 8, 17]))):
        with pytest.raises(DataError, match=r"p\.zarr/c/1/0/0/0: damaged \(") as err:
            read()
        assert "\n" not in str(err.value)
        assert err.value.brief.startswith("p.zarr in the project's pixels folder is damaged")


def test_damaged_array_metadata_and_rows_beyond_the_part(tmp_path):
    write_part(tmp_path / "p.zarr", np.zeros((3, 1, 2, 2), np.uint8))
    with pytest.raises(DataError, match=r"p\.zarr: damaged \(3 rows, the cell table names row 5\)"):
        PartArray(tmp_path / "p.zarr").take(np.array([0, 5]))
    (tmp_path / "p.zarr" / "zarr.json").write_bytes(b"\x00garbage")
    with pytest.raises(DataError, match=r"zarr\.json: damaged"):
        PartArray(tmp_path / "p.zarr")


def test_read_batch_is_fast(make, tmp_path, project, rng):
    images = np.stack([make.blob(rng, channels=2, size=32) for _ in range(200)])
    for i in range(10):
        make.npz(tmp_path / "in" / f"f{i}.npz", images)
    ingest_crops(tmp_path / "in", project, IngestConfig(crop_size=32))
    store = PixelStore(project)
    ids = read_cells(project)["cell_id"].sample(1024, random_state=0).tolist()
    crops = store.read(ids)
    assert crops.shape == (1024, 2, 32, 32)
    start = time.perf_counter()
    store.read(ids)
    assert time.perf_counter() - start < 0.5  # ~20 ms on a laptop


def test_an_array_in_another_layout_is_read_through_zarr(tmp_path):
    import zarr

    data = np.random.default_rng(3).integers(0, 255, (7, 2, 4, 4)).astype(np.uint8)
    array = zarr.create_array(store=str(tmp_path / "p.zarr"), shape=data.shape, dtype=data.dtype,
                              chunks=(2, 2, 4, 4), fill_value=0)  # fmt: skip
    array[:] = data
    part = PartArray(tmp_path / "p.zarr")
    assert not part.direct and part.rows_per_shard == 2
    np.testing.assert_array_equal(part.take(np.array([6, 1, 1])), data[[6, 1, 1]])
    np.testing.assert_array_equal(part.rows(1, 6), data[1:6])
    (tmp_path / "p.zarr" / "c" / "1" / "0" / "0" / "0").unlink()  # rows 2, 3
    with pytest.raises(DataError, match=r"p\.zarr/c/1/0/0/0: damaged \(missing\)"):
        PartArray(tmp_path / "p.zarr").rows(0, 4)  # zarr alone would read zeros


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_threaded_write_is_byte_identical_to_a_serial_and_to_zarrs_own(tmp_path, monkeypatch):
    import zarr
    from zarr.codecs import BloscCodec, Crc32cCodec

    monkeypatch.setattr(writer_module, "_SHARD_MAX_ROWS", 16)  # 100 rows: 7 shards, the last short
    data = np.random.default_rng(4).integers(0, 4000, (100, 2, 8, 8)).astype(np.uint16)
    for name, threads in (("serial.zarr", 1), ("threads.zarr", 4)):
        writer = ZarrPartWriter(tmp_path / name, data.shape, data.dtype, threads=threads)
        for start in range(0, 100, 7):
            writer.append(data[start : start + 7])
        assert writer.close() == 100
    own = zarr.create_array(store=str(tmp_path / "zarr.zarr"), shape=data.shape, dtype=data.dtype,
                            chunks=(1, 2, 8, 8), shards=(16, 2, 8, 8), fill_value=0,
                            compressors=[BloscCodec(cname=writer_module._CNAME, clevel=writer_module._CLEVEL, shuffle="bitshuffle"), Crc32cCodec()],
                            config={"write_empty_chunks": True})  # fmt: skip
    own[:] = data
    serial = _files(tmp_path / "serial.zarr")
    assert len(serial) == 8  # zarr.json and 7 shards
    assert _files(tmp_path / "threads.zarr") == serial == _files(tmp_path / "zarr.zarr")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "threads.zarr"))[:], data)


def test_a_failed_shard_task_leaves_no_array(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_module, "_SHARD_MAX_ROWS", 4)

    def fail(self, shard, rows, first):
        if shard == 2:
            raise OSError("disk full")

    monkeypatch.setattr(ZarrPartWriter, "_write_shard", fail)
    writer = ZarrPartWriter(tmp_path / "p.zarr", (20, 1, 2, 2), np.uint8, threads=2)
    with pytest.raises(OSError, match="disk full"):
        writer.append(np.ones((20, 1, 2, 2), np.uint8))
        writer.close()
    writer.discard()
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / ".p.zarr.tmp").exists()


@pytest.mark.parametrize("slack", [1 << 20, 0])  # one pread per block; rows far apart one by one
def test_bulk_decode_equals_per_crop_decode(tmp_path, monkeypatch, slack):
    monkeypatch.setattr(writer_module, "_SHARD_MAX_ROWS", 64)
    monkeypatch.setattr(pixels_module, "_BULK_SLACK", slack)
    data = np.random.default_rng(5).integers(0, 4000, (300, 2, 8, 8)).astype(np.uint16)
    write_part(tmp_path / "p.zarr", data)
    picks = (np.arange(300), np.arange(10, 290, 3), np.array([0, 63, 64, 299]))
    blocks = []
    monkeypatch.setattr(PartArray, "_read_block", lambda self, *a: blocks.append(len(a[3])) or
                        original(self, *a))  # fmt: skip
    for rows in picks:
        bulk = PartArray(tmp_path / "p.zarr").take(rows)
        with monkeypatch.context() as m:
            m.setattr(pixels_module, "_BULK_ROWS", 10**9)  # every crop its own pread
            one_by_one = PartArray(tmp_path / "p.zarr").take(rows)
        np.testing.assert_array_equal(bulk, one_by_one)
        np.testing.assert_array_equal(bulk, data[rows])
    assert blocks and max(blocks) >= pixels_module._BLOCK_ROWS[0]  # the bulk path ran


original = PartArray._read_block


@pytest.mark.parametrize("spoil", [_flip_middle, _cut_short])
def test_a_damaged_shard_in_a_bulk_read_names_its_file(tmp_path, monkeypatch, spoil):
    monkeypatch.setattr(writer_module, "_SHARD_MAX_ROWS", 8)
    monkeypatch.setattr(pixels_module, "_BULK_ROWS", 2)
    monkeypatch.setattr(pixels_module, "_BLOCK_ROWS", (2, 4))
    data = np.random.default_rng(2).integers(0, 4000, (24, 2, 6, 6)).astype(np.uint16)
    write_part(tmp_path / "p.zarr", data)
    spoil(tmp_path / "p.zarr" / "c" / "1" / "0" / "0" / "0")  # rows 8..15
    part = PartArray(tmp_path / "p.zarr")
    np.testing.assert_array_equal(part.rows(16, 24), data[16:])
    with pytest.raises(DataError, match=r"p\.zarr/c/1/0/0/0: damaged \(") as err:
        part.rows(0, 24)
    assert "\n" not in str(err.value)


def test_arrays_compressed_with_zstd_as_first_written_still_read(tmp_path, monkeypatch):
    data = np.random.default_rng(6).integers(0, 4000, (40, 2, 8, 8)).astype(np.uint16)
    with monkeypatch.context() as m:
        m.setattr(writer_module, "_CNAME", "zstd")
        m.setattr(writer_module, "_CLEVEL", 1)
        write_part(tmp_path / "zstd.zarr", data)
    write_part(tmp_path / "lz4.zarr", data)
    shard = ("c", "0", "0", "0", "0")
    zstd, lz4 = (tmp_path.joinpath(name, *shard).read_bytes() for name in ("zstd.zarr", "lz4.zarr"))
    assert zstd != lz4
    for name in ("zstd.zarr", "lz4.zarr"):
        part = PartArray(tmp_path / name)
        assert part.direct
        np.testing.assert_array_equal(part.rows(0, 40), data)
        np.testing.assert_array_equal(part.take(np.array([39, 3])), data[[39, 3]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_scaling_in_place_equals_apply_ranges(dtype):
    rng = np.random.default_rng(7)
    raw = (rng.random((50, 3, 5, 5)) * 300 - 20).astype(np.float64)
    if dtype == np.float32:
        raw[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    raw = np.clip(raw, 0, None).astype(dtype) if dtype != np.float32 else raw.astype(dtype)
    ranges = np.array([[3.0, 250.0], [0.5, 1.0], [10.0, 11.0]])
    out = np.full(raw.shape, -7, np.float32)
    pixel_store_module._scale_into(raw, ranges, out)
    np.testing.assert_array_equal(out, apply_ranges(raw, ranges))  # bit for bit, NaN handled


def test_the_threaded_writer_holds_a_few_shards_at_most(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(writer_module, "_SHARD_MAX_ROWS", 4)
    lock, busy, most = threading.Lock(), [0], [0]
    write_shard = ZarrPartWriter._write_shard

    def slow(self, shard, rows, first):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.02)
        write_shard(self, shard, rows, first)
        with lock:
            busy[0] -= 1

    monkeypatch.setattr(ZarrPartWriter, "_write_shard", slow)
    data = np.arange(40 * 4, dtype=np.uint8).reshape(40, 1, 2, 2)
    writer = ZarrPartWriter(tmp_path / "p.zarr", data.shape, data.dtype, threads=2)
    writer.append(data)  # 10 shards
    assert len(writer._pending) < 2
    writer.close()
    assert 1 <= most[0] <= 2  # never more shards in flight than threads
    np.testing.assert_array_equal(load_part(tmp_path / "p.zarr"), data)


def test_the_projects_scale_is_its_first_parts_even_after_plates_of_their_own(tmp_path):
    from datasets.cells import write_manifest
    from datasets.pixels.ranges import DATASET_GROUP, dataset_ranges

    (tmp_path / "pixels").mkdir()
    first = {"part": 0, "normalise_by": "dataset", "ranges": {DATASET_GROUP: [[10.0, 900.0]]}}
    plate = {"part": 1, "normalise_by": "plate", "ranges": {"P2": [[5.0, 400.0]]}}
    write_manifest(tmp_path, {"parts": [first, plate]})
    assert dataset_ranges(tmp_path) == [[10.0, 900.0]]  # a plate added with its own ranges
    write_manifest(tmp_path, {"parts": [plate, first]})
    assert dataset_ranges(tmp_path) is None  # a project normalised per plate
    write_manifest(tmp_path, {"parts": []})
    assert dataset_ranges(tmp_path) is None

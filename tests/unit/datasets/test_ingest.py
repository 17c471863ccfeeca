"""ingest_crops end to end on small synthetic folders, the CSVs, and the cell-id rules."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets.cells import (
    CELL_ID_PATTERN,
    make_cell_ids,
    read_cells,
    read_cells_of,
    read_manifest,
    read_parts,
    write_cells,
)
from datasets.config import CropSource, IngestConfig
from datasets.crops.ingest import ingest_crops
from datasets.errors import DataError
from datasets.pixels.arrays import load_part, part_file
from datasets.pixels.store import PixelStore

SMALL = IngestConfig(crop_size=48)
from tests.conftest import JURKAT  # noqa: E402

# ---------------------------------------------------------------- cell ids


def test_cell_id_rules():
    ids = make_cell_ids(
        ["images/G1/x.tif", "plate 1.npz#3", "a\\b/c é.png", "images.G1.x.tif", "images/G1/x.tif"],
        existing={"images.G1.x.tif.2"},
    )
    assert ids == [
        "images.G1.x.tif",
        "plate_1.npz:3",
        "a.b.c__.png",
        "images.G1.x.tif.3",
        "images.G1.x.tif.4",
    ]
    assert all(CELL_ID_PATTERN.match(i) for i in ids)
    assert not CELL_ID_PATTERN.match("a/b") and not CELL_ID_PATTERN.match("a b")


def test_write_cells_refuses_bad_or_duplicate_ids(tmp_path):
    for ids in (["a", "b/c"], ["a", "a"]):
        with pytest.raises(DataError, match="invalid or duplicate cell ids"):
            write_cells(tmp_path, pd.DataFrame({"cell_id": ids}))
    write_cells(tmp_path, pd.DataFrame({"cell_id": ["a", "b.2:3"]}))
    assert read_cells(tmp_path)["cell_id"].tolist() == ["a", "b.2:3"]


def test_read_cells_of_reads_only_the_asked_cells(tmp_path):
    table = pd.DataFrame({"cell_id": [f"c{i}" for i in range(50)],
                          "source": [f"f{i}.tif" for i in range(50)], "plate": "p1"})  # fmt: skip
    write_cells(tmp_path, table)
    rows = read_cells_of(tmp_path, ["c7", "c3", "nope"], ["source"])
    assert list(rows.columns) == ["cell_id", "source"]
    assert rows.to_dict("records") == [  # stored order, unknown ids dropped
        {"cell_id": "c3", "source": "f3.tif"}, {"cell_id": "c7", "source": "f7.tif"},
    ]  # fmt: skip
    with pytest.raises(DataError, match="no column"):
        read_cells_of(tmp_path, ["c3"], ["well"])
    with pytest.raises(DataError, match="no cell table"):
        read_cells_of(tmp_path / "missing", ["c3"], ["source"])


def test_cell_ids_are_stable():
    sources = [f"p/{i}.npz#{j}" for i in range(3) for j in range(4)]
    assert make_cell_ids(sources, set()) == make_cell_ids(sources, set())


# ---------------------------------------------------------------- the basic path


def test_tiff_folder_makes_table_and_pixels(tiff_folder, project):
    calls = []
    report = ingest_crops(tiff_folder, project, SMALL, progress=lambda d, t: calls.append((d, t)))
    assert (report.n_files, report.n_cells, report.n_channels) == (6, 6, 2)
    assert report.dtype == "uint16" and report.layout == "channel-first"
    assert report.class_counts == {"A": 3, "B": 3}
    assert report.labels_csv == str(tiff_folder / "labels.csv")
    assert any("labels.csv found at the root" in n for n in report.notes)
    assert calls[-1] == (6, 6) and len(calls) == 6
    table = read_cells(project)
    assert list(table.columns) == ["cell_id", "source", "part", "row", "height", "width", "truth"]
    assert table["source"].iloc[0] == "images/A/cell0.tif"
    assert table["cell_id"].iloc[0] == "images.A.cell0.tif"
    assert table["row"].tolist() == list(range(6)) and set(table["part"]) == {0}
    assert set(table["height"]) == {40} and table["truth"].tolist() == list("AAABBB")
    pixels = load_part(part_file(project, 0))
    assert pixels.shape == (6, 2, 48, 48) and pixels.dtype == np.uint16
    assert "Ingested 6 cells from 6 files" in report.summary()


def test_pixels_are_stored_untouched_and_padded(make, tmp_path, project, rng):
    small = make.blob(rng, channels=1, size=20, background=700)
    big = make.blob(rng, channels=1, size=80)
    make.tiff(tmp_path / "in" / "a_small.tif", small[0])
    make.tiff(tmp_path / "in" / "b_big.tif", big[0])
    ingest_crops(tmp_path / "in", project, IngestConfig(crop_size=32, scale=1.0))  # no scaling
    stored = load_part(part_file(project, 0))
    np.testing.assert_array_equal(stored[0, 0, 6:26, 6:26], small[0])  # centred, same values
    assert abs(int(stored[0, 0, 0, 0]) - 700) < 20  # pad = border median, bright stays bright
    np.testing.assert_array_equal(stored[1, 0], big[0, 24:56, 24:56])  # cut, not shrunk
    table = read_cells(project)
    assert table[["height", "width"]].to_numpy().tolist() == [[20, 20], [80, 80]]


def test_mixed_formats_and_dtypes_upcast(make, tmp_path, project, rng):
    rgb8 = np.moveaxis(make.blob(rng, channels=3, dtype=np.uint8, peak=150), 0, -1)
    make.pil(tmp_path / "in" / "a.png", rgb8)
    make.tiff(tmp_path / "in" / "b.tif", make.blob(rng, channels=3))  # uint16, channel-first
    report = ingest_crops(tmp_path / "in", project, SMALL)
    assert report.dtype == "uint16" and report.n_cells == 2
    assert "RGB (1 file)" in report.layout and "channel-first (1 file)" in report.layout
    assert any("stored as uint16" in n and "e.g. a.png" in n for n in report.notes)
    assert any("1 file uint8" in n for n in report.notes), report.notes
    stored = load_part(part_file(project, 0))
    np.testing.assert_array_equal(stored[0, :, 4:44, 4:44], np.moveaxis(rgb8, -1, 0))


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float64])
def test_one_bit_depth_stored_as_another_is_not_called_mixed(make, tmp_path, project, rng, dtype):
    for i in range(2):
        make.tiff(tmp_path / "in" / f"c{i}.tif", make.blob(rng, channels=2).astype(dtype))
    report = ingest_crops(tmp_path / "in", project, SMALL)
    assert report.n_cells == 2
    assert not any("Mixed bit depths" in n for n in report.notes), report.notes


def test_a_crop_still_larger_than_the_crop_size_is_named(make, tmp_path, project, rng):
    for i in range(19):
        make.tiff(tmp_path / "in" / f"c{i}.tif", make.blob(rng, channels=1, size=40))
    make.tiff(tmp_path / "in" / "huge.tif", make.blob(rng, channels=1, size=300))
    report = ingest_crops(tmp_path / "in", project, IngestConfig(crop_size=48))
    assert report.scale == 1.0  # 90% of the crops fit: no screen-wide shrink for one
    note = [n for n in report.notes if "larger than 48 px" in n]
    assert note == [
        "1 of 20 crops is larger than 48 px at scale 1.0 (the largest, huge.tif, 300x300 px): "
        "their centre is kept and the rest cut"
    ]


def test_npz_members_labels_and_metadata(make, tmp_path, project, rng):
    root = tmp_path / "in"
    images = np.stack([make.blob(rng, channels=2, size=32) for _ in range(5)])
    make.npz(root / "p1" / "w1.npz", images, labels=np.array([0, 1, 0, 1, 2]))
    make.npz(root / "p1" / "w2.npz", images[:3])
    (root / "labels.csv").write_text("path,label\np1/w1.npz#4,rare\np1/w2.npz#1,B\n")
    (root / "metadata.csv").write_text("path,plate,well\np1/w1.npz,P1,A01\np1/w2.npz#2,P1,A02\n")
    report = ingest_crops(root, project, SMALL)
    table = read_cells(project)
    assert table["source"].tolist()[:2] == ["p1/w1.npz#0", "p1/w1.npz#1"]
    assert table["cell_id"].iloc[0] == "p1.w1.npz:0"
    assert table["truth"].tolist()[:5] == ["0", "1", "0", "1", "rare"]  # CSV overrides npz
    assert table["truth"].iloc[6] == "B" and table["truth"].isna().sum() == 2
    assert table["well"].iloc[:5].eq("A01").all() and table["well"].iloc[5:7].isna().all()
    assert table["well"].iloc[7] == "A02" and table["plate"].iloc[7] == "P1"
    assert report.normalise_by == "plate"
    assert report.class_counts == {"0": 2, "1": 2, "B": 1, "rare": 1}


def test_npz_index_out_of_range_in_labels_csv(make, tmp_path, project):
    root = tmp_path / "in"
    make.npz(root / "a.npz", np.ones((3, 2, 16, 16), np.uint8))
    (root / "labels.csv").write_text("path,label\na.npz#3,x\n")
    with pytest.raises(DataError, match=r"labels\.csv: 1 path\(s\) name npz images that do not"):
        ingest_crops(root, project, SMALL)


# ---------------------------------------------------------------- CSVs


def test_explicit_csvs_relative_to_their_folder_and_absolute(tiff_folder, tmp_path, project):
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    labels = meta_dir / "truth.csv"
    labels.write_text(
        "path,label\n../crops/images/A/cell0.tif,X\n"
        f"{tiff_folder / 'images' / 'B' / 'cell2.tif'},Y\n"
    )
    report = ingest_crops(CropSource(tiff_folder, labels_csv=labels), project, SMALL)
    assert report.class_counts == {"X": 1, "Y": 1}
    assert not any("found at the root" in n for n in report.notes)


def test_csvs_elsewhere_may_name_paths_under_the_crops_folder(tiff_folder, project, tmp_path):
    from datasets.cells import read_cells

    elsewhere = tmp_path / "notes"
    elsewhere.mkdir()
    truth = (tiff_folder / "labels.csv").read_text()  # paths relative to the crops folder
    (elsewhere / "truth.csv").write_text(truth)
    (elsewhere / "meta.csv").write_text(
        "path,plate\n" + "".join(f"images/A/cell{i}.tif,P1\n" for i in range(3))
    )
    source = CropSource(tiff_folder, elsewhere / "truth.csv", elsewhere / "meta.csv")
    ingest_crops(source, project, SMALL)
    cells = read_cells(project, ["source", "truth", "plate"]).set_index("source")
    assert cells.loc["images/B/cell1.tif", "truth"] == "B"
    assert cells.loc["images/A/cell2.tif", "plate"] == "P1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\nimages/A/cell0.tif,A\n", r"truth\.csv: no column\(s\) \['path'\]"),
        ("path,class\nimages/A/cell0.tif,A\n", r"truth\.csv: no column\(s\) \['label'\]"),
        ("", r"truth\.csv: CSV is empty"),
        ('path,label\n"images/A/cell0.tif,A\n', r"truth\.csv: cannot parse CSV"),
        ("path,label\nimages/A/cell0.tif,A\nimages/A/cell0.tif,B\n", r"1 duplicate path"),
        ("path,label\nimages/A/cell0.tif,A\n./images/A/cell0.tif,B\n", r"1 duplicate path"),
        ("path,label\n,A\n", r"truth\.csv: line 2 has an empty path"),
        (
            "path,label\n" + "".join(f"images/gone{i}.tif,A\n" for i in range(7)),
            r"truth\.csv: 7 path\(s\) name missing files, e.g. \['images/gone0.tif'",
        ),
    ],
)
def test_bad_labels_csv_is_one_line_error(tiff_folder, project, text, message):
    csv = tiff_folder / "truth.csv"
    csv.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        ingest_crops(CropSource(tiff_folder, labels_csv=csv), project, SMALL)
    assert "\n" not in str(info.value)
    assert not (project / "cells.parquet").exists()


def test_a_csv_elsewhere_with_one_missing_path_names_only_that_one(tiff_folder, project, tmp_path):
    csv = tmp_path / "truth.csv"  # paths relative to the crops folder, one of them gone
    csv.write_text("path,label\nimages/A/cell0.tif,A\nimages/A/gone.tif,A\n")
    with pytest.raises(DataError, match=r"1 path\(s\) name missing files, e.g. \['images/A/gone"):
        ingest_crops(CropSource(tiff_folder, labels_csv=csv), project, SMALL)


def test_unparsable_binary_csv(tiff_folder, project):
    (tiff_folder / "labels.csv").write_bytes(b"\xff\xfe\x00\x81path\x00,label\n\x9c")
    with pytest.raises(DataError, match=r"labels\.csv: "):
        ingest_crops(tiff_folder, project, SMALL)


def test_missing_explicit_csv_and_reserved_metadata_column(tiff_folder, project):
    with pytest.raises(DataError, match=r"nope\.csv: labels\.csv does not exist"):
        ingest_crops(CropSource(tiff_folder, labels_csv=tiff_folder / "nope.csv"), project, SMALL)
    (tiff_folder / "metadata.csv").write_text("path,row\nimages/A/cell0.tif,3\n")
    with pytest.raises(DataError, match=r"metadata\.csv: column\(s\) \['row'\] clash"):
        ingest_crops(tiff_folder, project, SMALL)


def test_csv_rows_outside_the_folder_are_reported(tiff_folder, tmp_path, project, make, rng):
    outside = make.tiff(tmp_path / "elsewhere" / "o.tif", make.blob(rng))
    (tiff_folder / "labels.csv").write_text(f"path,label\nimages/A/cell0.tif,A\n{outside},Z\n")
    report = ingest_crops(tiff_folder, project, SMALL)
    assert report.class_counts == {"A": 1}
    assert any("1 rows of" in n and "ignored" in n for n in report.notes)


# ---------------------------------------------------------------- bad files


def test_unreadable_files_are_skipped_and_listed(tiff_folder, project):
    (tiff_folder / "images" / "A" / "broken.tif").write_bytes(b"nope" * 10)
    (tiff_folder / "images" / "A" / "notes.bmp").write_bytes(b"BM")
    with (tiff_folder / "labels.csv").open("a") as fh:
        fh.write("images/A/broken.tif,A\n")
    report = ingest_crops(tiff_folder, project, SMALL)
    assert report.n_cells == 6 and report.class_counts == {"A": 3, "B": 3}
    assert not any("ignored" in n for n in report.notes)  # a skipped file is not "unmatched"
    skipped = dict(report.skipped)
    assert skipped["images/A/broken.tif"].startswith("cannot read (")
    assert "unsupported file type '.bmp'" in skipped["images/A/notes.bmp"]
    assert "Skipped 2 files" in report.summary()


def test_many_skipped_files_warn_a_few_times_and_are_all_listed(tiff_folder, project, caplog):
    for i in range(25):
        (tiff_folder / "images" / "A" / f"broken{i:02d}.tif").write_bytes(b"nope" * 10)
    with caplog.at_level("WARNING"):
        report = ingest_crops(tiff_folder, project, SMALL)
    assert len(report.skipped) == 25 and "Skipped 25 files" in report.summary()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 11 and "lists every one" in warned[-1], warned
    assert not any(r.name == "tifffile" for r in caplog.records)


def test_truncated_file_fails_in_pass_two_and_rows_are_compacted(make, tmp_path, project, rng):
    root = tmp_path / "in"
    kept = [make.blob(rng, channels=2, size=64) for _ in range(3)]
    for i, image in enumerate(kept):
        make.tiff(root / f"c{i}.tif", image)
    bad = make.tiff(root / "c1b.tif", make.blob(rng, channels=2, size=64))
    bad.write_bytes(bad.read_bytes()[:-6000])  # header intact, pixel data cut
    report = ingest_crops(root, project, IngestConfig(crop_size=64))
    assert [f for f, _ in report.skipped] == ["c1b.tif"] and report.n_cells == 3
    table = read_cells(project)
    assert table["source"].tolist() == ["c0.tif", "c1.tif", "c2.tif"]
    stored = PixelStore(project).read_raw(table["cell_id"].tolist())
    np.testing.assert_array_equal(stored, np.stack(kept))


def test_nothing_readable_or_nothing_there(tmp_path, project):
    assert read_parts(project) == []
    with pytest.raises(DataError, match="does not exist"):
        ingest_crops(tmp_path / "missing", project)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        ingest_crops(tmp_path / "empty", project)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.tif").write_bytes(b"x" * 50)
    with pytest.raises(DataError, match=r"no readable image among 1 files; first error: .*a\.tif"):
        ingest_crops(tmp_path / "bad", project)


def test_inconsistent_channel_counts_skip_the_odd_files(make, tmp_path, project, rng):
    root = tmp_path / "in"
    for i in range(3):
        make.tiff(root / f"three{i}.tif", make.blob(rng, channels=3))
    make.tiff(root / "two.tif", make.blob(rng, channels=2))
    report = ingest_crops(root, project, SMALL)
    assert report.n_channels == 3 and report.n_cells == 3
    assert report.skipped == [("two.tif", "2 channels, most files have 3")]


def test_too_many_channels(make, tmp_path, project):
    make.npz(tmp_path / "in" / "a.npz", np.ones((2, 7, 16, 16), np.uint8))
    with pytest.raises(DataError, match="cannot read"):  # 7 is not a channel axis
        ingest_crops(tmp_path / "in", project, SMALL)
    with pytest.raises(DataError, match="images have 3 channels, at most 2"):
        make.npz(tmp_path / "in" / "a.npz", np.ones((2, 3, 16, 16), np.uint8))
        ingest_crops(tmp_path / "in", project, IngestConfig(crop_size=16, max_channels=2))


# ---------------------------------------------------------------- channels


def _three_channels_one_empty(make, root: Path, rng, n: int = 4) -> None:
    for i in range(n):
        image = make.blob(rng, channels=3)
        image[1] = 0
        make.tiff(root / f"c{i}.tif", image)


def test_all_zero_channel_dropped_by_default(make, tmp_path, project, rng):
    _three_channels_one_empty(make, tmp_path / "in", rng)
    report = ingest_crops(tmp_path / "in", project, SMALL)
    assert report.dropped_channels == [1] and report.n_channels == 2
    assert report.channel_names == ("ch0", "ch1")
    assert load_part(part_file(project, 0)).shape == (4, 2, 48, 48)
    assert read_manifest(project)["parts"][0]["channels_kept"] == [0, 2]
    assert "Dropped all-zero source channels: [1]" in report.summary()


def test_all_zero_channel_kept_when_asked(make, tmp_path, project, rng):
    _three_channels_one_empty(make, tmp_path / "in", rng)
    cfg = IngestConfig(crop_size=48, keep_empty_channels=True, channel_names=("DNA", "x", "y"))
    report = ingest_crops(tmp_path / "in", project, cfg)
    assert report.dropped_channels == [] and report.n_channels == 3
    assert report.channel_names == ("DNA", "x", "y") and report.flat_channels == [1]


def test_source_channel_names_follow_the_drop(make, tmp_path, project, rng):
    _three_channels_one_empty(make, tmp_path / "in", rng)
    cfg = IngestConfig(crop_size=48, channel_names=("DNA", "empty", "actin"))
    assert ingest_crops(tmp_path / "in", project, cfg).channel_names == ("DNA", "actin")


# ---------------------------------------------------------------- normalisation


def _two_plates(make, root: Path, rng, per_plate: int = 6) -> None:
    lines = ["path,plate"]
    for plate, gain in (("P1", 1.0), ("P2", 10.0)):
        for i in range(per_plate):
            image = make.blob(rng, channels=1, peak=300).astype(np.float64) * gain
            image = image.astype(np.uint16)
            make.tiff(root / plate / f"c{i}.tif", image[0])
            lines.append(f"{plate}/c{i}.tif,{plate}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")


def test_per_plate_normalisation_when_plate_column_exists(make, tmp_path, project, rng):
    _two_plates(make, tmp_path / "in", rng)
    report = ingest_crops(tmp_path / "in", project, SMALL)
    assert report.normalise_by == "plate"
    part = read_manifest(project)["parts"][0]
    assert part["group_column"] == "plate" and set(part["ranges"]) == {"P1", "P2"}
    assert part["ranges"]["P2"][0][1] > 5 * part["ranges"]["P1"][0][1]
    store = PixelStore(project)
    ids = read_cells(project)["cell_id"].tolist()
    crops = store.read(ids)
    means = crops[:6].mean(), crops[6:].mean()
    assert abs(means[0] - means[1]) < 0.05  # plate effect removed


def test_dataset_normalisation_keeps_plate_differences(make, tmp_path, project, rng):
    _two_plates(make, tmp_path / "in", rng)
    cfg = IngestConfig(crop_size=48, normalise_by="dataset")
    report = ingest_crops(tmp_path / "in", project, cfg)
    assert report.normalise_by == "dataset"
    assert set(read_manifest(project)["parts"][0]["ranges"]) == {"*"}
    crops = PixelStore(project).read(read_cells(project)["cell_id"].tolist())
    assert crops[6:].mean() > 3 * crops[:6].mean()


def test_plate_normalisation_needs_a_plate_column(tiff_folder, project):
    with pytest.raises(DataError, match="normalise_by='plate' needs a 'plate' column"):
        ingest_crops(tiff_folder, project, IngestConfig(crop_size=48, normalise_by="plate"))


def test_ranges_come_from_the_crops_not_their_padding(make, tmp_path, project):
    """12-pixel crops padded to 64: the padding is 96% of the stored pixels. The ranges come
    from the crops' own pixels, so a brighter cell stays brighter after normalisation instead
    of both being clipped to 1."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:12, :12]
    disc = (yy - 5.5) ** 2 + (xx - 5.5) ** 2 < 16
    for i in range(60):
        peak = 220 if i % 10 == 0 else 110  # one cell in ten twice as bright
        crop = np.where(disc, peak, 10) + rng.integers(0, 5, (12, 12))
        make.tiff(tmp_path / "in" / f"c{i:02d}.tif", crop.astype(np.uint16))
    ingest_crops(tmp_path / "in", project, IngestConfig(crop_size=64, scale=1.0))
    ids = read_cells(project)["cell_id"].tolist()
    crops = PixelStore(project).read(ids)[:, 0, 26:38, 26:38]
    centre = crops[:, 4:8, 4:8].mean(axis=(1, 2))
    bright, normal = centre[::10], np.delete(centre, np.s_[::10])
    assert normal.max() < 0.6 and bright.min() > 0.9, (normal.max(), bright.min())


def test_ranges_are_seeded(tiff_folder, tmp_path):
    ranges = []
    for name in ("a", "b"):
        out = tmp_path / name
        out.mkdir()
        ingest_crops(tiff_folder, out, SMALL, seed=7)
        ranges.append(read_manifest(out)["parts"][0]["ranges"])
    assert ranges[0] == ranges[1]


# ---------------------------------------------------------------- add a part


def test_second_ingest_adds_a_part(tiff_folder, project, make, tmp_path, rng):
    ingest_crops(tiff_folder, project, SMALL)
    second = tmp_path / "plate2"
    make.tiff(second / "images" / "A" / "cell0.tif", make.blob(rng))  # same relative path
    make.tiff(second / "new.tif", make.blob(rng))
    report = ingest_crops(second, project, SMALL)
    assert report.part == 1 and report.n_cells == 2
    table = read_cells(project)
    assert len(table) == 8 and table["part"].tolist() == [0] * 6 + [1, 1]
    assert table["cell_id"].iloc[6] == "images.A.cell0.tif.2"
    assert table["row"].tolist()[6:] == [0, 1]
    parts = read_parts(project)
    assert [(p["part"], p["root"]) for p in parts] == [(0, str(tiff_folder)), (1, str(second))]
    store = PixelStore(project)
    assert store.n_cells == 8
    np.testing.assert_array_equal(
        store.read_raw(["new.tif"])[0], load_part(part_file(project, 1))[1]
    )


def test_adding_the_same_folder_again_adds_only_its_new_files(tiff_folder, project, make, rng):
    ingest_crops(tiff_folder, project, SMALL)
    with pytest.raises(DataError, match=r"all 6 files are already in the project \(part 0\)"):
        ingest_crops(tiff_folder, project, SMALL)
    assert len(read_cells(project)) == 6  # nothing duplicated
    make.tiff(tiff_folder / "images" / "A" / "later.tif", make.blob(rng))
    report = ingest_crops(tiff_folder, project, SMALL)
    assert report.n_cells == 1
    assert any("Left out 6 files already in the project (part 0)" in n for n in report.notes)
    table = read_cells(project)
    assert table["source"].tolist()[-1] == "images/A/later.tif" and len(table) == 7


def test_added_part_must_match_channels_and_crop_size(tiff_folder, project, make, tmp_path, rng):
    ingest_crops(tiff_folder, project, SMALL)
    other = tmp_path / "other"
    make.tiff(other / "a.tif", make.blob(rng, channels=3))
    with pytest.raises(DataError, match="3 channels after dropping empty ones, the project stores"):
        ingest_crops(other, project, SMALL)
    with pytest.raises(DataError, match="stores 48-pixel crops, cannot add 64-pixel"):
        ingest_crops(tiff_folder, project, IngestConfig(crop_size=64))
    assert len(read_cells(project)) == 6 and len(read_manifest(project)["parts"]) == 1


def test_added_part_keeps_the_first_parts_channels(make, tmp_path, project, rng):
    _three_channels_one_empty(make, tmp_path / "p1", rng)
    ingest_crops(tmp_path / "p1", project, SMALL)
    make.tiff(tmp_path / "p2" / "full.tif", make.blob(rng, channels=3))  # channel 1 has data
    with pytest.raises(DataError, match=r"channel\(s\) \[1\] hold data but were dropped"):
        ingest_crops(tmp_path / "p2", project, SMALL)
    _three_channels_one_empty(make, tmp_path / "p3", rng, n=2)
    assert ingest_crops(tmp_path / "p3", project, SMALL).n_channels == 2


def test_scale_is_applied_to_every_image(make, tmp_path, project, rng):
    make.tiff(tmp_path / "in" / "a.tif", make.blob(rng, channels=1, size=40)[0])
    report = ingest_crops(tmp_path / "in", project, IngestConfig(crop_size=48, scale=0.5))
    stored = load_part(part_file(project, 0))[0, 0]
    bright = stored > 500
    assert 50 < bright.sum() < 120  # disc of radius 10 -> radius 5 (~79 px), not ~314
    assert read_cells(project)["height"].iloc[0] == 40  # source shape is recorded
    assert any("rescaled by 0.5" in n for n in report.notes)


def _tight(size: int, rng) -> np.ndarray:
    """A cell that fills its crop: a bright disc touching the crop's sides."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    disc = np.hypot(yy, xx) < size / 2
    return (100 + 1000 * disc + rng.normal(0, 5, (size, size))).astype(np.uint16)


SIZES = [40, 60, 80, 100, 120, 140, 160, 180, 200, 220]


def test_crops_larger_than_the_crop_size_get_one_scale_for_the_screen(make, tmp_path, rng):
    from datasets.crops.resize import choose_scale

    for k, size in enumerate(SIZES):
        make.tiff(tmp_path / "in" / f"c{k}.tif", _tight(size, rng))
    report = ingest_crops(tmp_path / "in", tmp_path / "p", IngestConfig(crop_size=64))
    # the 90th percentile of the larger side (202 px) is brought to 64 px, the same for all
    assert report.scale == choose_scale([202], [202], 64) == 0.316
    assert any("scaled by 0.316" in n and "relative sizes kept" in n for n in report.notes)
    manifest = json.loads((tmp_path / "p" / "pixels" / "parts.json").read_text())
    assert manifest["parts"][0]["scale"] == 0.316
    stored = load_part(part_file(tmp_path / "p", 0))[:, 0]
    bright = (stored > 500).sum(axis=(1, 2))
    assert bright[-1] > 3 * bright[0], "relative sizes kept: the big cell stays bigger"
    assert choose_scale([20, 40, 64], [30, 64, 10], 64) == 1.0  # crops that fit: no scaling


def test_crops_with_a_wide_margin_are_scaled_for_their_cells(make, tmp_path, rng):
    """Cells half as wide as their crops: the scale brings the cells (with a margin), not the
    crops, to the crop size, so the cells keep twice the detail; the margin is cut."""
    from datasets.crops.resize import choose_scale

    for k, size in enumerate(SIZES):  # make.blob: a disc of half the crop's side
        make.tiff(tmp_path / "in" / f"c{k}.tif", make.blob(rng, channels=1, size=size)[0])
    report = ingest_crops(tmp_path / "in", tmp_path / "p", IngestConfig(crop_size=64))
    # 90% of the cells are up to ~101 px; with a quarter more around them -> 64 px
    assert 0.45 < report.scale < 0.56, report.scale
    assert report.scale > choose_scale([202], [202], 64)
    assert any("around smaller cells" in n and "rest of each crop cut" in n for n in report.notes)
    stored = load_part(part_file(tmp_path / "p", 0))[:, 0]
    bright = (stored > 500).sum(axis=(1, 2))
    assert bright[-1] > 3 * bright[0], "relative sizes kept: the big cell stays bigger"
    assert bright[-3] < 0.9 * 64 * 64, "the cells fit with a margin"


def test_parts_json_records_the_part(tiff_folder, project):
    ingest_crops(tiff_folder, project, SMALL)
    manifest = json.loads((project / "pixels" / "parts.json").read_text())
    part = manifest["parts"][0]
    assert manifest["crop_size"] == 48 and manifest["n_channels"] == 2
    assert part["dtype"] == "uint16" and part["n_cells"] == 6 and part["layout"] == "channel-first"
    assert np.array(part["ranges"]["*"]).shape == (2, 2)


# ---------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.skipif(not JURKAT.is_dir(), reason="shared Jurkat data not available")
def test_jurkat_cell_cycle_folder(project):
    start = time.perf_counter()
    report = ingest_crops(JURKAT, project)
    assert report.n_cells == 3419 and report.n_files == 3419
    assert report.layout == "channel-first" and report.dtype == "uint16"
    assert report.n_channels == 3 and not report.skipped
    assert report.class_counts == {
        "G1": 900,
        "S_phase": 900,
        "G2": 900,
        "Prophase": 606,
        "Metaphase": 69,
        "Anaphase": 16,
        "Telophase": 28,
    }
    table = read_cells(project)
    assert table["cell_id"].is_unique and table["source"].iloc[0].startswith("images/")
    assert time.perf_counter() - start < 60

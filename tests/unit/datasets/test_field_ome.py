"""Whole fields as OME-Zarr in the project: round trip, plate layout, moved sources, damage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Multiscales, Plate, Reader

from datasets.config import IngestConfig
from datasets.errors import DataError, ProjectDamagedError
from datasets.fields.ingest import ingest_fields
from datasets.fields.ome import well_position
from datasets.fields.render import cell_in_field
from datasets.fields.spec import FieldSpec
from datasets.fields.store import (
    FIELDS_FILE,
    convert_to_ome_zarr,
    read_field_image,
    read_field_mask,
    read_fields,
)

SHAPE = (40, 52)
CENTRES = [(12, 12), (25, 35)]
RED = "#ff0000"


def disc_field(seed: int, channels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) uint16 noisy field with two discs and its (H, W) uint16 labels."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    labels = np.zeros(SHAPE, np.uint16)
    for k, (y, x) in enumerate(CENTRES, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= 16] = k
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 110, (channels, *SHAPE)).astype(np.uint16)
    image[:, labels > 0] += 900
    return image, labels


def save_field(src: Path, key: str, meta: dict[str, str], seed: int) -> tuple[FieldSpec, tuple]:
    src.mkdir(parents=True, exist_ok=True)
    image, labels = disc_field(seed)
    tifffile.imwrite(src / f"{key}.tif", image, photometric="minisblack")
    tifffile.imwrite(src / f"{key}_mask.tif", labels)
    spec = FieldSpec(key, (src / f"{key}.tif",), meta, src / f"{key}_mask.tif")
    return spec, (image, labels)


def make_project(tmp_path: Path, metas: dict[str, dict[str, str]]) -> tuple[Path, dict]:
    """A project of one field per key of ``metas`` (with those metadata); the arrays by key."""
    specs, arrays = [], {}
    for seed, (key, meta) in enumerate(metas.items()):
        spec, arrays[key] = save_field(tmp_path / "src", key, meta, seed)
        specs.append(spec)
    project = tmp_path / "project"
    project.mkdir()
    ingest_fields(specs, project, IngestConfig(crop_size=16, channel_names=["dna", "actin"]))
    return project, arrays


PLATE = {"P1_A01_s1": {"plate": "P1", "well": "A01"}, "P1_A01_s2": {"plate": "P1", "well": "A01"},
         "P1_B03_s1": {"plate": "P1", "well": "B03"}}  # fmt: skip


def test_fields_round_trip_through_an_ome_zarr_plate(tmp_path):
    project, arrays = make_project(tmp_path, PLATE)
    table = read_fields(project)
    assert table["ome_zarr"].tolist() == [f"fields/ome/P1.ome.zarr/{w}" for w in
                                          ("A/1/0", "A/1/1", "B/3/0")]  # fmt: skip
    assert (table["mask"] == table["ome_zarr"] + "/labels/objects").all()
    for key, (image, labels) in arrays.items():
        got = read_field_image(project, key)
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, image)
        np.testing.assert_array_equal(read_field_mask(project, key), labels)
    assert not (project / "fields" / "masks").exists()  # no TIFF copies any more

    plate = project / "fields" / "ome" / "P1.ome.zarr"
    nodes = list(Reader(parse_url(plate))())
    assert any(isinstance(s, Plate) for s in nodes[0].specs)
    meta = zarr.open_group(plate, mode="r").attrs["ome"]["plate"]
    assert [w["path"] for w in meta["wells"]] == ["A/1", "B/3"]
    assert [r["name"] for r in meta["rows"]] == ["A", "B"] and meta["field_count"] == 2
    well = zarr.open_group(plate / "A" / "1", mode="r").attrs["ome"]["well"]
    assert [i["path"] for i in well["images"]] == ["0", "1"]

    image_nodes = list(Reader(parse_url(plate / "A" / "1" / "1"))())
    first = image_nodes[0]
    assert any(isinstance(s, Multiscales) for s in first.specs)
    assert first.metadata["channel_names"] == ["dna", "actin"]
    np.testing.assert_array_equal(np.asarray(first.data[0]), arrays["P1_A01_s2"][0])
    nodes = list(Reader(parse_url(plate / "A" / "1" / "1" / "labels" / "objects"))())
    label = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    assert len(label) == 1  # the label image, linked to its field's image (read first)
    np.testing.assert_array_equal(np.asarray(label[0].data[0]), arrays["P1_A01_s2"][1])
    chunks = zarr.open_array(plate / "A" / "1" / "1" / "s0", mode="r")
    assert chunks.chunks == (1, *SHAPE) and chunks.compressors  # chunked per channel, compressed


def test_fields_without_wells_are_a_collection_of_images(tmp_path):
    project, arrays = make_project(tmp_path, {"img1": {}, "img2": {"site": "2"}})
    assert read_fields(project)["ome_zarr"].tolist() == [
        "fields/ome/fields.ome.zarr/00000", "fields/ome/fields.ome.zarr/00001"]  # fmt: skip
    nodes = list(Reader(parse_url(project / "fields/ome/fields.ome.zarr/00001"))())
    assert any(isinstance(s, Multiscales) for s in nodes[0].specs)
    np.testing.assert_array_equal(read_field_image(project, "img2"), arrays["img2"][0])


def test_a_second_ingest_continues_the_wells(tmp_path):
    project, arrays = make_project(tmp_path, {"P1_A01_s1": {"plate": "P1", "well": "A01"}})
    spec, (image, labels) = save_field(tmp_path / "more", "P1_A01_s2", PLATE["P1_A01_s2"], 7)
    spec2, _ = save_field(tmp_path / "more", "P2_C10_s1", {"plate": "P2", "well": "C10"}, 8)
    ingest_fields([spec, spec2], project, IngestConfig(crop_size=16))
    assert read_fields(project)["ome_zarr"].tolist()[1:] == [
        "fields/ome/P1.ome.zarr/A/1/1", "fields/ome/P2.ome.zarr/C/10/0"]  # fmt: skip
    well = zarr.open_group(project / "fields/ome/P1.ome.zarr/A/1", mode="r").attrs["ome"]["well"]
    assert [i["path"] for i in well["images"]] == ["0", "1"]
    np.testing.assert_array_equal(read_field_image(project, "P1_A01_s1"), arrays["P1_A01_s1"][0])
    np.testing.assert_array_equal(read_field_mask(project, "P1_A01_s2"), labels)


def test_the_field_view_works_after_the_source_files_are_deleted(tmp_path):
    project, arrays = make_project(tmp_path, PLATE)
    before = cell_in_field(project, "P1_A01_s2:1", context_px=8, colours=[RED, RED])
    shutil.rmtree(tmp_path / "src")
    np.testing.assert_array_equal(read_field_image(project, "P1_A01_s2"), arrays["P1_A01_s2"][0])
    after = cell_in_field(project, "P1_A01_s2:1", context_px=8, colours=[RED, RED])
    assert after.shape[2] == 3 and after.any()
    np.testing.assert_array_equal(after, before)


def as_made_before(project: Path, arrays: dict) -> None:
    """Turn ``project`` into one made before the OME-Zarr store: TIFF masks, no ome_zarr."""
    table = read_fields(project).drop(columns=["ome_zarr"])
    table["mask"] = [f"fields/masks/{i:05d}.tif" for i in table["index"]]
    (project / "fields" / "masks").mkdir()
    for rel, key in zip(table["mask"], table["key"]):
        tifffile.imwrite(project / rel, arrays[key][1], compression="zlib")
    table.to_parquet(project / FIELDS_FILE, index=False)
    shutil.rmtree(project / "fields" / "ome")


def test_projects_made_before_read_their_source_files_and_tiff_masks(tmp_path):
    project, arrays = make_project(tmp_path, PLATE)
    as_made_before(project, arrays)
    image, labels = arrays["P1_B03_s1"]
    np.testing.assert_array_equal(read_field_image(project, "P1_B03_s1"), image)
    np.testing.assert_array_equal(read_field_mask(project, "P1_B03_s1"), labels)
    shutil.rmtree(tmp_path / "src")
    with pytest.raises(DataError, match="P1_B03_s1.tif"):
        read_field_image(project, "P1_B03_s1")


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_damaged_chunk_is_a_one_line_error_naming_it(tmp_path):
    project, _ = make_project(tmp_path, PLATE)
    image = project / "fields/ome/P1.ome.zarr/A/1/1"
    chunk = image / "s0" / "c" / "1" / "0" / "0"
    assert chunk.is_file()
    chunk.write_bytes(b"\x00garbage, not zstd\xff" * 4)
    with pytest.raises(ProjectDamagedError) as err:
        read_field_image(project, "P1_A01_s2")
    assert str(chunk) in one_line(err) and "damaged" in str(err.value)
    np.testing.assert_array_equal(read_field_mask(project, "P1_A01_s2"), disc_field(1)[1])

    label_chunk = image / "labels" / "objects" / "s0" / "c" / "0" / "0"
    label_chunk.unlink()  # a missing chunk would read as zeros: it is an error instead
    with pytest.raises(ProjectDamagedError) as err:
        read_field_mask(project, "P1_A01_s2")
    assert str(label_chunk) in one_line(err) and "missing" in str(err.value)

    (project / "fields/ome/P1.ome.zarr/B/3/0/zarr.json").write_text("{not json")
    with pytest.raises(ProjectDamagedError) as err:
        read_field_image(project, "P1_B03_s1")
    assert "B/3/0/zarr.json" in one_line(err)
    shutil.rmtree(project / "fields/ome/P1.ome.zarr/A/1/0")
    with pytest.raises(ProjectDamagedError) as err:
        read_field_image(project, "P1_A01_s1")
    assert "A/1/0" in one_line(err) and "no such OME-Zarr image" in str(err.value)


@pytest.mark.parametrize(
    ("meta", "place"),
    [({"plate": "P1", "well": "B02"}, ("P1", "B", "2")), ({"well": "aa7"}, ("plate", "AA", "7")),
     ({"plate": "screen 1/a", "well": "H12"}, ("screen_1_a", "H", "12")),
     ({"plate": "P1", "well": "centre"}, None), ({"plate": "P1"}, None)],
)  # fmt: skip
def test_well_positions_from_metadata(meta, place):
    assert well_position(meta) == place


def test_a_project_made_before_gets_new_fields_as_ome_zarr(tmp_path):
    project, arrays = make_project(tmp_path, {"P1_A01_s1": PLATE["P1_A01_s1"]})
    as_made_before(project, arrays)
    spec, (image, labels) = save_field(tmp_path / "more", "P1_A01_s2", PLATE["P1_A01_s2"], 3)
    ingest_fields([spec], project, IngestConfig(crop_size=16))
    fields = read_fields(project)
    assert pd.isna(fields["ome_zarr"].iloc[0]) and fields["ome_zarr"].iloc[1].endswith("A/1/0")
    np.testing.assert_array_equal(read_field_image(project, "P1_A01_s1"), arrays["P1_A01_s1"][0])
    np.testing.assert_array_equal(read_field_mask(project, "P1_A01_s1"), arrays["P1_A01_s1"][1])
    np.testing.assert_array_equal(read_field_image(project, "P1_A01_s2"), image)
    np.testing.assert_array_equal(read_field_mask(project, "P1_A01_s2"), labels)


def test_a_project_made_before_is_converted_to_ome_zarr(tmp_path):
    project, arrays = make_project(tmp_path, PLATE)
    as_made_before(project, arrays)
    (tmp_path / "src" / "P1_B03_s1.tif").unlink()  # this one's source is gone: left as it is
    done, left = convert_to_ome_zarr(project)
    assert done == 2 and [k for k, _ in left] == ["P1_B03_s1"] and "P1_B03_s1.tif" in left[0][1]
    table = read_fields(project).set_index("key")
    assert table.loc["P1_A01_s2", "ome_zarr"] == "fields/ome/P1.ome.zarr/A/1/1"
    assert table.loc["P1_B03_s1", "ome_zarr"] == ""
    assert table.loc["P1_B03_s1", "mask"] == "fields/masks/00002.tif"
    assert (project / "fields/masks/00000.tif").is_file()  # the TIFFs stay, as a backup
    shutil.rmtree(tmp_path / "src")
    for key in ("P1_A01_s1", "P1_A01_s2"):
        np.testing.assert_array_equal(read_field_image(project, key), arrays[key][0])
        np.testing.assert_array_equal(read_field_mask(project, key), arrays[key][1])
    assert convert_to_ome_zarr(project)[0] == 0  # converted fields are not written again

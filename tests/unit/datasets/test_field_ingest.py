"""Field ingest: objects of whole fields become cells, one field at a time."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

import datasets.fields.tasks as field_tasks
from datasets.cells import read_cells, read_parts
from datasets.config import IngestConfig
from datasets.errors import DataError
from datasets.fields.cropping import crop_at
from datasets.fields.files import find_fields
from datasets.fields.ingest import FieldInput, ingest_fields
from datasets.fields.spec import FieldSpec
from datasets.fields.store import (
    read_field_image,
    read_field_mask,
    read_fields,
    read_truth_csv,
)
from datasets.pixels.plates import open_part_view
from datasets.pixels.store import PixelStore
from tests.conftest import SHARED_DATA

DSB = SHARED_DATA / "dsb2018_nuclei_field"

SHAPE = (96, 128)
CENTRES = [(30, 30), (50, 90), (70, 40), (2, 64)]  # the last one touches the top border


def disc_field(centres=CENTRES, radius=5, shape=SHAPE, channels=2):
    """(C, H, W) uint16 field with one bright disc per centre, and its (H, W) uint16 labels."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, np.uint16)
    for k, (y, x) in enumerate(centres, start=1):
        mask[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = k
    image = np.full((channels, *shape), 100, np.uint16)
    image[:, mask > 0] = 1000
    return image, mask


def save_field(root: Path, key: str, image, mask=None) -> FieldSpec:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key}.tif"
    tifffile.imwrite(path, image, photometric="minisblack")
    mask_path = None
    if mask is not None:
        mask_path = root / "masks" / f"{key}.tif"
        mask_path.parent.mkdir(exist_ok=True)
        tifffile.imwrite(mask_path, mask)
    return FieldSpec(key, (path,), {"plate": "P1", "well": key}, mask_path)


@pytest.fixture
def project(tmp_path) -> Path:
    out = tmp_path / "project"
    out.mkdir()
    return out


def test_given_masks_give_exact_objects_and_centroids(tmp_path, project):
    image, mask = disc_field()
    spec = save_field(tmp_path / "f", "A01", image, mask)
    report = ingest_fields([spec], project)
    cells = read_cells(project)
    assert report.n_cells == 3 and len(cells) == 3
    assert cells["object"].tolist() == [1, 2, 3]
    assert list(zip(cells["centroid_y"], cells["centroid_x"])) == CENTRES[:3]
    assert cells["source"].tolist() == ["A01#1", "A01#2", "A01#3"]
    assert cells["cell_id"].tolist() == ["A01:1", "A01:2", "A01:3"]
    assert set(cells["plate"]) == {"P1"} and set(cells["field"]) == {"A01"}
    assert (cells["area"] == 81).all() and (cells["height"] == 11).all()
    assert "1 object touching the field border left out" in report.summary()


def test_border_objects_kept_with_keep_border(tmp_path, project):
    image, mask = disc_field()
    spec = save_field(tmp_path / "f", "A01", image, mask)
    ingest_fields(FieldInput([spec], keep_border=True), project)
    cells = read_cells(project)
    assert cells["object"].tolist() == [1, 2, 3, 4]
    assert cells["touches_border"].tolist() == [False, False, False, True]
    assert read_fields(project)[["n_objects", "n_kept", "n_border"]].iloc[0].tolist() == [4, 4, 0]


def test_crop_is_centred_on_the_centroid_and_padded_with_the_border_median(tmp_path, project):
    h, w = SHAPE
    ramp = np.arange(h * w, dtype=np.uint16).reshape(h, w)
    image = np.stack([ramp, ramp // 2])
    _, mask = disc_field([(40, 50), (3, 100)])
    spec = save_field(tmp_path / "f", "A01", image, mask)
    ingest_fields(FieldInput([spec], keep_border=True), project, IngestConfig(crop_size=32))
    crops = PixelStore(project).read_raw(["A01:1", "A01:2"])
    assert crops.shape == (2, 2, 32, 32)
    np.testing.assert_array_equal(crops[0], image[:, 40 - 16 : 40 + 16, 50 - 16 : 50 + 16])
    border = np.concatenate([ramp[0], ramp[-1], ramp[1:-1, 0], ramp[1:-1, -1]])
    assert crops[1, 0, 0, 0] == np.rint(np.median(border))  # above the field's top edge
    np.testing.assert_array_equal(crops[1, 0, 13:, :], ramp[: 3 + 16, 100 - 16 : 100 + 16])


def test_crop_at_odd_sizes_and_float_fields():
    image = np.arange(2 * 20 * 30, dtype=np.float32).reshape(2, 20, 30)
    crops = crop_at(image, np.array([[10, 15], [0, 29]]), 9)
    assert crops.shape == (2, 2, 9, 9)
    np.testing.assert_array_equal(crops[0], image[:, 6:15, 11:20])
    assert crops[1, 1, 4, 4] == image[1, 0, 29]


def test_object_masks_keep_only_the_cell_itself(tmp_path, project):
    image, mask = disc_field([(40, 50), (40, 60)], radius=6)  # touching neighbours
    spec = save_field(tmp_path / "f", "A01", image, mask)
    ingest_fields([spec], project, IngestConfig(crop_size=32))
    view = open_part_view(project, 0, masks=True)
    masks = view.take(read_cells(project, ["row"])["row"].to_numpy())  # in table order
    assert masks.shape == (2, 32, 32) and masks.dtype == np.uint8
    expected = (mask[40 - 16 : 40 + 16, 50 - 16 : 50 + 16] == 1).astype(np.uint8)
    np.testing.assert_array_equal(masks[0], expected)
    assert masks[0].sum() == (mask == 1).sum()


def test_empty_field_is_noted_and_the_rest_ingests(tmp_path, project):
    image, mask = disc_field()
    specs = [
        save_field(tmp_path / "f", "A01", image, mask),
        save_field(tmp_path / "f", "A02", image, np.zeros(SHAPE, np.uint16)),
    ]
    report = ingest_fields(specs, project)
    assert report.n_cells == 3 and ("A02", "no objects found (empty field)") in report.skipped
    fields = read_fields(project)
    assert fields["key"].tolist() == ["A01", "A02"] and fields["n_objects"].tolist() == [4, 0]


def test_field_with_other_channel_count_is_skipped(tmp_path, project):
    image, mask = disc_field()
    three, _ = disc_field(channels=3)
    specs = [
        save_field(tmp_path / "f", "A01", image, mask),
        save_field(tmp_path / "f", "A02", three, mask),
    ]
    report = ingest_fields(specs, project)
    assert report.skipped == [("A02", "3 channels; the first field has 2")]
    assert set(read_cells(project)["field"]) == {"A01"}


def test_fields_are_read_and_released_one_at_a_time(tmp_path, project, monkeypatch):
    image, _ = disc_field()
    specs = [save_field(tmp_path / "f", f"A0{i}", image) for i in range(1, 5)]
    events, alive = [], []
    real_read = field_tasks.read_field

    def counting_read(spec, non_finite=None):
        gc.collect()
        alive.append(sum(ref() is not None for ref in refs))
        array = real_read(spec, non_finite)
        refs.append(weakref.ref(array))
        events.append("read")
        return array

    def segmenter(field):
        events.append("segment")
        return ndimage.label(field[0] > 500)[0]

    refs: list[weakref.ref] = []
    monkeypatch.setattr(field_tasks, "read_field", counting_read)
    report = ingest_fields(FieldInput(specs, segmenter), project)
    assert events == ["read", "segment"] * 4
    assert alive == [0, 0, 0, 0]  # no earlier field is still in memory when the next is read
    assert report.n_cells == 12


def test_default_segmentation_is_classical(tmp_path, project):
    image, _ = disc_field(radius=8)
    spec = save_field(tmp_path / "f", "A01", image)
    report = ingest_fields([spec], project)
    cells = read_cells(project)
    assert report.n_cells == 3  # the fourth disc is cut by the border
    found = list(zip(cells["centroid_y"].round(), cells["centroid_x"].round()))
    assert sorted(found) == sorted((float(y), float(x)) for y, x in CENTRES[:3])
    labels = read_field_mask(project, "A01")
    assert len({labels[y, x] for y, x in CENTRES}) == 4 and labels.max() == 4


def test_a_failing_segmenter_skips_the_field(tmp_path, project):
    image, mask = disc_field()
    specs = [
        save_field(tmp_path / "f", "A01", image, mask),
        save_field(tmp_path / "f", "A02", image),
    ]
    report = ingest_fields(FieldInput(specs, lambda f: np.zeros((3, 3), np.int32)), project)
    ((key, reason),) = report.skipped
    assert key == "A02" and "segmentation gave (3, 3) int32; expected (96, 128)" in reason
    with pytest.raises(DataError, match="no cells in 1 field.*segmentation gave"):
        ingest_fields(FieldInput([specs[1]], lambda f: np.ones(3)), tmp_path / "other")


def test_objects_at_given_centres_keep_their_cellprofiler_columns(tmp_path, project):
    image, _ = disc_field()
    objects = pd.DataFrame({"y": [30.2, 49.6, 500.0], "x": [29.9, 90.4, 3.0],
                            "ImageNumber": [7, 7, 7], "ObjectNumber": [1, 2, 3],
                            "cp_AreaShape_Area": [81.0, 80.0, 79.0]})  # fmt: skip
    spec = save_field(tmp_path / "f", "A01", image)
    spec = FieldSpec("img7", spec.channel_files, {"Well": "A01"}, objects=objects)
    report = ingest_fields([spec], project, IngestConfig(crop_size=16))
    cells = read_cells(project)
    assert cells["ObjectNumber"].tolist() == [1, 2] and set(cells["ImageNumber"]) == {7}
    assert cells["cp_AreaShape_Area"].tolist() == [81.0, 80.0]
    assert cells["bbox_min_row"].isna().all() and (cells["height"] == 16).all()
    assert any("1 object(s) centred outside" in n for n in report.notes)
    crops = PixelStore(project).read_raw(["img7:1"])
    np.testing.assert_array_equal(crops[0], image[:, 30 - 8 : 30 + 8, 30 - 8 : 30 + 8])
    with pytest.raises(DataError, match="objects were given as centres"):
        read_field_mask(project, "img7")


def test_truth_from_csv_reaches_the_cell_table(tmp_path, project):
    image, mask = disc_field()
    spec = save_field(tmp_path / "f", "A01", image, mask)
    csv = tmp_path / "objects.csv"
    csv.write_text("field,object,phenotype\nA01,1,normal\nA01,2,mitotic\nA01,4,normal\n")
    report = ingest_fields(FieldInput([spec], truth=read_truth_csv(csv)), project)
    truth = read_cells(project)["truth"]
    assert truth.iloc[:2].tolist() == ["normal", "mitotic"] and truth.isna().iloc[2]
    assert report.class_counts == {"normal": 1, "mitotic": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("field,label\nA01,x\n", r"no column\(s\) \['object'\]"),
        ("field,object,label\nA01,one,x\n", "line 2: object is not an integer"),
        ("field,object,label\nA01,1,x\nA01,1,y\n", "listed twice"),
    ],
)
def test_bad_truth_csv(tmp_path, text, message):
    csv = tmp_path / "truth.csv"
    csv.write_text(text)
    with pytest.raises(DataError, match=message):
        read_truth_csv(csv)
    with pytest.raises(DataError, match="does not exist"):
        read_truth_csv(tmp_path / "missing.csv")


def test_fields_table_and_field_readers(tmp_path, project):
    image, mask = disc_field()
    spec = save_field(tmp_path / "f", "A01", image, mask)
    ingest_fields([spec], project)
    fields = read_fields(project)
    assert fields.iloc[0]["mask"] == "fields/ome/P1.ome.zarr/A/1/0/labels/objects"
    assert fields.iloc[0]["ome_zarr"] == "fields/ome/P1.ome.zarr/A/1/0"
    assert list(fields.iloc[0]["channel_files"]) == [str(spec.channel_files[0])]
    assert fields.iloc[0]["well"] == "A01" and fields.iloc[0]["mask_file"] == str(spec.mask_file)
    np.testing.assert_array_equal(read_field_image(project, "A01"), image)
    np.testing.assert_array_equal(read_field_mask(project, "A01"), mask)
    with pytest.raises(DataError, match="no field 'B07'"):
        read_field_image(project, "B07")
    with pytest.raises(DataError, match="no fields table"):
        read_fields(tmp_path)


def test_a_second_ingest_adds_a_part_and_keeps_keys_unique(tmp_path, project):
    image, mask = disc_field()
    ingest_fields([save_field(tmp_path / "f1", "A01", image, mask)], project)
    report = ingest_fields([save_field(tmp_path / "f2", "A01", image, mask)], project)
    assert report.part == 1 and any("stored as A01.2" in n for n in report.notes)
    assert read_fields(project)["key"].tolist() == ["A01", "A01.2"]
    cells = read_cells(project)
    assert len(cells) == 6 and cells["cell_id"].is_unique
    assert [p["n_cells"] for p in read_parts(project)] == [3, 3]
    np.testing.assert_array_equal(read_field_mask(project, "A01.2"), mask)


def test_ome_tiff_fields_name_the_channels_unless_names_are_given(tmp_path, project):
    image, mask = disc_field()
    path = tmp_path / "f" / "A01.ome.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, image, metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "GFP"]}})
    spec = FieldSpec("A01", (path,), {}, save_field(tmp_path / "m", "A01", image, mask).mask_file)
    report = ingest_fields([spec], project)
    assert report.channel_names == ("DAPI", "GFP")
    assert "Channel names from the OME metadata of A01.ome.tif: DAPI, GFP" in report.summary()
    given = ingest_fields([spec], tmp_path / "p2", IngestConfig(channel_names=("H2B", "tub")))
    assert given.channel_names == ("H2B", "tub")


def test_fields_already_in_the_project_are_left_out(tmp_path, project):
    image, mask = disc_field()
    first = save_field(tmp_path / "f1", "A01", image, mask)
    ingest_fields([first], project)
    with pytest.raises(DataError, match=r"f1: all 1 fields are already in the project \(e.g. A01"):
        ingest_fields([first], project)
    second = save_field(tmp_path / "f1", "A02", image, mask)
    report = ingest_fields([first, second], project)
    assert "Left out 1 fields already in the project (e.g. A01); added the 1 new" in report.notes
    assert read_fields(project)["key"].tolist() == ["A01", "A02"]
    assert len(read_cells(project)) == 6


def test_fields_of_mixed_bit_depths_are_named(tmp_path, project):
    image, mask = disc_field()
    deep = save_field(tmp_path / "f", "A01", image, mask)
    shallow = save_field(tmp_path / "f", "A02", (image // 8).astype(np.uint8), mask)
    report = ingest_fields([deep, shallow], project)
    assert report.dtype == "uint16"
    assert any(
        n.startswith("Mixed bit depths (uint16 (e.g. A01), uint8 (e.g. A02)) stored as uint16")
        for n in report.notes
    ), report.notes


def test_binary_masks_become_connected_components(tmp_path, project):
    image, mask = disc_field()
    spec = save_field(tmp_path / "f", "A01", image, ((mask > 0) * 255).astype(np.uint8))
    report = ingest_fields([spec], project)
    assert report.n_cells == 3 and any("binary mask" in n for n in report.notes)


def test_no_field_readable_is_an_error(tmp_path, project):
    spec = FieldSpec("gone", (tmp_path / "gone.tif",))
    where = f"{tmp_path}: no readable field among 1; e.g. gone: .*gone.tif"  # names its folder
    with pytest.raises(DataError, match=where):
        ingest_fields([spec], project)
    with pytest.raises(DataError, match="no fields given"):
        ingest_fields([], project)


def test_demo_fields_with_their_true_masks(tmp_path, project):
    from datasets.fields.demo import FILENAME_PATTERN, generate_demo_fields

    out = tmp_path / "demo"
    summary = generate_demo_fields(out, n_fields=2, size=160, seed=1)
    fields, skipped = find_fields(out, FILENAME_PATTERN, out / "masks")
    assert len(fields) == 2 and not skipped and all(f.mask_file for f in fields)
    report = ingest_fields(FieldInput(fields, truth=read_truth_csv(out / "objects.csv")), project)
    table = read_fields(project)
    assert table["n_objects"].sum() == summary.n_objects
    assert report.n_cells == table["n_kept"].sum() > 0
    cells = read_cells(project)
    assert cells["truth"].notna().all() and set(cells["plate"]) <= {"P1", "P2"}


@pytest.mark.skipif(not DSB.exists(), reason="shared dsb2018 field not present")
def test_a_mask_left_among_the_fields_is_skipped_as_a_label_image(tmp_path):
    folder = tmp_path / "fields"
    folder.mkdir()
    for name in ("img2d.tif", "mask2d.tif"):  # the mask beside its field, not in masks/
        (folder / name).write_bytes((DSB / name).read_bytes())
    fields, _ = find_fields(folder, None)
    report = ingest_fields(fields, tmp_path / "p", IngestConfig(crop_size=None))
    assert [key for key, _ in report.skipped] == ["mask2d"]
    assert "a label image (125 numbered objects), not a microscope image" in report.skipped[0][1]
    assert report.n_cells > 90  # the field itself
    size_note = next(n for n in report.notes if n.startswith("Crop size"))
    assert f"from {report.n_cells} objects' sizes" in size_note  # the mask's objects not counted


def test_channel_files_read_without_a_pattern_name_the_pattern(tmp_path, project):
    from datasets.fields.demo import generate_demo_fields

    generate_demo_fields(tmp_path / "demo", n_fields=2, size=160, seed=1)  # P1_..._w1.tif, _w2
    fields, _ = find_fields(tmp_path / "demo", None)
    report = ingest_fields(fields, project)
    note = next(n for n in report.notes if "--pattern" in n)
    assert "the 4 files look like one file per channel (2 channels of 2 fields)" in note
    assert "_w{channel}.tif'" in note


def test_the_report_counts_objects_segmentation_left_out_for_their_size(tmp_path, project):
    yy, xx = np.mgrid[:140, :140]
    image = np.full((140, 140), 200.0) + np.random.default_rng(0).normal(0, 20, (140, 140))
    for cy, cx in ((28, 28), (28, 112), (112, 28), (112, 112), (70, 70)):
        image[np.hypot(yy - cy, xx - cx) < 20] += 800  # nuclei of 20 px radius
    for cy, cx in ((8, 64), (132, 64)):
        image[np.hypot(yy - cy, xx - cx) < 3.5] += 800  # two specks: larger than noise
    (tmp_path / "f").mkdir()
    tifffile.imwrite(tmp_path / "f" / "A01.tif", np.clip(image, 0, None).astype(np.uint16))
    fields, _ = find_fields(tmp_path / "f", None)
    report = ingest_fields(
        FieldInput(fields, keep_border=True), project, IngestConfig(crop_size=64)
    )
    assert report.n_cells == 5
    assert any(n.startswith("Segmentation left out 2 specks") for n in report.notes), report.notes


def test_an_intensity_image_given_as_a_mask_is_refused(tmp_path):
    from datasets.fields.masks import read_mask

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 200, (128, 128)).astype(np.uint16)  # every grey level scattered
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    with pytest.raises(DataError, match="grey.tif: not a label image"):
        read_mask(tmp_path / "grey.tif", (128, 128))
    labels = np.zeros((128, 128), np.uint16)  # 40 objects, one of them in two pieces
    for k in range(40):
        r, c = divmod(k, 8)
        labels[4 + 15 * r : 12 + 15 * r, 4 + 15 * c : 12 + 15 * c] = k + 1
    labels[120:124, 120:124] = 1
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    assert np.array_equal(read_mask(tmp_path / "labels.tif", (128, 128)), labels)


def test_masks_that_match_no_field_are_an_error(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "m").mkdir()
    tifffile.imwrite(tmp_path / "f" / "A01.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(tmp_path / "m" / "other.tif", np.zeros((64, 64), np.uint16))
    with pytest.raises(DataError, match=r"m: no mask matches a field .*field A01 looks for a01"):
        find_fields(tmp_path / "f", masks=tmp_path / "m")


def test_a_field_that_cannot_fit_in_memory_is_refused_before_it_is_read(
    tmp_path, project, monkeypatch
):
    import datasets.fields.ingest as field_ingest

    image, mask = disc_field()
    spec = save_field(tmp_path / "f", "A01", image, mask)
    need = field_ingest.PEAK_PER_PIXEL_BYTE * image.nbytes
    monkeypatch.setattr(field_ingest, "available_memory", lambda: need - 1)
    with pytest.raises(DataError, match=r"A01.*field needs about .* GiB to segment and measure"):
        ingest_fields([spec], project)
    monkeypatch.setattr(field_ingest, "available_memory", lambda: need + 1)
    assert ingest_fields([spec], project).n_cells == 3

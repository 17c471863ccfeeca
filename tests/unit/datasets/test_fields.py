"""Finding whole fields in a folder: patterns, grouping, masks, and bad input as skipped entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from datasets.errors import DataError
from datasets.fields.files import field_header, find_fields, parse_pattern, read_field
from datasets.fields.masks import read_mask

PATTERN = "{plate}_{well}_s{site}_w{channel}.tif"


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, photometric="minisblack")
    return path


def plane(value: int, shape=(24, 32), dtype=np.uint16) -> np.ndarray:
    return np.full(shape, value, dtype=dtype)


def per_channel_folder(root: Path, wells=("A01", "B02"), channels=(1, 2)) -> Path:
    for well in wells:
        for c in channels:
            write(root / f"P1_{well}_s1_w{c}.tif", plane(10 * c))
    return root


# -- patterns -----------------------------------------------------------------------------------


def test_pattern_names_key_and_escaped_literals():
    parsed = parse_pattern(PATTERN)
    assert parsed.names == ("plate", "well", "site")
    assert parsed.key_template == "{plate}_{well}_s{site}"
    assert parsed.by_name
    odd = parse_pattern("scan(1).{well}+w{channel}.ome.tif")  # regex characters are literal
    assert odd.regex.fullmatch("scan(1).A01+w2.ome.tif")
    assert not odd.regex.fullmatch("scan1.A01+w2.ome.tif")
    assert parse_pattern("w{channel}_{well}.tif").key_template == "{well}"
    assert parse_pattern("{plate}/{well}_ch{channel}.png").key_template == "{plate}/{well}"
    assert not parse_pattern("{plate}/{well}_ch{channel}.png").by_name


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("{plate}_{well}.tif", r"has no \{channel\}"),
        ("{plate}_{1x}_w{channel}.tif", "is not a name"),
        ("{row}{col}_w{channel}.tif", "clashes with the cell table"),
        ("{well}_w{channel}}.tif", "unbalanced brace"),
        ("{cell_w{channel}.tif", "unbalanced brace in '{cell_w'"),
    ],
)
def test_bad_patterns_are_one_line_errors(pattern, message):
    with pytest.raises(DataError, match=message) as info:
        parse_pattern(pattern)
    assert "\n" not in str(info.value)


def test_grouping_metadata_and_channel_order(tmp_path):
    root = per_channel_folder(tmp_path / "f", channels=(2, 10, 1))
    write(root / "notes" / "overview.tif", plane(1))
    fields, skipped = find_fields(root, PATTERN)
    assert [f.key for f in fields] == ["P1_A01_s1", "P1_B02_s1"]
    assert fields[0].metadata == {"plate": "P1", "well": "A01", "site": "1"}
    assert [p.name for p in fields[0].channel_files] == [
        "P1_A01_s1_w1.tif",
        "P1_A01_s1_w2.tif",
        "P1_A01_s1_w10.tif",
    ]  # numeric, not 1, 10, 2
    assert skipped == [("notes/overview.tif", f"does not match pattern {PATTERN!r}")]
    image = read_field(fields[0])
    assert image.shape == (3, 24, 32) and image[:, 0, 0].tolist() == [10, 20, 100]


def test_missing_channel_skips_the_field_naming_the_file(tmp_path):
    root = per_channel_folder(tmp_path / "f", wells=("A01", "A02", "A03"))
    (root / "P1_A02_s1_w2.tif").unlink()
    fields, skipped = find_fields(root, PATTERN)
    assert [f.key for f in fields] == ["P1_A01_s1", "P1_A03_s1"]
    ((key, reason),) = skipped
    assert key == "P1_A02_s1"
    assert "missing channel 2 file (P1_A02_s1_w2.tif)" in reason and "channels 1, 2" in reason


def test_pattern_with_subfolders_and_pattern_matched_in_subfolders(tmp_path):
    root = tmp_path / "f"
    for plate in ("P1", "P2"):
        for c in (1, 2):
            write(root / plate / f"A01_w{c}.tif", plane(c))
    fields, skipped = find_fields(root, "{plate}/{well}_w{channel}.tif")
    assert [(f.key, f.metadata["plate"]) for f in fields] == [("P1/A01", "P1"), ("P2/A01", "P2")]
    by_name, _ = find_fields(root, "{well}_w{channel}.tif")  # same names in two folders
    assert [f.key for f in by_name] == ["P1/A01", "P2/A01"] and not skipped


def test_a_plate_name_with_underscores_splits_at_the_well(tmp_path):
    root = tmp_path / "f"
    for name in ("My_Plate_1_B02", "Screen_2_r03c11", "X_odd_well"):
        for c in (1, 2):
            write(root / f"{name}_s1_w{c}.tif", plane(c))
    fields, skipped = find_fields(root, PATTERN)
    got = {f.key: (f.metadata["plate"], f.metadata["well"]) for f in fields}
    assert got == {
        "My_Plate_1_B02_s1": ("My_Plate_1", "B02"),
        "Screen_2_r03c11_s1": ("Screen_2", "r03c11"),
        "X_odd_well_s1": ("X", "odd_well"),  # no well-shaped part: the first split, as before
    }
    assert not skipped


def test_channel_files_of_different_sizes_are_skipped(tmp_path):
    root = per_channel_folder(tmp_path / "f")
    write(root / "P1_B02_s1_w2.tif", plane(5, shape=(20, 32)))
    fields, skipped = find_fields(root, PATTERN)
    assert [f.key for f in fields] == ["P1_A01_s1"]
    assert skipped[0][0] == "P1_B02_s1" and "must have one size" in skipped[0][1]
    assert "20x32" in skipped[0][1] and "24x32" in skipped[0][1]


# -- one file per field -------------------------------------------------------------------------


def test_multichannel_files_are_fields_with_their_layout(tmp_path):
    root = tmp_path / "f"
    first = np.stack([plane(1), plane(2), plane(3)])
    write(root / "a.ome.tif", first)  # (C, H, W)
    write(root / "sub" / "b.tif", np.moveaxis(first, 0, -1).copy())  # (H, W, C)
    Image.fromarray(plane(7, dtype=np.uint8)).save(root / "c.png")
    (root / "broken.tif").write_bytes(b"not a tiff at all")
    (root / "readme.txt").write_text("ignored sidecar")
    fields, skipped = find_fields(root)
    assert [f.key for f in fields] == ["a", "c", "sub/b"]
    assert field_header(fields[0]).channels == 3
    assert read_field(fields[2])[:, 0, 0].tolist() == [1, 2, 3]
    assert read_field(fields[1]).shape == (1, 24, 32)
    ((name, reason),) = skipped
    assert name == "broken" and "cannot read" in reason and "broken.tif" in reason


def test_empty_or_missing_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no fields found"):
        find_fields(tmp_path / "empty")
    with pytest.raises(DataError, match="nowhere: fields folder does not exist"):
        find_fields(tmp_path / "nowhere")
    root = per_channel_folder(tmp_path / "f")
    with pytest.raises(DataError, match="no fields found .*does not match pattern"):
        find_fields(root, "{well}_ch{channel}.tif")


# -- masks ------------------------------------------------------------------------------------


def test_masks_matched_by_key_or_cellpose_name(tmp_path):
    root = per_channel_folder(tmp_path / "f", wells=("A01", "B02", "C03"))
    masks = root / "masks"
    write(masks / "P1_A01_s1.tif", plane(1))
    Image.fromarray(plane(2, dtype=np.uint16)).save(masks / "P1_B02_s1_w1_cp_masks.png")
    write(masks / "stray.tif", plane(3))
    fields, skipped = find_fields(root, PATTERN, masks)
    assert [(f.key, f.mask_file and f.mask_file.name) for f in fields] == [
        ("P1_A01_s1", "P1_A01_s1.tif"),
        ("P1_B02_s1", "P1_B02_s1_w1_cp_masks.png"),
        ("P1_C03_s1", None),
    ]
    assert skipped == [("stray.tif", "mask matches no field; name it <field key>.tif")]
    assert read_mask(fields[1].mask_file, (24, 32)).max() == 2


def test_masks_folder_is_left_out_unless_given(tmp_path):
    root = per_channel_folder(tmp_path / "f")
    write(root / "masks" / "P1_A01_s1.tif", plane(1))
    fields, skipped = find_fields(root)
    assert all("masks" not in f.key for f in fields) and len(fields) == 4
    assert skipped == [("masks/", "a masks folder; pass it as the masks folder to use it")]


def test_masks_beside_the_fields(tmp_path):
    root = tmp_path / "f"
    write(root / "img1.tif", np.stack([plane(1), plane(2)]))
    write(root / "img1_cp_masks.tif", plane(4))
    fields, skipped = find_fields(root, masks=root)
    assert [(f.key, f.mask_file.name) for f in fields] == [("img1", "img1_cp_masks.tif")]
    assert not skipped
    alone, skipped = find_fields(root)
    assert [f.key for f in alone] == ["img1"] and "named like a mask" in skipped[0][1]


@pytest.mark.parametrize(
    ("mask", "reason"),
    [
        (np.zeros((24, 30), np.uint16), "24x30 pixels but the field is 24x32"),
        (np.zeros((24, 32), np.float32), "dtype float32 is not an integer label image"),
        (np.zeros((2, 24, 32), np.uint16), "2 channels; a mask is one integer label image"),
    ],
)
def test_bad_masks_skip_their_field(tmp_path, mask, reason):
    root = per_channel_folder(tmp_path / "f")
    write(root / "masks" / "P1_A01_s1.tif", mask)
    fields, skipped = find_fields(root, PATTERN, root / "masks")
    assert [f.key for f in fields] == ["P1_B02_s1"]
    ((name, why),) = skipped
    assert name == "P1_A01_s1.tif" and why.startswith("mask of field P1_A01_s1: ")
    assert reason in why
    with pytest.raises(DataError, match="P1_A01_s1.tif: mask "):
        read_mask(root / "masks" / "P1_A01_s1.tif", (24, 32))


def test_read_mask_refuses_negative_labels(tmp_path):
    path = write(tmp_path / "m.tif", np.full((24, 32), -1, np.int32))
    with pytest.raises(DataError, match="negative labels"):
        read_mask(path, (24, 32))


def test_the_mask_of_a_skipped_field_is_not_reported_twice(tmp_path):
    root = per_channel_folder(tmp_path / "f", wells=("A01", "A02", "A03"))
    (root / "P1_A02_s1_w2.tif").unlink()
    for well in ("A01", "A02", "A03"):
        write(root / "masks" / f"P1_{well}_s1.tif", plane(1))
    fields, skipped = find_fields(root, PATTERN, root / "masks")
    assert [f.key for f in fields] == ["P1_A01_s1", "P1_A03_s1"]
    assert [name for name, _ in skipped] == ["P1_A02_s1"]


def test_no_readable_field_names_a_pattern_only_for_channel_files(tmp_path):
    for folder, names in (("per", ["A01_w1", "A01_w2", "A02_w1", "A02_w2"]), ("one", ["a", "b"])):
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / f"{name}.tif").write_bytes(b"II*\x00broken")
    with pytest.raises(DataError, match=r"one file per channel\? pass --pattern '\{name\}_w"):
        find_fields(tmp_path / "per", None)
    with pytest.raises(DataError) as info:
        find_fields(tmp_path / "one", None)
    assert "no fields found" in str(info.value) and "pattern" not in str(info.value)


def test_a_pattern_without_channel_names_the_metadata_of_multichannel_fields(tmp_path):
    for name in ("P1_B02_s1.tif", "P1_B02_s2.tif", "P2_C03_s1.tif"):
        tifffile.imwrite(tmp_path / name, np.zeros((2, 32, 32), np.uint16))
    fields, skipped = find_fields(tmp_path, pattern="{plate}_{well}_s{site}.tif")
    assert not skipped and [f.key for f in fields] == ["P1_B02_s1", "P1_B02_s2", "P2_C03_s1"]
    assert [len(f.channel_files) for f in fields] == [1, 1, 1]
    assert fields[2].metadata == {"plate": "P2", "well": "C03", "site": "1"}
    with pytest.raises(DataError, match="has no {channel}"):  # crops: channels are files
        parse_pattern("{plate}_{well}.tif")

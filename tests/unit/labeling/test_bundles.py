"""The crops ZIP's TIFFs: the stored dtype kept, channel names in the metadata."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile

from labeling.io.bundles import _tiff_bytes, safe_name

NAMES, COLOURS = ["DNA", "Tubulin"], ["#3b82f6", "#22c55e"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_imagej_hyperstack_keeps_pixels_names_and_colours(dtype):
    crop = (np.arange(2 * 6 * 6) * 3 % 251).reshape(2, 6, 6).astype(dtype)
    with tifffile.TiffFile(io.BytesIO(_tiff_bytes(crop, NAMES, COLOURS))) as tif:
        image, meta = tif.asarray(), tif.imagej_metadata
        assert tif.series[0].axes == "CYX"
    assert image.dtype == crop.dtype and np.array_equal(image, crop)
    assert meta["Labels"] == NAMES and meta["channels"] == 2 and meta["mode"] == "composite"
    green = meta["LUTs"][1]
    assert green.shape == (3, 256) and green[:, -1].tolist() == [0x22, 0xC5, 0x5E]


@pytest.mark.parametrize("dtype", [np.int16, np.uint32, np.float64])
def test_other_dtypes_are_plain_tiffs_with_named_channels(dtype):
    crop = (np.arange(2 * 6 * 6) - 30).reshape(2, 6, 6).astype(dtype)
    with tifffile.TiffFile(io.BytesIO(_tiff_bytes(crop, NAMES, COLOURS))) as tif:
        image, meta = tif.asarray(), tif.shaped_metadata[0]
    assert image.dtype == crop.dtype and np.array_equal(image, crop)
    assert meta["axes"] == "CYX" and meta["channels"] == NAMES


def test_safe_name_keeps_folders_inside_the_zip():
    assert safe_name("../a/b:c") == "_a_b_c" and safe_name("...") == "_"


def test_safe_name_cuts_long_names_and_keeps_them_distinct():
    from labeling.io.bundles import NAME_MAX

    a, b = safe_name("x" * 200 + "a"), safe_name("x" * 200 + "b")
    assert len(a) == len(b) == NAME_MAX and a != b and a.startswith("x" * 60)
    assert safe_name("x" * NAME_MAX) == "x" * NAME_MAX


def test_safe_name_avoids_windows_device_names():
    assert [safe_name(n) for n in ["con", "AUX", "com1.tif", "nul.", "lpt9 "]] == [
        "con_", "AUX_", "com1_.tif", "nul_", "lpt9_",
    ]  # fmt: skip
    assert [safe_name(n) for n in ["console", "com10", "aux_cells", "my con"]] == [
        "console", "com10", "aux_cells", "my con",
    ]  # fmt: skip

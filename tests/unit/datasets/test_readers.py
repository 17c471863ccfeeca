"""Readers for each format, layout detection, bad files, and crop fitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from datasets.crops.readers import (
    SUPPORTED_SUFFIXES,
    find_images,
    layout_3d,
    read_header,
    read_image_file,
    read_npz_labels,
    scan_folder,
)
from datasets.crops.resize import fit_crops, rescale_images, storage_dtype, widest_dtype
from datasets.errors import DataError

# ---------------------------------------------------------------- finding files


def test_find_images_is_recursive_sorted_and_ignores_sidecars(make, tmp_path, rng):
    make.tiff(tmp_path / "b" / "z.tif", make.blob(rng))
    make.tiff(tmp_path / "a.TIFF", make.blob(rng))
    make.npz(tmp_path / "b" / "c" / "x.npz", np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "labels.csv").write_text("path,label\n")
    (tmp_path / ".hidden.tif").write_bytes(b"junk")
    (tmp_path / "notes.bmp").write_bytes(b"junk")
    found = find_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.TIFF",
        "b/c/x.npz",
        "b/z.tif",
    ]
    assert scan_folder(tmp_path)[1] == [tmp_path / "notes.bmp"]


def test_find_images_missing_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_images(tmp_path / "nope")
    with pytest.raises(DataError, match="no images found"):
        find_images(tmp_path)
    (tmp_path / "a.bmp").write_bytes(b"x")
    with pytest.raises(DataError, match=r"1 files of unsupported type \.bmp"):
        find_images(tmp_path)


def test_supported_suffixes():
    assert set(SUPPORTED_SUFFIXES) == {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npz"}


# ---------------------------------------------------------------- TIFF


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_2d_keeps_bit_depth(make, tmp_path, rng, dtype):
    image = make.blob(rng, channels=1, dtype=dtype)[0]
    pixels, layout = read_image_file(make.tiff(tmp_path / "a.tif", image))
    assert pixels.shape == (1, 1, 40, 40) and pixels.dtype == dtype
    assert layout == "2-D"
    np.testing.assert_array_equal(pixels[0, 0], image)


def test_tiff_channel_first_and_last_give_the_same_pixels(make, tmp_path, rng):
    image = make.blob(rng, channels=3, size=32)  # (3, 32, 32)
    first, note_first = read_image_file(make.tiff(tmp_path / "cf.tif", image))
    last, note_last = read_image_file(make.tiff(tmp_path / "cl.tif", np.moveaxis(image, 0, -1)))
    assert (note_first, note_last) == ("channel-first", "channel-last")
    assert first.shape == last.shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(first, last)
    np.testing.assert_array_equal(first[0], image)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((1, 40, 40), "channel-first"), ((5, 6, 6), "channel-first"), ((40, 30, 5), "channel-last")],
)
def test_layout_rules(shape, expected):
    assert layout_3d(shape) == expected


@pytest.mark.parametrize("shape", [(10, 10, 10), (3, 4, 40), (4, 40, 3), (40, 3, 40)])
def test_ambiguous_layout_is_a_clear_error(make, tmp_path, shape):
    path = make.tiff(tmp_path / "amb.tif", np.ones(shape, np.uint16))
    with pytest.raises(DataError, match=r"amb\.tif: cannot read \(ambiguous image shape"):
        read_image_file(path)
    with pytest.raises(DataError, match="ambiguous image shape"):
        read_header(path)


def test_big_endian_tiff_is_read_in_native_byte_order(tmp_path, rng, make):
    image = make.blob(rng, channels=2)
    path = tmp_path / "be.tif"
    tifffile.imwrite(path, image, byteorder=">", photometric="minisblack")
    pixels, _ = read_image_file(path)
    assert pixels.dtype == np.dtype("=u2") and read_header(path).dtype == np.uint16
    np.testing.assert_array_equal(pixels[0], image)


def test_tiff_leading_singleton_axes_are_squeezed(make, tmp_path, rng):
    image = make.blob(rng, channels=2)[None]  # (1, 2, 40, 40), as ImageJ writes
    pixels, layout = read_image_file(make.tiff(tmp_path / "a.tif", image))
    assert pixels.shape == (1, 2, 40, 40) and layout == "channel-first"


def test_tiff_written_one_page_per_channel_keeps_every_channel(tmp_path, rng):
    """Channels saved as separate pages without stack metadata are one 2-D series each; they
    are the image's channels, not a 1-channel image and some ignored pages."""
    planes = rng.integers(0, 4000, size=(3, 40, 40)).astype(np.uint16)
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for plane in planes:
            tif.write(plane)
    header = read_header(path)
    assert (header.channels, header.height, header.width) == (3, 40, 40)
    pixels, layout = read_image_file(path)
    assert layout == header.layout == "one page per channel"
    np.testing.assert_array_equal(pixels[0], planes)
    # pages of different sizes (e.g. a thumbnail) are not channels: the first series is read
    with tifffile.TiffWriter(tmp_path / "thumb.tif") as tif:
        tif.write(planes[0])
        tif.write(planes[1, :20, :20])
    assert read_header(tmp_path / "thumb.tif").channels == 1


def test_truncated_tiff_header_ok_pixels_fail(make, tmp_path, rng):
    path = make.tiff(tmp_path / "t.tif", make.blob(rng, channels=3, size=64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert read_header(path).channels == 3  # header is at the start
    with pytest.raises(DataError, match=r"t\.tif: cannot read \("):
        read_image_file(path)


@pytest.mark.parametrize("name", ["junk.tif", "junk.png", "junk.jpg", "junk.npz"])
def test_garbage_files_raise_one_line_data_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image at all" * 3)
    with pytest.raises(DataError, match=rf"{name}: cannot read \(") as info:
        read_image_file(path)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="cannot read"):
        read_header(path)


def test_tiff_whose_first_page_offset_points_nowhere_names_the_cause(tmp_path, rng):
    path = tmp_path / "bad.tif"
    path.write_bytes(b"II*\x00" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"bad\.tif: cannot read \(no image in the TIFF"):
        read_image_file(path)


def test_tiff_whose_header_claims_more_than_memory_is_refused_unread(tmp_path):
    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, np.zeros((10, 10), np.uint16))
    with tifffile.TiffFile(path, mode="r+b") as tif:  # a damaged header: 200,000 px square
        tif.pages[0].tags["ImageWidth"].overwrite(200_000)
        tif.pages[0].tags["ImageLength"].overwrite(200_000)
    assert read_header(path).height == 200_000  # the header alone is read
    with pytest.raises(DataError, match=r"huge\.tif: cannot read \(the header claims "
                       r"200000x200000 pixels of uint16, 74\.5 GiB; at most 16 GiB"):  # fmt: skip
        read_image_file(path)


@pytest.mark.parametrize("compression", ["lzw", "zstd", "jpeg"])
def test_compressed_tiffs_are_read(tmp_path, rng, make, compression):
    if compression == "jpeg":  # lossy and 8-bit: RGB, as microscopes' JPEG-in-TIFF is
        image = np.moveaxis(make.blob(rng, channels=3, dtype=np.uint8, peak=200), 0, -1)
    else:
        image = make.blob(rng, channels=2, dtype=np.uint16, peak=40000)
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, image, compression=compression)
    pixels, _ = read_image_file(path)
    assert pixels.dtype == image.dtype and pixels.size == image.size
    if compression == "jpeg":
        assert abs(float(pixels.mean()) - float(image.mean())) < 3
    else:
        np.testing.assert_array_equal(pixels[0], image)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "a.bmp"
    path.write_bytes(b"BM")
    with pytest.raises(DataError, match=r"a\.bmp: cannot read \(unsupported file type '\.bmp'\)"):
        read_image_file(path)


# ---------------------------------------------------------------- PNG / JPEG


def test_png_grey_8_and_16_bit(make, tmp_path, rng):
    grey8 = make.blob(rng, channels=1, dtype=np.uint8, peak=200)[0]
    grey16 = make.blob(rng, channels=1, dtype=np.uint16, peak=40000)[0]
    p8, _ = read_image_file(make.pil(tmp_path / "g8.png", grey8))
    p16, note = read_image_file(make.pil(tmp_path / "g16.png", grey16))
    assert p8.dtype == np.uint8 and p16.dtype == np.uint16 and note == "grey 16-bit"
    np.testing.assert_array_equal(p8[0, 0], grey8)
    np.testing.assert_array_equal(p16[0, 0], grey16)


@pytest.mark.parametrize("bands, kept", [(3, 3), (4, 3), (2, 1)])
def test_png_16_bit_colour_keeps_its_full_depth(tmp_path, rng, bands, kept):
    # Pillow decodes 48-bit RGB (and 64-bit RGBA, 32-bit grey+alpha) PNGs to 8 bits
    import imagecodecs

    image = rng.integers(100, 60000, (30, 20, bands), dtype=np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(imagecodecs.png_encode(image))
    pixels, note = read_image_file(path)
    assert pixels.dtype == np.uint16 and note == "16-bit colour PNG"
    np.testing.assert_array_equal(pixels[0], np.moveaxis(image[:, :, :kept], -1, 0))
    header = read_header(path)
    assert (header.channels, header.height, header.width) == (kept, 30, 20)
    assert header.dtype == np.uint16


def test_png_rgb_and_rgba_drops_alpha(make, tmp_path, rng):
    rgb = np.moveaxis(make.blob(rng, channels=3, dtype=np.uint8, peak=200), 0, -1)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    p_rgb, note_rgb = read_image_file(make.pil(tmp_path / "rgb.png", rgb))
    p_rgba, note_rgba = read_image_file(make.pil(tmp_path / "rgba.png", rgba))
    assert note_rgb == "RGB" and note_rgba == "RGBA, alpha dropped"
    assert p_rgb.shape == p_rgba.shape == (1, 3, 40, 40)
    np.testing.assert_array_equal(p_rgba, p_rgb)
    header = read_header(tmp_path / "rgba.png")
    assert (header.channels, header.layout) == (3, "RGBA, alpha dropped")


def test_jpeg_grey_and_rgb(make, tmp_path, rng):
    rgb = np.moveaxis(make.blob(rng, channels=3, dtype=np.uint8, peak=200), 0, -1)
    p_rgb, _ = read_image_file(make.pil(tmp_path / "a.jpg", rgb))
    p_grey, note = read_image_file(make.pil(tmp_path / "b.jpeg", rgb[..., 0]))
    assert p_rgb.shape == (1, 3, 40, 40) and p_rgb.dtype == np.uint8
    assert p_grey.shape == (1, 1, 40, 40) and note == "grey"
    assert abs(float(p_rgb.mean()) - float(rgb.mean())) < 3  # lossy, but close


def test_palette_png_becomes_rgb(make, tmp_path, rng):
    rgb = np.moveaxis(make.blob(rng, channels=3, dtype=np.uint8, peak=200), 0, -1)
    pixels, note = read_image_file(make.pil(tmp_path / "p.png", rgb, mode="P"))
    assert pixels.shape == (1, 3, 40, 40) and note.startswith("palette")


def test_grey_palette_png_is_one_channel(tmp_path, rng):
    grey = rng.integers(0, 256, (30, 20), dtype=np.uint8)
    image = Image.new("P", (20, 30))
    image.putdata(grey.ravel().tolist())
    image.putpalette([v for g in range(256) for v in (g, g, g)])  # every colour a grey
    image.save(tmp_path / "g.png")
    pixels, note = read_image_file(tmp_path / "g.png")
    assert pixels.shape == (1, 1, 30, 20) and note == "grey palette"
    np.testing.assert_array_equal(pixels[0, 0], grey)
    assert read_header(tmp_path / "g.png").channels == 1


# ---------------------------------------------------------------- npz


def test_npz_nchw_and_nhw_with_labels(make, tmp_path, rng):
    images = np.stack([make.blob(rng, channels=2, size=16) for _ in range(4)])
    path = make.npz(tmp_path / "a.npz", images, labels=np.array(["x", "y", "x", "z"]))
    pixels, note = read_image_file(path)
    assert note == "npz (n, C, H, W)" and pixels.shape == (4, 2, 16, 16)
    np.testing.assert_array_equal(pixels, images)
    assert read_npz_labels(path).tolist() == ["x", "y", "x", "z"]
    flat = make.npz(tmp_path / "b.npz", images[:, 0])
    pixels, note = read_image_file(flat)
    assert note == "npz (n, H, W)" and pixels.shape == (4, 1, 16, 16)
    assert read_npz_labels(flat) is None
    header = read_header(path)
    assert (header.n, header.channels, header.height, header.dtype) == (4, 2, 16, np.uint16)


def test_compressed_npz_header(tmp_path):
    path = tmp_path / "c.npz"
    np.savez_compressed(path, images=np.zeros((3, 2, 20, 24), np.float32))
    header = read_header(path)
    assert (header.n, header.channels, header.height, header.width) == (3, 2, 20, 24)


def test_npz_without_images_or_truncated(make, tmp_path):
    np.savez(tmp_path / "a.npz", pixels=np.zeros((2, 8, 8)))
    with pytest.raises(DataError, match=r"a\.npz: cannot read \(no 'images' array"):
        read_image_file(tmp_path / "a.npz")
    with pytest.raises(DataError, match="no 'images' array"):
        read_header(tmp_path / "a.npz")
    full = make.npz(tmp_path / "b.npz", np.zeros((50, 2, 32, 32), np.uint16))
    full.write_bytes(full.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"b\.npz: cannot read \("):
        read_header(full)


def test_npz_object_array_refused(tmp_path):
    path = tmp_path / "o.npz"
    np.savez(path, images=np.array([None, 1], dtype=object))
    with pytest.raises(DataError, match=r"o\.npz: cannot read"):
        read_image_file(path)


# ---------------------------------------------------------------- crop fitting


def test_small_crop_padded_with_border_median_per_channel():
    crop = np.zeros((1, 2, 10, 12), np.uint16)
    crop[0, 0] = 900  # bright (brightfield-like) background
    crop[0, 1] = 5
    crop[0, :, 4:6, 4:6] = 3000  # the cell
    out = fit_crops(crop, 16)
    assert out.shape == (1, 2, 16, 16) and out.dtype == np.uint16
    assert out[0, 0, 0, 0] == 900 and out[0, 1, 15, 15] == 5
    np.testing.assert_array_equal(out[0, :, 3:13, 2:14], crop[0])  # centred, unchanged


def test_big_cell_is_centre_cropped_not_shrunk():
    crop = np.arange(2 * 80 * 70, dtype=np.float32).reshape(1, 2, 80, 70)
    out = fit_crops(crop, 64)
    np.testing.assert_array_equal(out[0], crop[0, :, 8:72, 3:67])


def test_crop_larger_on_one_axis_smaller_on_the_other():
    crop = np.full((1, 1, 70, 20), 7, np.uint8)
    out = fit_crops(crop, 32)
    assert out.shape == (1, 1, 32, 32) and (out == 7).all()


def test_rescale_is_dataset_wide_and_keeps_dtype(make, rng):
    images = np.stack([make.blob(rng, channels=2, size=20) for _ in range(3)])
    out = rescale_images(images, 2.0)
    assert out.shape == (3, 2, 40, 40) and out.dtype == np.uint16
    assert rescale_images(images, 1.0) is images


def test_storage_dtypes():
    assert storage_dtype(np.bool_) == np.uint8
    assert storage_dtype(np.int16) == np.float32
    assert storage_dtype(np.float64) == np.float32
    assert widest_dtype([np.dtype(np.uint8), np.dtype(np.uint16)]) == np.uint16
    assert widest_dtype([np.dtype(np.uint16), np.dtype(np.float32)]) == np.float32


def test_header_agrees_with_pixels_for_every_format(make, tmp_path, rng):
    files = [
        make.tiff(tmp_path / "a.tif", make.blob(rng, channels=3)),
        make.pil(tmp_path / "b.png", np.moveaxis(make.blob(rng, 3, dtype=np.uint8), 0, -1)),
        make.npz(tmp_path / "c.npz", np.stack([make.blob(rng, 2) for _ in range(3)])),
    ]
    for path in files:
        header = read_header(Path(path))
        pixels, layout = read_image_file(path)
        assert pixels.shape == (header.n, header.channels, header.height, header.width)
        assert pixels.dtype == header.dtype and layout == header.layout


@pytest.mark.parametrize("shape", [(1, 1), (1, 64), (64, 5)])
def test_a_2d_image_too_small_for_a_cell_is_a_clear_error(make, tmp_path, shape):
    path = make.tiff(tmp_path / "tiny.tif", np.ones(shape, np.uint16))
    with pytest.raises(DataError, match=r"tiny\.tif: cannot read \(image of .* is too small"):
        read_header(path)

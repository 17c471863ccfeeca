"""Read single-cell crop images (TIFF, PNG, JPEG, npz) into ``(n, C, H, W)`` arrays.

Every reader returns pixels in their native dtype with the channel axis first, plus a short
layout note (``"channel-first"``, ``"channel-last"``, ``"RGBA, alpha dropped"``, ...) so that
what was detected can be reported to the user. Errors from tifffile, PIL, numpy and zipfile
become one-line :class:`DataError` messages of the form ``"{path}: cannot read ({cause})"``.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tifffile
from PIL import Image

from datasets.errors import DataError

logger = logging.getLogger(__name__)
# tifffile logs "ERROR ... invalid page offset" for a damaged file before raising; the ingest
# reports that file once, with its cause, so tifffile's own lines are only noise.
logging.getLogger("tifffile").setLevel(logging.CRITICAL)

SUPPORTED_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npz")
#: Files that may sit next to crops without being reported as unsupported images.
_SIDECAR_SUFFIXES = (".csv", ".tsv", ".txt", ".md", ".json", ".toml", ".yaml", ".yml", ".ini")
_MAX_CHANNELS = 5  # a leading/trailing axis of 1-5 is read as the channel axis
_MIN_SIDE = 5  # spatial axes must be longer than this

#: Exceptions the image libraries raise for unreadable, truncated or malformed files.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes PIL.UnidentifiedImageError and truncated-file errors
    ValueError,
    EOFError,
    KeyError,
    IndexError,
    SyntaxError,  # PIL raises it for some broken headers
    struct.error,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tifffile.TiffFileError,
    Image.DecompressionBombError,
    MemoryError,  # a header claiming an image larger than memory (numpy's allocation fails)
)
#: File content quoted by a library's error (tifffile: ``header=b'...'``), cut from messages.
_FILE_BYTES = re.compile(r"[\s:,]*(header\s*=\s*)?b(['\"]).*?(?<!\\)\2")
_PIL_MODES = {  # mode -> (channels, dtype, layout note)
    "1": (1, np.uint8, "grey (1-bit)"),
    "L": (1, np.uint8, "grey"),
    "LA": (1, np.uint8, "grey+alpha, alpha dropped"),
    "P": (3, np.uint8, "palette, converted to RGB"),
    "PA": (3, np.uint8, "palette+alpha, converted to RGB, alpha dropped"),
    "RGB": (3, np.uint8, "RGB"),
    "RGBA": (3, np.uint8, "RGBA, alpha dropped"),
    "I;16": (1, np.uint16, "grey 16-bit"),
    "I;16B": (1, np.uint16, "grey 16-bit"),
    "I;16L": (1, np.uint16, "grey 16-bit"),
    "I": (1, np.int32, "grey 32-bit"),
    "F": (1, np.float32, "grey float"),
}


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What a file holds, read without decoding pixels where the format allows."""

    n: int  # number of images (1 except for npz)
    channels: int  # channels per image after layout handling (alpha dropped)
    height: int
    width: int
    dtype: np.dtype  # native pixel dtype
    layout: str  # layout note, e.g. "channel-first"


def scan_folder(root: Path) -> tuple[list[Path], list[Path]]:
    """Supported image files and unsupported other files under ``root``, recursively.

    Hidden files and folders (``.name``) and sidecar files such as ``labels.csv`` are ignored.
    Symbolic links (to files or folders) are never followed: they are listed with the
    unsupported files, and :func:`skip_reason` says they are links.

    Returns:
        ``(images, unsupported)``, both sorted.

    Raises:
        DataError: when ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"{root}: crops folder {what}; pass the folder that holds the images")
    images: list[Path] = []
    unsupported: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        unsupported.extend(Path(dirpath) / d for d in dirnames if os.path.islink(Path(dirpath) / d))
        for name in filenames:
            suffix = os.path.splitext(name)[1].lower()
            if name.startswith(".") or suffix in _SIDECAR_SUFFIXES or name == "Thumbs.db":
                continue
            path = Path(dirpath) / name
            link = os.path.islink(path)
            target = images if suffix in SUPPORTED_SUFFIXES and not link else unsupported
            target.append(path)
    return sorted(images), sorted(unsupported)


def skip_reason(path: Path) -> str:
    """Why :func:`scan_folder` left ``path`` out: a symbolic link (never followed, and nothing
    of its target is shown), or an unsupported file type."""
    if os.path.islink(path):
        return "a symbolic link (links are not followed)"
    return f"unsupported file type {Path(path).suffix.lower() or '(none)'!r}"


def find_images(root: Path) -> list[Path]:
    """All supported image files under ``root``, recursively, sorted.

    Raises:
        DataError: when ``root`` is missing, not a folder, or holds no supported image.
    """
    images, unsupported = scan_folder(root)
    if not images:
        extra = ""
        links = [p for p in unsupported if os.path.islink(p)]
        others = [p for p in unsupported if p not in links]
        notes = [f"{len(links)} symbolic links, not followed"] if links else []
        if others:
            kinds = sorted({p.suffix.lower() or p.name for p in others})
            notes.append(f"{len(others)} files of unsupported type {', '.join(kinds)}")
        if notes:
            extra = f" ({'; '.join(notes)})"
        raise DataError(
            f"{root}: no images found{extra}; supported types are {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return images


def layout_3d(shape: tuple[int, ...]) -> str:
    """Whether a 3-D image shape is ``"channel-first"`` or ``"channel-last"``.

    A leading axis of 1-5 with both trailing axes longer than 5 is channel-first; a last axis of
    1-5 with both leading axes longer than 5 is channel-last.

    Raises:
        ValueError: for any other (ambiguous) shape; the message explains why.
    """
    a, b, c = shape
    if a <= _MAX_CHANNELS and b > _MIN_SIDE and c > _MIN_SIDE:
        return "channel-first"
    if c <= _MAX_CHANNELS and a > _MIN_SIDE and b > _MIN_SIDE:
        return "channel-last"
    if min(shape) > _MAX_CHANNELS:
        why = f"no axis of 1-{_MAX_CHANNELS} channels (z-stacks and >5 channels are unsupported)"
    else:
        why = "cannot tell the channel axis from the spatial axes"
    raise ValueError(
        f"ambiguous image shape {tuple(shape)}: {why}; save images as (C, H, W) or (H, W, C) "
        f"with C = 1-{_MAX_CHANNELS} and H, W > {_MIN_SIDE}"
    )


def _squeeze_leading(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop leading length-1 axes of shapes with more than 3 axes, e.g. ImageJ (1, C, H, W)."""
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _stack_layout(shape: tuple[int, ...]) -> tuple[str, tuple[int, int, int]]:
    """Layout note and ``(C, H, W)`` of one image of ``shape`` (2-D or 3-D)."""
    shape = _squeeze_leading(tuple(int(s) for s in shape))
    if len(shape) == 2:
        if min(shape) <= _MIN_SIDE:
            raise ValueError(
                f"image of {shape[0]}x{shape[1]} px is too small for a cell crop; sides must be "
                f"longer than {_MIN_SIDE} px"
            )
        return "2-D", (1, shape[0], shape[1])
    if len(shape) != 3:
        raise ValueError(f"image has shape {shape}; expected 2-D (H, W) or 3-D (C, H, W)")
    layout = layout_3d(shape)
    if layout == "channel-first":
        return layout, (shape[0], shape[1], shape[2])
    return layout, (shape[2], shape[0], shape[1])


def _to_nchw(image: npt.NDArray, layout: str) -> npt.NDArray:
    """One image in ``layout`` as a (1, C, H, W) array (a view where possible)."""
    image = image.reshape(_squeeze_leading(image.shape))
    if image.ndim == 2:
        return image[None, None]
    if layout == "channel-last":
        image = np.moveaxis(image, -1, 0)
    return image[None]


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{path}: cannot read (unsupported file type {suffix or 'without suffix'!r}); "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return suffix


def _cannot_read(path: Path, err: BaseException) -> DataError:
    cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    cause = _FILE_BYTES.sub("", cause).rstrip(" :,")  # no file content in a message
    return DataError(f"{path}: cannot read ({cause or type(err).__name__})")


def read_header(path: Path) -> ImageHeader:
    """Shape, dtype and layout of an image file, decoding as little as the format allows.

    Raises:
        DataError: unsupported type, unreadable or malformed file, ambiguous layout.
    """
    path = Path(path)
    suffix = _suffix(path)
    try:
        if suffix == ".npz":
            header = _npz_header(path)
        elif suffix in (".png", ".jpg", ".jpeg"):
            with Image.open(path) as im:
                channels, dtype, layout = _pil_mode(im.mode)
                if _grey_palette(im):
                    channels, layout = 1, GREY_PALETTE
                if bands := _png16_bands(im):
                    channels, dtype, layout = bands, np.uint16, "16-bit colour PNG"
                header = ImageHeader(1, channels, im.height, im.width, np.dtype(dtype), layout)
        else:
            with tifffile.TiffFile(path) as tif:
                shape, tiff_dtype, pages = _tiff_shape(tif)
                layout, (c, h, w) = _stack_layout(shape)
                header = ImageHeader(1, c, h, w, tiff_dtype, PAGES if pages else layout)
    except DataError:
        raise
    except _READ_ERRORS as err:
        raise _cannot_read(path, err) from err
    _check_dtype(path, header.dtype)
    if not header.dtype.isnative:  # big-endian TIFF or PNG: pixels are returned native
        header = replace(header, dtype=header.dtype.newbyteorder("="))
    return header


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    if dtype.kind not in "buif":
        raise DataError(
            f"{path}: cannot read (pixel dtype {dtype} is not numeric); save crops as uint8, "
            "uint16 or float32"
        )


def read_image_file(path: Path) -> tuple[npt.NDArray, str]:
    """Pixels of an image file as ``(n, C, H, W)`` in the file's native dtype.

    ``n`` is 1 except for npz files (their ``images`` array). RGBA and grey+alpha lose the
    alpha channel; palette images become RGB; 1-bit images become uint8 0/1.

    Returns:
        ``(pixels, layout)``: pixels (n, C, H, W) in the file's dtype (native byte order);
        layout a short note such as ``"channel-first"``, ``"channel-last"``,
        ``"RGBA, alpha dropped"`` or ``"npz (n, H, W)"``.

    Raises:
        DataError: ``"{path}: cannot read ({cause})"`` for unsupported, unreadable, truncated or
            malformed files and ambiguous layouts.
    """
    path = Path(path)
    suffix = _suffix(path)
    try:
        if suffix == ".npz":
            pixels, layout = _read_npz_images(path)
        elif suffix in (".png", ".jpg", ".jpeg"):
            pixels, layout = _read_pil(path)
        else:
            pixels, layout = _read_tiff(path)
    except DataError:
        raise
    except _READ_ERRORS as err:
        raise _cannot_read(path, err) from err
    _check_dtype(path, pixels.dtype)
    if not pixels.dtype.isnative:
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels, layout


def read_npz_labels(path: Path) -> npt.NDArray | None:
    """The optional ``labels`` (n,) array of an npz file, or None when it has none.

    Raises:
        DataError: unreadable file or ``labels`` not one-dimensional.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "labels" not in npz.files:
                return None
            labels = npz["labels"]
    except _READ_ERRORS as err:
        raise _cannot_read(path, err) from err
    if labels.ndim != 1:
        raise DataError(f"{path}: cannot read ('labels' has shape {labels.shape}, expected (n,))")
    return labels


def _pil_mode(mode: str) -> tuple[int, type, str]:
    if mode not in _PIL_MODES:
        raise ValueError(f"unsupported image mode {mode!r}; save as grey or RGB")
    return _PIL_MODES[mode]


#: Raw modes of PNGs with 16 bits per sample in colour (or grey+alpha), which Pillow decodes to
#: 8 bits (keeping the high byte): these are decoded by imagecodecs at full depth instead.
_PNG16 = {"RGB;16B": 3, "RGBA;16B": 3, "LA;16B": 1}


def _png16_bands(im: Image.Image) -> int:
    """Channels kept of a 16-bit colour or grey+alpha PNG (alpha dropped), 0 for any other
    image."""
    tile = getattr(im, "tile", None)  # an opened file's decoder list (ImageFile)
    if im.format != "PNG" or not tile:
        return 0
    return _PNG16.get(str(tile[0].args), 0)


#: Layout note of a palette image whose colours are all grey (it is read as one channel).
GREY_PALETTE = "grey palette"


def _grey_palette(im: Image.Image) -> bool:
    """Whether ``im`` is a palette image whose every colour is a grey (R = G = B)."""
    if im.mode not in ("P", "PA"):
        return False
    palette = im.getpalette()
    if not palette:
        return False
    rgb = np.asarray(palette[: len(palette) // 3 * 3]).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def _read_pil(path: Path) -> tuple[npt.NDArray, str]:
    with Image.open(path) as opened:
        im: Image.Image = opened
        _, _, layout = _pil_mode(im.mode)
        bands = _png16_bands(im)
        if bands:
            import imagecodecs

            data = np.asarray(imagecodecs.png_decode(path.read_bytes()))
            return np.moveaxis(data[:, :, :bands], -1, 0)[None], "16-bit colour PNG"
        if _grey_palette(im):
            return np.asarray(im.convert("L"))[None, None], GREY_PALETTE
        if im.mode in ("P", "PA"):
            im = im.convert("RGB")
        elif im.mode == "1":
            im = im.convert("L")
        data = np.asarray(im)
    if data.ndim == 3:  # (H, W, bands): drop alpha, move channels first
        bands = 1 if data.shape[2] == 2 else min(data.shape[2], 3)
        return np.moveaxis(data[:, :, :bands], -1, 0)[None], layout
    return data[None, None], layout


#: Layout of a TIFF whose channels are separate 2-D pages without stack metadata.
PAGES = "one page per channel"


def _tiff_shape(tif: tifffile.TiffFile) -> tuple[tuple[int, ...], np.dtype, bool]:
    """``(shape, dtype, pages_as_channels)`` of a TIFF's image. Channels written page by page
    (no ImageJ or OME metadata) make one 2-D series per page: when every series is 2-D with the
    same shape and dtype, the pages are the channels; otherwise the first series is the image."""
    series = tif.series
    if not series:  # e.g. a header pointing past the end of the file
        raise ValueError("no image in the TIFF: a damaged header or no pages")
    first = series[0]
    pages = (
        len(series) > 1
        and len(first.shape) == 2
        and all(s.shape == first.shape and s.dtype == first.dtype for s in series)
    )
    shape = (len(series), *first.shape) if pages else tuple(first.shape)
    return shape, np.dtype(first.dtype), pages


#: The largest image read whole (bytes of its pixels): a header claiming more is refused
#: before any memory is taken (a field of 16 GiB is tiled before it reaches PhenoScout).
MAX_IMAGE_BYTES = 16 * 2**30


def _read_tiff(path: Path) -> tuple[npt.NDArray, str]:
    with tifffile.TiffFile(path) as tif:
        shape, dtype, pages = _tiff_shape(tif)
        size = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
        if size > MAX_IMAGE_BYTES:
            raise ValueError(
                f"the header claims {'x'.join(map(str, shape))} pixels of {dtype}, "
                f"{size / 2**30:.1f} GiB; at most {MAX_IMAGE_BYTES // 2**30} GiB per image"
            )
        data = np.stack([s.asarray() for s in tif.series]) if pages else tif.series[0].asarray()
    layout, _ = _stack_layout(data.shape)
    return _to_nchw(data, layout), PAGES if pages else layout


def _npz_layout(path: Path, shape: tuple[int, ...]) -> tuple[str, tuple[int, int, int, int]]:
    """Layout note and (n, C, H, W) of an npz ``images`` array of ``shape``."""
    if len(shape) == 3:
        return "npz (n, H, W)", (shape[0], 1, shape[1], shape[2])
    if len(shape) != 4:
        raise DataError(
            f"{path}: cannot read ('images' has shape {shape}; expected (n, C, H, W) or (n, H, W))"
        )
    try:
        layout = layout_3d(shape[1:])
    except ValueError as err:
        raise _cannot_read(path, err) from err
    if layout == "channel-last":
        return "npz (n, H, W, C)", (shape[0], shape[3], shape[1], shape[2])
    return "npz (n, C, H, W)", (shape[0], shape[1], shape[2], shape[3])


def _npz_header(path: Path) -> ImageHeader:
    with zipfile.ZipFile(path) as zf:
        if "images.npy" not in zf.namelist():
            names = [n.removesuffix(".npy") for n in zf.namelist()]
            raise DataError(
                f"{path}: cannot read (no 'images' array, found {names}); "
                "save with np.savez(path, images=...)"
            )
        with zf.open("images.npy") as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    layout, (n, c, h, w) = _npz_layout(path, tuple(shape))
    if n == 0:
        raise DataError(f"{path}: cannot read ('images' holds no image)")
    return ImageHeader(n, c, h, w, np.dtype(dtype), layout)


def _read_npz_images(path: Path) -> tuple[npt.NDArray, str]:
    with np.load(path, allow_pickle=False) as npz:
        if "images" not in npz.files:
            raise DataError(
                f"{path}: cannot read (no 'images' array, found {list(npz.files)}); "
                "save with np.savez(path, images=...)"
            )
        images = npz["images"]
    layout, _ = _npz_layout(path, images.shape)
    if images.ndim == 3:
        images = images[:, None]
    elif layout == "npz (n, H, W, C)":
        images = np.moveaxis(images, -1, 1)
    if images.shape[0] == 0:
        raise DataError(f"{path}: cannot read ('images' holds no image)")
    return images, layout


def replace_non_finite(pixels: npt.NDArray, path: Path) -> tuple[npt.NDArray, int]:
    """``pixels`` with every NaN or infinite value replaced by its crop's finite median.

    The median is taken per image and channel over that image's finite pixels, so no crop is
    rescaled and one bad pixel does not spoil a dataset's intensity ranges.

    Args:
        pixels: (n, C, H, W) pixels as read from ``path``; integer dtypes are returned as is.
        path: the file, named in the error.

    Returns:
        ``(pixels, count)``: the cleaned pixels (a copy when anything was replaced) and how
        many values were non-finite.

    Raises:
        DataError: when an image channel holds no finite value at all.
    """
    if pixels.dtype.kind != "f":
        return pixels, 0
    bad = ~np.isfinite(pixels)
    count = int(bad.sum())
    if not count:
        return pixels, 0
    empty = bad.all(axis=(2, 3))
    if empty.any():
        image, channel = (int(i) for i in np.argwhere(empty)[0])
        where = f"image {image}, channel {channel}" if len(pixels) > 1 else f"channel {channel}"
        raise DataError(
            f"{path}: no finite pixel left ({where} is all NaN or infinite); fix or remove the file"
        )
    cleaned = np.where(bad, np.nan, pixels)
    median = np.nanmedian(cleaned, axis=(2, 3), keepdims=True).astype(pixels.dtype)
    return np.where(bad, median, pixels), count

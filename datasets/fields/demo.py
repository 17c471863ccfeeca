"""Synthetic whole fields of view with their true nuclear masks (for segmentation and demos).

Each field varies the way real screens do: nuclear size (typical radius 6-20 px, up to ~30
px for large nuclei), shape, brightness (dim and bright nuclei in one field), texture,
density, touching pairs and clusters, focus blur, camera noise, signal-to-background ratio
and uneven illumination. Five phenotypes make a field labelable: ``normal``, ``large``,
``binucleated`` (two touching nuclei), ``mitotic`` (small, bright, condensed plates; two in
anaphase) and ``apoptotic`` (one small very bright pyknotic nucleus, or 3-5 fragments).
Every nuclear object is one label of the true mask; channel 1 holds the cytoplasm around it.

Layout written by :func:`generate_demo_fields`::

    OUT/{plate}_{well}_s{site}_w{channel}.tif   one channel per file (channel 1..C), or
    OUT/{plate}_{well}_s{site}.tif              (C, H, W) in one file (layout "multichannel")
    OUT/masks/{plate}_{well}_s{site}.tif        true nuclear labels (uint16; int32 past 65535)
    OUT/objects.csv                             field,object,phenotype (object = mask label)
    OUT/README.txt                              what this is

A seed gives the same bytes.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tifffile
from scipy import ndimage as ndi

from datasets.crops.demo import prepare_demo_folder
from datasets.errors import DataError
from datasets.progress import Progress

logger = logging.getLogger(__name__)

PHENOTYPES = ("normal", "large", "binucleated", "mitotic", "apoptotic")
_SHARE = np.array([0.70, 0.10, 0.08, 0.07, 0.05])  # of cells, per phenotype, before well jitter
FILENAME_PATTERN = "{plate}_{well}_s{site}_w{channel}.tif"
MULTICHANNEL_PATTERN = "{plate}_{well}_s{site}.tif"
LAYOUTS = ("per-channel", "multichannel")
MIN_FIELD_SIZE = 64  # px a side: room for a few whole cells
_N_PLATES, _SITES_PER_WELL, _ROWS = 2, 2, "BCDEFGHIJKLMNO"
_CAMERA_OFFSET, _READ_NOISE = 100.0, 4.0  # ADU, electrons (uint16); uint8 is rescaled
_MAX_TRIES = 25  # placements tried per cell before it is given up
_README_MARK = "PhenoScout demo fields"


@dataclass(frozen=True)
class DemoFieldsSummary:
    """What :func:`generate_demo_fields` wrote."""

    out_dir: Path  # the folder
    n_fields: int  # fields written
    n_objects: int  # nuclear objects over all fields (rows of objects.csv)
    class_counts: dict[str, int]  # objects per phenotype
    fields: tuple[str, ...]  # field keys "{plate}_{well}_s{site}", in writing order
    mask_dir: Path  # true masks, one "{field}.tif" per field
    objects_csv: Path  # field,object,phenotype
    layout: str  # "per-channel" or "multichannel"
    pattern: str  # image file name pattern, e.g. "{plate}_{well}_s{site}_w{channel}.tif"


@dataclass(frozen=True)
class _Look:
    """How one field looks; drawn per field."""

    radius: float  # typical nuclear radius (px)
    coverage: float  # share of the field covered by nuclei
    touch: float  # chance that a cell is placed against an earlier one
    shares: npt.NDArray[np.float64]  # phenotype probabilities
    spread: float  # sd of log nuclear brightness between cells
    background: float  # photons per pixel
    contrast: float  # nuclear signal over background
    cyto: float  # cytoplasm signal over nuclear signal
    blur: float  # focus blur (px)
    texture: float  # chromatin texture amplitude
    vignette: float  # illumination drop at the corners
    gradient: npt.NDArray[np.float64]  # illumination slope along y and x (per field width)


def make_field(
    rng: np.random.Generator,
    size: int = 512,
    n_objects: int | None = None,
    channels: int = 2,
    dtype: npt.DTypeLike = np.uint16,
) -> tuple[npt.NDArray, npt.NDArray[np.int32], dict[int, str]]:
    """One synthetic field with its true nuclear mask.

    Args:
        rng: the generator behind every random choice.
        size: side of the square field (px), at least 64.
        n_objects: nuclear objects to place (fewer only when the field is too crowded);
            None draws a density (8-30% of the field covered by nuclei).
        channels: 1 (nuclei), 2 (+ cytoplasm) or up to 5 (+ cell markers of varying level).
        dtype: uint16 (raw camera values, offset 100) or uint8.

    Returns:
        image (C, size, size) of ``dtype``; mask (size, size) int32, 0 = background, nuclei
        1..n; the phenotype of every label.

    Raises:
        DataError: on a size, object count, channel count or dtype out of range.
    """
    _check_args(size, n_objects, channels, dtype)
    look = _draw_look(rng)
    if n_objects is None:
        n_objects = round(look.coverage * size * size / (math.pi * look.radius**2 * 1.1))
    canvas = _Canvas(size, channels)
    _place_cells(canvas, look, max(n_objects, 0), rng)
    image = _camera(canvas, look, np.dtype(dtype), rng)
    return image, canvas.mask, canvas.phenotypes


def generate_demo_fields(
    out_dir: Path,
    n_fields: int = 8,
    size: int = 512,
    seed: int = 0,
    layout: str = "per-channel",
    progress: Progress | None = None,
) -> DemoFieldsSummary:
    """Write ``n_fields`` two-channel uint16 demo fields, their masks and objects.csv (see the
    module docstring), spread over 2 plates, 2 sites per well.

    Args:
        out_dir: folder to write; created, or an earlier demo there is replaced.
        n_fields: number of fields, at least 1.
        size: side of each square field (px).
        seed: seed of the one generator behind every choice; same seed, same bytes.
        layout: "per-channel" (one file per channel) or "multichannel" (one file per field).
        progress: called as ``progress(done_fields, n_fields)``.

    Returns:
        What was written.

    Raises:
        DataError: on a bad argument, or when ``out_dir`` holds something else.
    """
    if n_fields < 1 or layout not in LAYOUTS:
        raise DataError(
            f"n_fields={n_fields}, layout={layout!r}: use n_fields >= 1 and a layout in {LAYOUTS}"
        )
    if size < MIN_FIELD_SIZE:  # before the folder is made: a refused call writes nothing
        raise DataError(f"size={size}: a demo field is at least {MIN_FIELD_SIZE} px a side")
    out_dir = Path(out_dir)
    prepare_demo_folder(out_dir, _README_MARK, "demo fields", ("*.tif", "masks/*.tif"))
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, int, str]] = []
    keys = []
    for i, (plate, well, site) in enumerate(_field_names(n_fields)):
        key = f"{plate}_{well}_s{site}"
        image, mask, phenotypes = make_field(rng, size=size)
        _write_field(out_dir, key, image, layout)
        _write_tiff(out_dir / "masks" / f"{key}.tif", _mask_dtype(mask))
        rows.extend((key, label, name) for label, name in sorted(phenotypes.items()))
        keys.append(key)
        if progress is not None:
            progress(i + 1, n_fields)
    _write_tables(out_dir, rows)
    counts = {name: sum(r[2] == name for r in rows) for name in PHENOTYPES}
    logger.info("demo fields: %d fields, %d objects under %s", n_fields, len(rows), out_dir)
    pattern = FILENAME_PATTERN if layout == "per-channel" else MULTICHANNEL_PATTERN
    return DemoFieldsSummary(
        out_dir, n_fields, len(rows), counts, tuple(keys), out_dir / "masks",
        out_dir / "objects.csv", layout, pattern,
    )  # fmt: skip


# -- what a field looks like -------------------------------------------------------------------


def _check_args(size: int, n_objects: int | None, channels: int, dtype: npt.DTypeLike) -> None:
    if size < MIN_FIELD_SIZE or (n_objects is not None and n_objects < 0) or not 1 <= channels <= 5:
        raise DataError(
            f"size={size}, n_objects={n_objects}, channels={channels}: use size >= 64, "
            "n_objects >= 0 (or None) and 1-5 channels"
        )
    if np.dtype(dtype) not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise DataError(f"dtype {np.dtype(dtype)} is not supported; use uint8 or uint16")


def _draw_look(rng: np.random.Generator) -> _Look:
    shares = _SHARE * rng.lognormal(0.0, 0.3, len(_SHARE))
    return _Look(
        radius=_log_uniform(rng, 6.0, 20.0), coverage=rng.uniform(0.08, 0.30),
        touch=rng.uniform(0.1, 0.4), shares=shares / shares.sum(), spread=rng.uniform(0.15, 0.4),
        background=_log_uniform(rng, 15.0, 300.0), contrast=_log_uniform(rng, 1.5, 15.0),
        cyto=rng.uniform(0.1, 0.4),
        blur=rng.uniform(0.6, 2.0), texture=rng.uniform(0.05, 0.3), vignette=rng.uniform(0.0, 0.4),
        gradient=rng.uniform(-0.2, 0.2, 2),
    )  # fmt: skip


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


# A nucleus relative to its cell's centre: (dy, dx, a, b, theta, brightness, ruffle).
_Nucleus = tuple[float, float, float, float, float, float, float]


def _normal(r: float, rng: np.random.Generator) -> list[_Nucleus]:
    aspect, theta = rng.uniform(1.0, 1.7), rng.uniform(0, np.pi)
    return [(0.0, 0.0, r * aspect**0.5, r / aspect**0.5, theta, 1.0, rng.uniform(0, 0.06))]


def _large(r: float, rng: np.random.Generator) -> list[_Nucleus]:
    r, aspect, theta = r * rng.uniform(1.3, 1.6), rng.uniform(1.0, 1.5), rng.uniform(0, np.pi)
    return [(0.0, 0.0, r * aspect**0.5, r / aspect**0.5, theta, rng.uniform(0.6, 0.85),
             rng.uniform(0, 0.1))]  # fmt: skip


def _binucleated(r: float, rng: np.random.Generator) -> list[_Nucleus]:
    """Two nuclei side by side along a random axis, from overlapping rims to a small gap."""
    axis = rng.uniform(0, np.pi)
    a, b = r * rng.uniform(0.95, 1.15, 2), r * rng.uniform(0.7, 0.85, 2)
    gap = (b[0] + b[1]) * rng.uniform(0.92, 1.2) / 2
    return [
        (s * gap * np.sin(axis), s * gap * np.cos(axis), a[k], b[k], axis + np.pi / 2,
         rng.uniform(0.9, 1.1), rng.uniform(0, 0.05))
        for k, s in enumerate((1, -1))
    ]  # fmt: skip


def _mitotic(r: float, rng: np.random.Generator) -> list[_Nucleus]:
    """A metaphase plate, or two anaphase plates moving apart (bright: condensed DNA)."""
    axis, level = rng.uniform(0, np.pi), rng.uniform(2.0, 3.0)
    if rng.random() < 0.7:
        a, b = max(4.5, r * rng.uniform(0.7, 0.9)), max(2.6, r * rng.uniform(0.25, 0.35))
        return [(0.0, 0.0, a, b, axis, level, 0.0)]
    a, b, gap = max(4.0, r * rng.uniform(0.55, 0.75)), max(2.5, 0.25 * r), r * rng.uniform(0.6, 0.9)
    return [(s * gap * np.cos(axis), -s * gap * np.sin(axis), a, b, axis, level, 0.0)
            for s in (1, -1)]  # fmt: skip


def _apoptotic(r: float, rng: np.random.Generator) -> list[_Nucleus]:
    """A pyknotic nucleus, or 3-5 scattered round fragments (apoptotic bodies)."""
    if rng.random() < 0.4:
        rp = max(3.5, r * rng.uniform(0.4, 0.55))
        return [(0.0, 0.0, rp, rp, 0.0, rng.uniform(2.5, 4.0), 0.0)]
    out: list[_Nucleus] = []
    for _ in range(int(rng.integers(3, 6))):
        rf, reach, angle = max(3.3, r * rng.uniform(0.25, 0.35)), r * rng.uniform(0, 1.3), \
            rng.uniform(0, 2 * np.pi)  # fmt: skip
        y, x = reach * np.sin(angle), reach * np.cos(angle)
        if all(math.hypot(y - o[0], x - o[1]) > rf + o[2] + 1.5 for o in out):
            out.append((y, x, rf, rf, 0.0, rng.uniform(2.0, 3.5), 0.0))
    return out


_NUCLEI: tuple[Callable[[float, np.random.Generator], list[_Nucleus]], ...] = (
    _normal, _large, _binucleated, _mitotic, _apoptotic,
)  # same order as PHENOTYPES  # fmt: skip
_BODY = ((2.2, 1.0), (2.8, 0.7), (2.6, 0.9), (1.5, 1.5), (1.3, 0.6))  # cell radius / r, level


# -- placing and painting ----------------------------------------------------------------------


@dataclass
class _Canvas:
    """The noise-free field being painted: relative signal per channel and the true mask."""

    size: int
    channels: int

    def __post_init__(self) -> None:
        self.mask = np.zeros((self.size, self.size), dtype=np.int32)
        self.signal = np.zeros((self.channels, self.size, self.size), dtype=np.float32)
        self.phenotypes: dict[int, str] = {}
        self.centres: list[tuple[float, float, float]] = []  # y, x, semi-major axis of nuclei


def _place_cells(canvas: _Canvas, look: _Look, n_objects: int, rng: np.random.Generator) -> None:
    """Add cells until the mask holds ``n_objects`` nuclei or 50 cells in a row find no room."""
    misses = 0
    while len(canvas.phenotypes) < n_objects and misses < 50:
        kind = int(rng.choice(len(PHENOTYPES), p=look.shares))
        r = look.radius * rng.lognormal(0.0, 0.12)
        nuclei = _NUCLEI[kind](r, rng)
        if len(canvas.phenotypes) + len(nuclei) > n_objects:
            kind, nuclei = 0, _normal(r, rng)
        misses = 0 if _place_cell(canvas, look, (kind, r), nuclei, rng) else misses + 1
    if len(canvas.phenotypes) < n_objects:
        logger.debug("field full: %d of %d objects placed", len(canvas.phenotypes), n_objects)


def _place_cell(
    canvas: _Canvas, look: _Look, cell: tuple[int, float], nuclei: list[_Nucleus],
    rng: np.random.Generator,
) -> bool:  # fmt: skip
    """Find room for one cell (``cell`` = phenotype index, radius), free or against an earlier
    nucleus, and paint it; False when no room was found."""
    touching = bool(canvas.centres) and rng.random() < look.touch
    reach = max(math.hypot(n[0], n[1]) + n[2] for n in nuclei)
    for _ in range(_MAX_TRIES):
        if touching:
            ay, ax, a_reach = canvas.centres[int(rng.integers(len(canvas.centres)))]
            angle, dist = rng.uniform(0, 2 * np.pi), (a_reach + reach) * rng.uniform(0.8, 0.95)
            cy, cx = ay + dist * np.sin(angle), ax + dist * np.cos(angle)
        else:
            cy, cx = rng.uniform(0, canvas.size, 2)
        patches = [_ellipse(cy + n[0], cx + n[1], n[2:5], n[6], canvas.size, rng) for n in nuclei]
        clear = 0.75 if touching else 1.25  # rim overlap allowed only for touching cells
        if all(p is None or not canvas.mask[p[0]][p[1] < clear].any() for p in patches):
            _paint_cell(canvas, look, cell, (cy, cx), list(zip(nuclei, patches)), rng)
            return True
    return False


def _ellipse(
    cy: float, cx: float, axes: tuple[float, ...], ruffle: float, size: int,
    rng: np.random.Generator,
) -> tuple[tuple[slice, slice], npt.NDArray[np.float32]] | None:  # fmt: skip
    """The patch of the field around an ellipse (centre ``cy, cx``; ``axes`` = a, b, theta)
    and its normalised radius there (< 1 inside); ``ruffle`` bends the outline. None when the
    patch lies outside the field."""
    a, b, theta = axes
    reach = a * (1.0 + 2.0 * ruffle) + 2.0
    y0, y1 = max(0, math.floor(cy - reach)), min(size, math.ceil(cy + reach) + 1)
    x0, x1 = max(0, math.floor(cx - reach)), min(size, math.ceil(cx + reach) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u, v = (xx * cos + yy * sin) / np.float32(a), (yy * cos - xx * sin) / np.float32(b)
    rr = np.sqrt(u * u + v * v)
    if ruffle > 0:
        phi, phase = np.arctan2(v, u), rng.uniform(0, 2 * np.pi, 2).astype(np.float32)
        bend = np.cos(2 * phi + phase[0]) + 0.6 * np.cos(3 * phi + phase[1])
        rr /= 1.0 + np.float32(ruffle) * bend
    return (slice(y0, y1), slice(x0, x1)), rr


def _paint_cell(
    canvas: _Canvas, look: _Look, cell: tuple[int, float], centre: tuple[float, float],
    nuclei: list, rng: np.random.Generator,
) -> None:  # fmt: skip
    """Label and paint the nuclei (channel 0) and the cell body (channels 1+)."""
    kind, r = cell
    bright = rng.lognormal(0.0, look.spread)
    for nucleus, patch in nuclei:
        if patch is None:
            continue
        where, rr = patch
        region = canvas.mask[where]
        own = (rr < 1.0) & (region == 0)
        if not own.any():
            continue
        label = len(canvas.phenotypes) + 1
        region[own] = label
        canvas.phenotypes[label] = PHENOTYPES[kind]
        canvas.centres.append((centre[0] + nucleus[0], centre[1] + nucleus[1], nucleus[2]))
        a, b = nucleus[2], nucleus[3]
        cover = np.clip((1.0 - rr) * np.float32(math.sqrt(a * b)) + 0.5, 0.0, 1.0)
        dome = 0.75 + 0.25 * np.sqrt(np.clip(1.0 - rr * rr, 0.0, 1.0))
        np.maximum(canvas.signal[0][where], cover * dome * np.float32(nucleus[5] * bright),
                   out=canvas.signal[0][where])  # fmt: skip
    if canvas.channels > 1:
        _paint_body(canvas, kind, r, centre, rng)


def _paint_body(
    canvas: _Canvas, kind: int, r: float, centre: tuple[float, float], rng: np.random.Generator
) -> None:
    """The cell body around the nuclei: channel 1 cytoplasm, channels 2+ markers whose level
    varies strongly between cells."""
    scale, level = _BODY[kind]
    rc, aspect = r * scale * rng.uniform(0.85, 1.15), rng.uniform(1.0, 1.5)
    shift, angle = rng.uniform(0, 0.3 * r), rng.uniform(0, 2 * np.pi)
    axes = (rc * aspect**0.5, rc / aspect**0.5, rng.uniform(0, np.pi))
    patch = _ellipse(centre[0] + shift * np.sin(angle), centre[1] + shift * np.cos(angle), axes,
                     rng.uniform(0.03, 0.15), canvas.size, rng)  # fmt: skip
    if patch is None:
        return
    where, rr = patch
    cover = np.clip((1.0 - rr) * np.float32(rc) + 0.5, 0.0, 1.0)
    levels = [level * rng.lognormal(0.0, 0.3)] + list(rng.lognormal(-0.5, 0.8, canvas.channels - 2))
    for c, lv in enumerate(levels, start=1):
        np.maximum(canvas.signal[c][where], cover * np.float32(lv), out=canvas.signal[c][where])


def _camera(canvas: _Canvas, look: _Look, dtype: np.dtype, rng: np.random.Generator) -> npt.NDArray:
    """Texture, blur, background, uneven illumination, shot and read noise, digitisation:
    the (C, H, W) image of ``dtype``."""
    size = canvas.size
    texture = ndi.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 1.5)
    texture *= np.float32(look.texture / max(float(texture.std()), 1e-6))
    canvas.signal[0] *= np.maximum(1.0 + texture, 0.1)
    del texture
    illumination = _illumination(size, look)
    out = np.empty((canvas.channels, size, size), dtype=dtype)
    for c in range(canvas.channels):
        gain = look.contrast * (1.0 if c == 0 else look.cyto * rng.uniform(0.7, 1.3))
        background = look.background * (1.0 if c == 0 else rng.uniform(0.5, 1.5))
        photons = ndi.gaussian_filter(canvas.signal[c], look.blur)
        photons *= np.float32(gain * look.background)
        photons += np.float32(background)
        photons *= illumination
        noise = rng.standard_normal((size, size), dtype=np.float32)
        photons += np.sqrt(photons + np.float32(_READ_NOISE**2)) * noise
        out[c] = _digitise(photons, dtype)
    return out


def _illumination(size: int, look: _Look) -> npt.NDArray[np.float32]:
    """(H, W) relative illumination: a vignette (dimmer corners) and a linear slope."""
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = ramp[:, None], ramp[None, :]
    vignette = 1.0 - np.float32(look.vignette / 2.0) * (yy * yy + xx * xx)
    slope = 1.0 + np.float32(look.gradient[0]) * yy + np.float32(look.gradient[1]) * xx
    return (vignette * slope).astype(np.float32)


def _digitise(photons: npt.NDArray[np.float32], dtype: np.dtype) -> npt.NDArray:
    """Camera values: uint16 at one photon per count plus an offset; uint8 scaled so that
    the brightest 0.01% of pixels reach about 230."""
    if dtype == np.uint16:
        adu = photons + np.float32(_CAMERA_OFFSET)
    else:
        adu = photons * np.float32(220.0 / max(float(np.percentile(photons, 99.99)), 1.0)) + 10
    return np.clip(np.rint(adu), 0, np.iinfo(dtype).max).astype(dtype)


# -- files -------------------------------------------------------------------------------------


def _field_names(n_fields: int) -> list[tuple[str, str, int]]:
    """(plate, well, site) of each field: plates P1, P2; wells B02, C02, ... down each column
    of a 384-well plate; two sites per well."""
    per_plate = math.ceil(n_fields / _N_PLATES)
    names = []
    for i in range(n_fields):
        plate, j = divmod(i, per_plate)
        well_idx, site = divmod(j, _SITES_PER_WELL)
        col, row = divmod(well_idx, len(_ROWS))
        names.append((f"P{plate + 1}", f"{_ROWS[row]}{col + 2:02d}", site + 1))
    return names


def _mask_dtype(mask: npt.NDArray[np.int32]) -> npt.NDArray:
    return mask.astype(np.uint16) if mask.max(initial=0) <= np.iinfo(np.uint16).max else mask


def _write_tiff(path: Path, array: npt.NDArray) -> None:
    """Write ``array`` as TIFF; equal arrays give equal bytes (no timestamp is written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, photometric="minisblack", software=False)


def _write_field(out_dir: Path, key: str, image: npt.NDArray, layout: str) -> None:
    if layout == "multichannel":
        _write_tiff(out_dir / f"{key}.tif", image)
        return
    for c, plane in enumerate(image, start=1):
        _write_tiff(out_dir / f"{key}_w{c}.tif", plane)


def _write_tables(out_dir: Path, rows: list[tuple[str, int, str]]) -> None:
    with open(out_dir / "objects.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["field", "object", "phenotype"])
        writer.writerows(rows)
    (out_dir / "README.txt").write_text(_README)


_README = f"""{_README_MARK} (synthetic; written by datasets.fields.demo.generate_demo_fields)

Whole fields of view of a simulated two-channel fluorescence screen, raw uint16 camera values
(offset ~100): channel 1 = nuclei (DNA stain), channel 2 = cytoplasm.
{FILENAME_PATTERN}   one channel per file (or {MULTICHANNEL_PATTERN}, channels first)
masks/<field>.tif     true nuclear labels, 0 = background
objects.csv           field,object,phenotype   object = label in the field's mask

Phenotypes: {", ".join(PHENOTYPES)}. Nuclear size, density, brightness, blur, noise and
illumination vary from field to field. Nothing here is real data.
"""

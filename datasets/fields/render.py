"""Draw whole fields of view with their objects' outlines, and a cell in its field.

No streamlit here: the app shows what these return. A field is drawn as the colour composite
the tiles use (:func:`datasets.render.composite`), scaled with the normalisation ranges the
project's crops of that field were scaled with
(:func:`datasets.fields.lookup.field_ranges`), so a cell looks the same in its tile and in its
field. Object outlines come from the field's label image (``find_boundaries``, inner mode: the
outline is the object's own edge pixels); objects given as centres only (CellProfiler
exports) get a circle at their centre.

Big fields are shown smaller: a field whose longer side exceeds ``max_size`` is reduced by an
integer factor (block means of the pixels, block "any" of the outlines, so thin outlines and
small objects never vanish). Memory is bounded by one field: the pixels are converted to float
and the outlines found in strips of rows, and only the reduced planes are kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from skimage import draw
from skimage.segmentation import find_boundaries

from datasets.config import default_channels
from datasets.errors import DataError
from datasets.fields.lookup import cell_row, field_cells, field_labels, field_ranges
from datasets.fields.store import read_field_image
from datasets.normalise import apply_ranges, compute_ranges
from datasets.render import composite, hex_to_rgb, upscale
from datasets.segmentation.classical import touches_border

logger = logging.getLogger(__name__)

DISPLAY_SIZE = 1024  # longest side of a whole field as shown (px); larger fields are reduced
OUTLINE_COLOUR = "#ffd400"  # outlines of the field's cells
HIGHLIGHT_COLOUR = "#ff2bd6"  # outline (or marker) of the cell in question
MUTED_COLOUR = "#9ca3af"  # outlines of objects that are not cells (touching the border)
CONTEXT_PX = 48  # field pixels shown around a cell's bounding box
MARKER_RADIUS = 6  # circle drawn at the centre of an object without a mask (display px)
_STRIP_ROWS = 256  # rows of a big field processed at a time
_MAX_GROW = 4  # most a small field is enlarged for display
_NO_BBOX_HALF = 16  # half side of the box assumed round a centre-only object (px)


def reduction_factor(height: int, width: int, max_size: int | None) -> int:
    """The integer factor that brings an (height, width) image within ``max_size`` px."""
    if not max_size or max(height, width) <= max_size:
        return 1
    return math.ceil(max(height, width) / max_size)


def reduce_plane(plane: npt.NDArray, factor: int) -> npt.NDArray[np.float32]:
    """(H, W) -> (ceil(H / f), ceil(W / f)) float32 block means (edges padded by repetition),
    computed in strips of rows: no float copy of the whole plane is made."""
    if factor <= 1:
        return np.asarray(plane, dtype=np.float32)
    h, w = plane.shape
    wp = -(-w // factor) * factor
    step = factor * max(_STRIP_ROWS // factor, 1)
    out = np.empty((-(-h // factor), wp // factor), dtype=np.float32)
    for start in range(0, h, step):
        strip = np.asarray(plane[start : start + step], dtype=np.float32)
        rows = -(-strip.shape[0] // factor) * factor
        strip = np.pad(strip, ((0, rows - strip.shape[0]), (0, wp - w)), mode="edge")
        block = strip.reshape(rows // factor, factor, wp // factor, factor).mean(axis=(1, 3))
        out[start // factor : start // factor + block.shape[0]] = block
    return out


def reduce_any(mask: npt.NDArray[np.bool_], factor: int) -> npt.NDArray[np.bool_]:
    """(H, W) bool -> (ceil(H / f), ceil(W / f)): True where any pixel of the block is."""
    if factor <= 1:
        return mask
    h, w = mask.shape
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    if (hp, wp) != (h, w):
        mask = np.pad(mask, ((0, hp - h), (0, wp - w)))
    blocks = mask.reshape(hp // factor, factor, wp // factor, factor)
    return np.asarray(blocks.any(axis=(1, 3)), dtype=bool)


def label_edges(labels: npt.NDArray) -> npt.NDArray[np.bool_]:
    """(H, W) bool: the inner edge pixels of every object of an (H, W) label image, as
    ``find_boundaries(labels, mode="inner")``, computed in strips of rows to bound memory."""
    h = labels.shape[0]
    out = np.empty(labels.shape, dtype=bool)
    for start in range(0, h, _STRIP_ROWS):
        lo, hi = max(start - 1, 0), min(start + _STRIP_ROWS + 1, h)
        edges = find_boundaries(labels[lo:hi], mode="inner")
        out[start : min(start + _STRIP_ROWS, h)] = edges[start - lo : start - lo + _STRIP_ROWS]
    return out


@dataclass(frozen=True)
class OverlayStyle:
    """How :func:`field_overlay` draws a field and its outlines."""

    visible: tuple[bool, ...] | None = None  # per-channel on/off; all on when None
    gains: tuple[float, ...] | None = None  # per-channel contrast multiplier (as the tiles)
    percentiles: tuple[float, float] = (1.0, 99.8)  # the field's own range, when none is given
    outline_colour: str | None = OUTLINE_COLOUR  # objects' outlines; None: the highlight only
    highlight_colour: str = HIGHLIGHT_COLOUR  # the highlighted object (2 px outline)
    muted_colour: str = MUTED_COLOUR  # the muted objects (not cells)
    max_size: int | None = None  # longest side of the result; larger fields are reduced


@dataclass(frozen=True, eq=False)
class Outlines:
    """The objects :func:`field_overlay` outlines: a label image and the ones drawn apart."""

    labels: npt.NDArray  # (H, W) integer label image of the field (0 = background)
    #: label outlined in ``style.highlight_colour`` (2 px: its edge and the pixels just
    #: outside), drawn over the rest; None: no object highlighted
    highlight: int | None = None
    muted: Collection[int] = ()  # labels outlined in ``style.muted_colour`` (not cells)


@dataclass(frozen=True)
class FieldView:
    """How :func:`render_field` shows a project's field."""

    visible: tuple[bool, ...] | None = None  # per-channel on/off; all on when None
    outlines: bool = True  # outline every object (False: the highlighted one only)
    highlight: int | None = None  # object drawn in its own colour (HIGHLIGHT_COLOUR)
    display_size: int = DISPLAY_SIZE  # longest side shown, about (larger fields reduced)


def field_overlay(
    image: npt.NDArray,
    outlines: Outlines | None,
    colours: Sequence[str],
    ranges: npt.NDArray | None = None,
    *,
    style: OverlayStyle = OverlayStyle(),
) -> npt.NDArray[np.uint8]:
    """A field as an RGB composite with its objects' outlines.

    Args:
        image: (C, H, W) raw field pixels, any numeric dtype.
        outlines: the label image, the highlighted and the muted objects (see
            :class:`Outlines`); None for no outlines.
        colours: one ``#rrggbb`` per channel.
        ranges: (C, 2) ``[low, high]`` per channel (:func:`field_ranges`); None: the field's
            own ``style.percentiles``.
        style: channels on/off and gains, colours of the outlines, ``max_size`` (a larger
            field is reduced, see the module docstring).

    Returns:
        (ceil(H / f), ceil(W / f), 3) uint8 RGB, f = :func:`reduction_factor`.

    Raises:
        DataError: colours or ranges that do not fit the channels, or labels of another shape.
    """
    n_channels, height, width = image.shape
    labels = None if outlines is None else outlines.labels
    if labels is not None and labels.shape != (height, width):
        raise DataError(f"label image {labels.shape} does not fit the {height}x{width} field")
    factor = reduction_factor(height, width, style.max_size)
    small = np.stack([reduce_plane(image[c], factor) for c in range(n_channels)])
    if ranges is None:
        ranges = compute_ranges(small[None], style.percentiles)
    ranges = np.asarray(ranges, dtype=np.float64)
    if ranges.shape != (n_channels, 2):
        raise DataError(f"ranges of shape {ranges.shape} for {n_channels} channels; need (C, 2)")
    normalised = apply_ranges(small, ranges)[None]
    rgb = composite(normalised, colours, visible=style.visible, gains=style.gains)[0]
    if outlines is not None:
        _draw_outlines(rgb, outlines, factor, style)
    return rgb


def _draw_outlines(
    rgb: npt.NDArray[np.uint8], outlines: Outlines, factor: int, style: OverlayStyle
) -> None:
    """Paint ``outlines`` (reduced by ``factor``) into ``rgb`` in place."""
    labels, highlight, muted = outlines.labels, outlines.highlight, outlines.muted
    if style.outline_colour is not None:
        edges = label_edges(labels)
        if len(muted):
            quiet = edges & np.isin(labels, np.fromiter(muted, dtype=np.int64))
            edges &= ~quiet
            _paint(rgb, reduce_any(quiet, factor), style.muted_colour)
        _paint(rgb, reduce_any(edges, factor), style.outline_colour)
    if highlight is not None:
        outline = object_outline(labels, highlight, thick=True)
        _paint(rgb, reduce_any(outline, factor), style.highlight_colour)


def object_outline(labels: npt.NDArray, label: int, thick: bool = False) -> npt.NDArray[np.bool_]:
    """(H, W) bool: the edge pixels of object ``label`` (all False when it is absent); with
    ``thick``, the background pixels just outside it too (a 2 px outline). Only the object's
    bounding box (grown by 1 px) is searched."""
    out = np.zeros(labels.shape, dtype=bool)
    rows, cols = np.nonzero(labels == label)
    if rows.size == 0:
        return out
    r0, c0 = max(rows.min() - 1, 0), max(cols.min() - 1, 0)
    box = (slice(r0, rows.max() + 2), slice(c0, cols.max() + 2))
    out[box] = find_boundaries(labels[box] == label, mode="thick" if thick else "inner")
    return out


def _paint(rgb: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_], colour: str) -> None:
    rgb[mask] = (hex_to_rgb(colour) * 255.0 + 0.5).astype(np.uint8)


def draw_markers(
    rgb: npt.NDArray[np.uint8],
    centres: npt.NDArray,
    colour: str = OUTLINE_COLOUR,
    radius: int = MARKER_RADIUS,
) -> npt.NDArray[np.uint8]:
    """Circles (2 px thick) at ``centres`` (n, 2) (row, col) in ``rgb``'s pixels, in place;
    parts outside the image are clipped. Returns ``rgb``."""
    value = (hex_to_rgb(colour) * 255.0 + 0.5).astype(np.uint8)
    for y, x in np.asarray(centres, dtype=np.float64).reshape(-1, 2):
        for r in (radius, radius + 1):
            rr, cc = draw.circle_perimeter(int(round(y)), int(round(x)), r, shape=rgb.shape[:2])
            rgb[rr, cc] = value
    return rgb


def cell_window(
    cell: Mapping[str, Any], height: int, width: int, context_px: int
) -> tuple[slice, slice]:
    """The (rows, cols) window of a field round a cell: its bounding box (or a small box round
    its centre when it has none) grown by ``context_px``, clipped to the (height, width) field."""
    y, x = float(cell["centroid_y"]), float(cell["centroid_x"])
    given = [cell.get(k) for k in ("bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col")]
    if any(v is None or pd.isna(v) for v in given):
        box = [y - _NO_BBOX_HALF, x - _NO_BBOX_HALF, y + _NO_BBOX_HALF, x + _NO_BBOX_HALF]
    else:
        box = [float(v) for v in given if v is not None]
    r0, c0 = max(int(box[0]) - context_px, 0), max(int(box[1]) - context_px, 0)
    r1, c1 = min(int(box[2]) + context_px, height), min(int(box[3]) + context_px, width)
    return slice(r0, max(r1, r0 + 1)), slice(c0, max(c1, c0 + 1))


def cell_in_field(
    project_dir: Path,
    cell: str | Mapping[str, Any],
    *,
    context_px: int = CONTEXT_PX,
    colours: Sequence[str] | None = None,
    visible: Sequence[bool] | None = None,
    max_size: int | None = DISPLAY_SIZE,
) -> npt.NDArray[np.uint8]:
    """A window of a cell's field round the cell, its outline highlighted; a cell of a field
    without a label image (objects given as centres) gets a circle at its centre instead.

    Args:
        project_dir: the project (made from fields).
        cell: a cell id, or its cell-table row (``field``, ``object``, ``centroid_y/x``,
            ``bbox_*``; bounding box may be missing).
        context_px: field pixels shown round the cell's bounding box (clipped at the edges).
        colours: one ``#rrggbb`` per channel; default colours when None.
        visible: per-channel on/off.
        max_size: longest side of the result (a larger window is reduced).

    Returns:
        (h, w, 3) uint8 RGB; the other objects of the window outlined as well.

    Raises:
        DataError: unknown cell or field, a project not made from fields, or moved sources.
    """
    row = cell_row(project_dir, cell) if isinstance(cell, str) else dict(cell)
    key = str(row["field"])
    image = read_field_image(project_dir, key)
    rows, cols = cell_window(row, image.shape[1], image.shape[2], context_px)
    window = image[:, rows, cols]
    colours = list(colours) if colours else [c.colour for c in default_channels(len(image))]
    labels = field_labels(project_dir, key)
    ranges = field_ranges(project_dir, key)
    crop = None if labels is None else labels[rows, cols]
    style = OverlayStyle(visible=_tuple(visible), max_size=max_size)
    outlines = None if crop is None else Outlines(crop, highlight=int(row["object"]))
    rgb = field_overlay(window, outlines, colours, ranges, style=style)
    if crop is None:
        factor = reduction_factor(window.shape[1], window.shape[2], max_size)
        centre = (float(row["centroid_y"]) - rows.start, float(row["centroid_x"]) - cols.start)
        draw_markers(rgb, np.array([centre]) / factor, HIGHLIGHT_COLOUR)
    return rgb


def render_field(
    project_dir: Path, key: str, colours: Sequence[str], view: FieldView = FieldView()
) -> npt.NDArray[np.uint8]:
    """A project's field as shown whole: the composite at the crops' ranges, each cell
    outlined, objects that are not cells (touching the border) outlined in grey,
    ``view.highlight`` in its own colour; objects given as centres get circles. Fields larger
    than ``view.display_size`` are reduced, smaller ones enlarged by an integer factor
    (nearest). ``view`` also holds the channels shown and whether every object is outlined.

    Returns:
        (h, w, 3) uint8 RGB, longest side about ``view.display_size``.

    Raises:
        DataError: unknown field, a project not made from fields, or moved source files.
    """
    image = read_field_image(project_dir, key)
    ranges = field_ranges(project_dir, key)
    labels = field_labels(project_dir, key)
    outlines, highlight, display_size = view.outlines, view.highlight, view.display_size
    style = OverlayStyle(visible=_tuple(view.visible), max_size=display_size,
                         outline_colour=OUTLINE_COLOUR if outlines else None)  # fmt: skip
    if labels is not None:
        kept = set(field_cells(project_dir, key)["object"].tolist())
        muted = touches_border(labels) - kept
        drawn = Outlines(labels, highlight=highlight, muted=muted)
        rgb = field_overlay(image, drawn, colours, ranges, style=style)
    else:
        rgb = field_overlay(image, None, colours, ranges, style=style)
        factor = reduction_factor(image.shape[1], image.shape[2], display_size)
        _centre_markers(rgb, field_cells(project_dir, key, ["centroid_y", "centroid_x"]),
                        factor, outlines, highlight)  # fmt: skip
    return enlarge(rgb, display_size)


def _tuple(values: Sequence[bool] | None) -> tuple[bool, ...] | None:
    return None if values is None else tuple(values)


def enlarge(rgb: npt.NDArray[np.uint8], display_size: int) -> npt.NDArray[np.uint8]:
    """(h, w, 3) enlarged by the integer factor (nearest; at most 4) that brings its longer
    side closest to ``display_size`` from below; unchanged when it is that large already."""
    return upscale(rgb, min(max(display_size // max(rgb.shape[:2]), 1), _MAX_GROW))


def _centre_markers(
    rgb: npt.NDArray[np.uint8],
    cells: pd.DataFrame,
    factor: int,
    outlines: bool,
    highlight: int | None,
) -> None:
    """Circles at the centres of a field's ``cells`` (with ``outlines``) and round the cell
    whose object is ``highlight``, in ``rgb`` reduced by ``factor``."""
    centres = cells[["centroid_y", "centroid_x"]].to_numpy(np.float64)
    if outlines:
        draw_markers(rgb, centres / factor, OUTLINE_COLOUR, MARKER_RADIUS - 2)
    if highlight is not None:
        hit = cells["object"].to_numpy() == highlight
        draw_markers(rgb, centres[hit] / factor, HIGHLIGHT_COLOUR)

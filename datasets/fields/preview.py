"""A preview of how one field will be cut into cells, before a project is made from it.

The app shows it under the "create a project from fields" form: the field with the outlines of
the objects ingest would find in it (its mask when it has one, else the chosen segmentation),
objects touching the border (left out unless kept) outlined in grey.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from datasets.config import default_channels
from datasets.errors import DataError
from datasets.fields.files import read_field
from datasets.fields.masks import read_mask
from datasets.fields.render import (
    DISPLAY_SIZE,
    HIGHLIGHT_COLOUR,
    MARKER_RADIUS,
    Outlines,
    OverlayStyle,
    draw_markers,
    enlarge,
    field_overlay,
    reduction_factor,
)
from datasets.fields.spec import SEGMENT_METHODS, FieldSpec
from datasets.segmentation.classical import SegmentConfig, segment_field, touches_border

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldPreview:
    """One field as ingest would see it."""

    image: npt.NDArray[np.uint8]  # (h, w, 3) RGB with the objects' outlines
    n_objects: int  # objects found (border ones included)
    n_border: int  # of which touch the field's border
    source: str  # "mask", "centres", "classical" or "none" (given masks, and it has none)
    note: str  # one line for people: where the objects come from


def preview_field(
    spec: FieldSpec,
    segment: str = "classical",
    config: SegmentConfig | None = None,
    *,
    colours: Sequence[str] | None = None,
    keep_border: bool = False,
    display_size: int = DISPLAY_SIZE,
) -> FieldPreview:
    """The objects ingest would find in one field, drawn on it.

    A field with a mask file shows its mask (used as given whatever ``segment`` says); one
    with objects at given centres shows circles; otherwise ``segment`` decides: "classical"
    segments it now, "unet" too (the U-Net is trained only when the project is made, so the
    preview uses the classical method and says so), "given" shows no objects (the field would
    be skipped).

    Args:
        spec: the field (:func:`datasets.fields.files.find_fields`).
        segment: one of ``SEGMENT_METHODS``.
        config: classical settings (nuclear channel, sizes); defaults when None.
        colours: one ``#rrggbb`` per channel; default colours when None.
        keep_border: draw border objects like the others (they will be kept).
        display_size: longest side of the picture (larger fields are reduced).

    Raises:
        DataError: unknown ``segment``, an unreadable field or mask.
    """
    if segment not in SEGMENT_METHODS:
        raise DataError(f"segment {segment!r}: allowed {SEGMENT_METHODS}")
    image = read_field(spec)
    colours = list(colours) if colours else [c.colour for c in default_channels(len(image))]
    labels, source, note = _objects(spec, image, segment, config)
    style = OverlayStyle(max_size=display_size)
    if spec.objects is not None and labels is None:
        rgb = field_overlay(image, None, colours, style=style)
        factor = reduction_factor(image.shape[1], image.shape[2], display_size)
        centres = spec.objects[["y", "x"]].to_numpy(np.float64) / factor
        draw_markers(rgb, centres, HIGHLIGHT_COLOUR, MARKER_RADIUS - 2)
        return FieldPreview(enlarge(rgb, display_size), len(centres), 0, source, note)
    if labels is None:
        rgb = field_overlay(image, None, colours, style=style)
        return FieldPreview(enlarge(rgb, display_size), 0, 0, source, note)
    border = touches_border(labels)
    muted = set() if keep_border else border
    rgb = field_overlay(image, Outlines(labels, muted=muted), colours, style=style)
    n_objects = int(np.count_nonzero(np.unique(labels)))
    return FieldPreview(enlarge(rgb, display_size), n_objects, len(border), source, note)


def _objects(
    spec: FieldSpec, image: npt.NDArray, segment: str, config: SegmentConfig | None
) -> tuple[npt.NDArray | None, str, str]:
    """(labels or None, source, note) of a field, as :func:`preview_field` describes."""
    if spec.mask_file is not None:
        labels = read_mask(spec.mask_file, image.shape[1:])
        return labels, "mask", f"its mask {spec.mask_file.name}, used as given"
    if spec.objects is not None:
        return None, "centres", "objects at the given centres"
    if segment == "given":
        return None, "none", "no mask: with given masks only, this field will be skipped"
    labels = segment_field(image, config or SegmentConfig())
    if segment == "unet":
        note = ("classical segmentation: the U-Net is trained when the project is made, so "
                "this preview segments with the classical method")  # fmt: skip
        return labels, "classical", note
    return labels, "classical", "classical segmentation"

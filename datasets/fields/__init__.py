"""Whole fields of view: finding and reading them, ingest into cells, the project's field store,
previews, rendering, the demo fields.

Public names load lazily on first use (like ``labeling`` itself), so importing the package is
cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CONTEXT_PX": "datasets.fields.render",
    "FIELDS_FILE": "datasets.fields.store",
    "FILENAME_PATTERN": "datasets.fields.demo",
    "FieldInput": "datasets.fields.ingest",
    "FieldSpec": "datasets.fields.spec",
    "FieldView": "datasets.fields.render",
    "HIGHLIGHT_COLOUR": "datasets.fields.render",
    "MULTICHANNEL_PATTERN": "datasets.fields.demo",
    "MUTED_COLOUR": "datasets.fields.render",
    "OUTLINE_COLOUR": "datasets.fields.render",
    "Outlines": "datasets.fields.render",
    "OverlayStyle": "datasets.fields.render",
    "PHENOTYPES": "datasets.fields.demo",
    "SEGMENT_METHODS": "datasets.fields.spec",
    "cell_in_field": "datasets.fields.render",
    "cell_row": "datasets.fields.lookup",
    "crop_at": "datasets.fields.ingest",
    "draw_markers": "datasets.fields.render",
    "existing_fields": "datasets.fields.store",
    "field_cells": "datasets.fields.lookup",
    "field_header": "datasets.fields.files",
    "field_overlay": "datasets.fields.render",
    "field_ranges": "datasets.fields.lookup",
    "find_fields": "datasets.fields.files",
    "generate_demo_fields": "datasets.fields.demo",
    "has_fields": "datasets.fields.lookup",
    "ingest_fields": "datasets.fields.ingest",
    "label_edges": "datasets.fields.render",
    "make_field": "datasets.fields.demo",
    "mask_part_file": "datasets.fields.store",
    "parse_pattern": "datasets.fields.files",
    "preview_field": "datasets.fields.preview",
    "read_field": "datasets.fields.files",
    "read_field_image": "datasets.fields.store",
    "read_field_mask": "datasets.fields.store",
    "read_fields": "datasets.fields.store",
    "read_mask": "datasets.fields.masks",
    "read_truth_csv": "datasets.fields.store",
    "reduce_plane": "datasets.fields.render",
    "render_field": "datasets.fields.render",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datasets.fields' has no attribute {name!r}")

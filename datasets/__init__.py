"""Reading screens: crops and fields, channels, normalisation, pixels, features, the demo screen.

Public names load lazily on first use, so ``import datasets`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PhenoScoutError": "datasets.errors",
    "DataError": "datasets.errors",
    "ChannelSpec": "datasets.config",
    "IngestConfig": "datasets.config",
    "default_channels": "datasets.config",
    "compute_ranges": "datasets.normalise",
    "apply_ranges": "datasets.normalise",
    "find_images": "datasets.readers",
    "read_image_file": "datasets.readers",
    "read_cells": "datasets.cells",
    "PixelStore": "datasets.pixels",
    "IngestReport": "datasets.ingest",
    "ingest_crops": "datasets.ingest",
    "morphology_features": "datasets.morphology",
    "detect_polarity": "datasets.morphology",
    "compute_morphology": "datasets.features",
    "read_features": "datasets.features",
    "generate_demo": "datasets.demo",
    "composite": "datasets.render",
    "read_cellprofiler": "datasets.cellprofiler",
    "cellprofiler_channels": "datasets.cellprofiler",
    "FieldSpec": "datasets.fieldspec",
    "find_fields": "datasets.fields",
    "read_field": "datasets.fields",
    "ingest_fields": "datasets.field_ingest",
    "read_fields": "datasets.field_store",
    "read_field_image": "datasets.field_store",
    "read_field_mask": "datasets.field_store",
    "SegmentConfig": "datasets.segment",
    "segment_field": "datasets.segment",
    "segment_nuclei": "datasets.segment",
    "object_table": "datasets.segment",
    "SegScore": "datasets.seg_metrics",
    "score_segmentation": "datasets.seg_metrics",
    "make_field": "datasets.demo_fields",
    "generate_demo_fields": "datasets.demo_fields",
    "field_overlay": "datasets.field_render",
    "render_field": "datasets.field_render",
    "cell_in_field": "datasets.field_render",
    "preview_field": "datasets.field_preview",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")

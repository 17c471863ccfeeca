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
    "CropSource": "datasets.config",
    "default_channels": "datasets.config",
    "compute_ranges": "datasets.normalise",
    "apply_ranges": "datasets.normalise",
    "find_images": "datasets.crops.readers",
    "read_image_file": "datasets.crops.readers",
    "read_cells": "datasets.cells",
    "read_cells_of": "datasets.cells",
    "PixelStore": "datasets.pixels.store",
    "IngestReport": "datasets.crops.ingest",
    "ingest_crops": "datasets.crops.ingest",
    "morphology_features": "datasets.morphology",
    "detect_polarity": "datasets.morphology",
    "compute_morphology": "datasets.features",
    "read_features": "datasets.features",
    "generate_demo": "datasets.crops.demo",
    "composite": "datasets.render",
    "read_cellprofiler": "datasets.cellprofiler.reader",
    "cellprofiler_channels": "datasets.cellprofiler.reader",
    "FieldSpec": "datasets.fields.spec",
    "find_fields": "datasets.fields.files",
    "read_field": "datasets.fields.files",
    "ingest_fields": "datasets.fields.ingest",
    "read_fields": "datasets.fields.store",
    "read_field_image": "datasets.fields.store",
    "read_field_mask": "datasets.fields.store",
    "SegmentConfig": "datasets.segmentation.classical",
    "segment_field": "datasets.segmentation.classical",
    "segment_nuclei": "datasets.segmentation.classical",
    "object_table": "datasets.segmentation.classical",
    "SegScore": "datasets.segmentation.metrics",
    "score_segmentation": "datasets.segmentation.metrics",
    "make_field": "datasets.fields.demo",
    "generate_demo_fields": "datasets.fields.demo",
    "field_overlay": "datasets.fields.render",
    "render_field": "datasets.fields.render",
    "cell_in_field": "datasets.fields.render",
    "preview_field": "datasets.fields.preview",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")

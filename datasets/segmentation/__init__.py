"""Segmenting fields into cells: classical thresholding, seeded watershed post-processing, and
scoring against true masks.

Public names load lazily on first use (like ``labeling`` itself), so importing the package is
cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WatershedParams": "datasets.segmentation.watershed",
    "labels_from_probs": "datasets.segmentation.watershed",
    "targets_from_labels": "datasets.segmentation.watershed",
    "SegScore": "datasets.segmentation.metrics",
    "SegmentConfig": "datasets.segmentation.classical",
    "field_polarity": "datasets.segmentation.classical",
    "object_table": "datasets.segmentation.classical",
    "score_segmentation": "datasets.segmentation.metrics",
    "segment_field": "datasets.segmentation.classical",
    "segment_nuclei": "datasets.segmentation.classical",
    "touches_border": "datasets.segmentation.classical",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datasets.segmentation' has no attribute {name!r}")

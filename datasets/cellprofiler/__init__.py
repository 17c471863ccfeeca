"""CellProfiler exports: load the per-image and per-object tables and turn them into field specs.

Public names load lazily on first use (like ``labeling`` itself), so importing the package is
cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "cellprofiler_channels": "datasets.cellprofiler.reader",
    "read_cellprofiler": "datasets.cellprofiler.reader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datasets.cellprofiler' has no attribute {name!r}")

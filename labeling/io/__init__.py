"""Labels and results in and out: label import, label/prediction export, downloadable bundles.

Public names load lazily on first use (like ``labeling`` itself), so importing the package is
cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "class_folders": "labeling.io.bundles",
    "crops_zip": "labeling.io.bundles",
    "csv_bytes": "labeling.io.export",
    "export_anndata": "labeling.io.anndata_export",
    "export_frame": "labeling.io.export",
    "export_meta": "labeling.io.export",
    "export_table": "labeling.io.export",
    "import_labels": "labeling.io.imports",
    "labels_table": "labeling.io.export",
    "model_checkpoint": "labeling.io.bundles",
    "neutralise_formula": "labeling.io.export",
    "predict_screen": "labeling.io.bundles",
    "safe_export_path": "labeling.io.export",
    "safe_name": "labeling.io.bundles",
    "table_bytes": "labeling.io.export",
    "unquote_formula": "labeling.io.export",
    "write_bytes_atomic": "labeling.io.export",
    "write_table": "labeling.io.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'labeling.io' has no attribute {name!r}")

"""Single-cell crops: reading image files, resizing to one crop size, ingest into a project, the
demo crop screen.

Public names load lazily on first use (like ``labeling`` itself), so importing the package is
cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CHANNELS": "datasets.crops.demo",
    "DemoSummary": "datasets.crops.demo",
    "ImageHeader": "datasets.crops.readers",
    "IngestReport": "datasets.crops.report",
    "PHENOTYPES": "datasets.crops.demo",
    "PREVALENCE": "datasets.crops.demo",
    "RARE_PHENOTYPES": "datasets.crops.demo",
    "SUPPORTED_SUFFIXES": "datasets.crops.readers",
    "border_median": "datasets.crops.resize",
    "channel_names": "datasets.crops.ingest",
    "check_existing": "datasets.crops.ingest",
    "choose_scale": "datasets.crops.resize",
    "find_images": "datasets.crops.readers",
    "fit_crops": "datasets.crops.resize",
    "generate_demo": "datasets.crops.demo",
    "ingest_crops": "datasets.crops.ingest",
    "layout_3d": "datasets.crops.readers",
    "normalisation_ranges": "datasets.crops.ingest",
    "part_entry": "datasets.crops.ingest",
    "plan_phenotypes": "datasets.crops.demo",
    "prepare_demo_folder": "datasets.crops.demo",
    "read_header": "datasets.crops.readers",
    "read_image_file": "datasets.crops.readers",
    "read_npz_labels": "datasets.crops.readers",
    "replace_non_finite": "datasets.crops.readers",
    "rescale_images": "datasets.crops.resize",
    "save_part": "datasets.crops.ingest",
    "scan_folder": "datasets.crops.readers",
    "skip_reason": "datasets.crops.readers",
    "storage_dtype": "datasets.crops.resize",
    "widest_dtype": "datasets.crops.resize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datasets.crops' has no attribute {name!r}")

"""The pixel store: crops (and object masks) in sharded Zarr arrays, one per plate.

- ``arrays``: the array format and its reader; ``writer``: new arrays and appends;
  ``npy``: the ingest's temporary ``.npy``; ``ranges``: per-part normalisation ranges.
- ``plates``: one array per plate, appended by each ingest; a part's rows over several arrays.
- ``store``: :class:`PixelStore`, crops by ``cell_id``, normalised.
- ``npy_migration``, ``plate_migration``: projects of earlier versions converted in place, once.

Public names load lazily on first use, so importing the package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DATASET_GROUP": "datasets.pixels.ranges",
    "PartArray": "datasets.pixels.arrays",
    "ZarrPartWriter": "datasets.pixels.writer",
    "open_part": "datasets.pixels.arrays",
    "PixelStore": "datasets.pixels.store",
    "PartView": "datasets.pixels.plates",
    "Segment": "datasets.pixels.plates",
    "open_part_view": "datasets.pixels.plates",
    "plate_file": "datasets.pixels.plates",
    "store_part": "datasets.pixels.plates",
    "migrate_pixels": "datasets.pixels.npy_migration",
    "migrate_to_plates": "datasets.pixels.plate_migration",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datasets.pixels' has no attribute {name!r}")

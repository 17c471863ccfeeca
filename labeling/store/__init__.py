"""The label store (``labels.db``, SQLite): labels, classes, rounds and leases, schema migrations.

Public names load lazily on first use (like ``labeling`` itself), so importing the package is
cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BAD_SEGMENTATION": "labeling.store.labels",
    "ClassInfo": "labeling.store.classes",
    "ClassTable": "labeling.store.classes",
    "Database": "labeling.store.db",
    "LabelRecord": "labeling.store.history",
    "LabelStore": "labeling.store.labels",
    "RoundsAndLeases": "labeling.store.rounds",
    "SCHEMA_VERSION": "labeling.store.schema",
    "SKIP": "labeling.store.names",
    "UNSURE": "labeling.store.labels",
    "backup_path": "labeling.store.migrations",
    "class_list": "labeling.store.names",
    "damaged": "labeling.store.db",
    "label_durations": "labeling.store.rounds",
    "migrate_config_data": "labeling.store.migrations",
    "normalise_class_name": "labeling.store.names",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'labeling.store' has no attribute {name!r}")

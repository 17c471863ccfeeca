"""The active-learning loop: project, label store, query strategies, head, simulation, export, CLI.

Public names load lazily on first use, so ``import labeling`` (and ``phenoscout label``) stays
fast and never pulls in torch, streamlit, or even pandas before they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "labeling.errors",
    "DataError": "labeling.errors",
    "NotTrainedError": "labeling.errors",
    "PhenoScoutError": "labeling.errors",
    "PoolExhaustedError": "labeling.errors",
    "ProjectError": "labeling.errors",
    "StoreError": "labeling.errors",
    "LoopConfig": "labeling.config",
    "ProjectConfig": "labeling.config",
    "load_config": "labeling.config",
    "save_config": "labeling.config",
    "LabelStore": "labeling.store.labels",
    "SKIP": "labeling.store.labels",
    "Project": "labeling.project",
    "create_project": "labeling.project",
    "create_project_from_fields": "labeling.project",
    "open_project": "labeling.project",
    "add_crops": "labeling.project",
    "add_fields": "labeling.project",
    "CropSource": "labeling.project",
    "FieldSource": "labeling.project",
    "IngestRun": "labeling.project",
    "import_labels": "labeling.io.imports",
    "export_table": "labeling.io.export",
    "next_batch": "labeling.loop",
    "submit_labels": "labeling.loop",
    "SimConfig": "labeling.simulate",
    "simulate": "labeling.simulate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'labeling' has no attribute {name!r}")

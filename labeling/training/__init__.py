"""Trainer control: start, watch and stop a project's background trainer, and run it on the store's
labels; the newest published model version (``models.folder``) that its status line shows.

Public names load lazily on first use (like ``labeling`` itself), so importing the package is
cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StoreLabels": "labeling.training.run",
    "run_trainer": "labeling.training.run",
    "TrainerStatus": "labeling.training.process",
    "ensure_trainer": "labeling.training.process",
    "latest_version": "models.folder",
    "pid_alive": "labeling.training.process",
    "stop_trainer": "labeling.training.process",
    "trainer_running": "labeling.training.process",
    "trainer_status": "labeling.training.process",
    "version_name": "models.folder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'labeling.training' has no attribute {name!r}")

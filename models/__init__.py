"""PyTorch networks and training (the only package that imports torch).

``import models`` stays light: torch loads only when a name below other than ``ModelError`` is
first used (module ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import Any

from models.errors import ModelError

_LAZY = {
    "resolve_device": "models.device",
    "seed_everything": "models.device",
    "UNet": "models.unet",
    "UNetConfig": "models.unet",
    "Encoder": "models.unet",
    "Classifier": "models.unet",
    "TrainConfig": "models.pretrain",
    "pretrain": "models.pretrain",
    "FinetuneConfig": "models.finetune",
    "finetune": "models.finetune",
    "embed_cells": "models.embed",
    "save_checkpoint": "models.checkpoint",
    "load_checkpoint": "models.checkpoint",
    "TrainerConfig": "models.trainer",
    "serve": "models.trainer",
    "LabelSource": "models.trainer",
    "ServeConfig": "models.trainer",
    "latest_version": "models.folder",
    "list_versions": "models.folder",
}

__all__ = ["ModelError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")

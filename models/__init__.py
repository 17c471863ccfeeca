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
    "UNet": "models.backbone.unet",
    "UNetConfig": "models.backbone.unet",
    "Encoder": "models.backbone.unet",
    "Classifier": "models.backbone.unet",
    "TrainConfig": "models.backbone.pretrain",
    "pretrain": "models.backbone.pretrain",
    "FinetuneConfig": "models.backbone.finetune",
    "finetune": "models.backbone.finetune",
    "LabeledCells": "models.backbone.finetune",
    "embed_cells": "models.backbone.embed",
    "EmbedConfig": "models.backbone.embed",
    "save_checkpoint": "models.backbone.checkpoint",
    "load_checkpoint": "models.backbone.checkpoint",
    "TrainerConfig": "models.trainer.trainer",
    "serve": "models.trainer.trainer",
    "LabelSource": "models.trainer.trainer",
    "ServeConfig": "models.trainer.trainer",
    "latest_version": "models.folder",
    "list_versions": "models.folder",
}

__all__ = ["ModelError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")

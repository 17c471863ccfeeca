"""PyTorch networks and training (the only package that imports torch)."""

from __future__ import annotations

from models.errors import ModelError

__all__ = ["ModelError"]

"""Errors raised by the model layer."""

from __future__ import annotations

from datasets.errors import DataError, PhenoScoutError


class ModelError(PhenoScoutError):
    """A model cannot be built, loaded, trained or run as asked."""


__all__ = ["DataError", "ModelError", "PhenoScoutError"]

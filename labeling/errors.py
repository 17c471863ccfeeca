"""Errors of the labeling layer; re-exports the base errors so callers need one import."""

from __future__ import annotations

from datasets.errors import DataError, PhenoScoutError, ProjectDamagedError, ProjectError


class ConfigError(PhenoScoutError):
    """A configuration value or file is invalid."""


class StoreError(PhenoScoutError):
    """The label store refused an operation (unknown cell, unknown class, bad name)."""


class StoreDamagedError(StoreError):
    """labels.db is damaged (SQLite reports corruption): nothing is written to it any more.

    :attr:`brief` is the message without a path, for the app.
    """

    def __init__(self, message: str, brief: str) -> None:
        self.brief = brief
        super().__init__(message)


class PoolExhaustedError(PhenoScoutError):
    """Fewer unlabeled cells are left than a batch asks for."""


class NotTrainedError(PhenoScoutError):
    """A model is needed but none has been fitted yet."""


__all__ = [
    "ConfigError",
    "DataError",
    "NotTrainedError",
    "PhenoScoutError",
    "PoolExhaustedError",
    "ProjectDamagedError",
    "ProjectError",
    "StoreDamagedError",
    "StoreError",
]

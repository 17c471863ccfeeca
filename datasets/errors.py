"""The project's exception hierarchy, rooted where every layer may import it."""

from __future__ import annotations


class PhenoScoutError(Exception):
    """Base class of every error PhenoScout raises on purpose.

    Its message is one line meant for the user: what is wrong, the offending value,
    and how to fix it.
    """


class ProjectError(PhenoScoutError):
    """A project folder is missing, incomplete or of an unknown schema version."""


class DataError(PhenoScoutError):
    """Bad input data: an unreadable image, a wrong channel count, a bad CSV, an empty folder."""

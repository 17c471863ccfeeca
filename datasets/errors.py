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


class ProjectDamagedError(DataError):
    """A project file exists but cannot be read: truncated, overwritten or not of its format.

    ``str()`` names the file and the cause; :attr:`brief` says the same without any path, for
    the app (which shows no paths).
    """

    def __init__(self, path: object, cause: object, fix: str) -> None:
        self.path, self.fix = path, fix
        name = getattr(path, "name", None) or str(path)
        folder = getattr(getattr(path, "parent", None), "name", "")
        where = f" in the project's {folder} folder" if folder in _SUBFOLDERS else ""
        self.brief = f"{name}{where} is damaged; {fix}"
        super().__init__(f"{path}: damaged ({_one_line(cause)}); {fix}")


_SUBFOLDERS = ("features", "pixels", "models", "cache")  # a project's folders of files


def _one_line(cause: object) -> str:
    """The first line of an exception's text (pyarrow's are several), at most 160 characters."""
    text = str(cause).strip().splitlines()
    line = text[0] if text else type(cause).__name__
    return line if len(line) <= 160 else line[:157] + "..."

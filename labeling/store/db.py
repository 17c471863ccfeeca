"""What every part of the label store shares: the :class:`Database` it works through, the
time stamps of its rows, and one-line errors for writes SQLite refused (read-only, disk full).

``LabelStore`` (``labeling.store.labels``) owns the connection and implements
:class:`Database`; the class table (``classes``) and the rounds and leases (``rounds``) are
parts it composes, each given the store as their ``Database``. A failed write is rolled back by
the store, so an error message can promise that labels committed before are safe. A damaged file
(SQLite reports corruption, or ``PRAGMA integrity_check`` does) is
:class:`~labeling.errors.StoreDamagedError`: the store writes nothing more into it. Errors are
worded for their cause: damaged, read-only, disk full, busy, other. Standard library only, like
the store.
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar

from labeling.errors import StoreDamagedError, StoreError

__all__ = [
    "DAMAGED_FIX",
    "Database",
    "Delegate",
    "damaged",
    "is_readonly",
    "now_iso",
    "store_failed",
    "why_write_failed",
    "write_failed",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class Delegate(Generic[_P, _R]):
    """A method of a store that is the same method of one of its parts: on an instance,
    ``Delegate("_rounds", RoundsAndLeases.start_round)`` is ``instance._rounds.start_round``
    (same signature and docstring)."""

    def __init__(self, part: str, method: Callable[Concatenate[Any, _P], _R]) -> None:
        self.part = part
        self.name = method.__name__
        self.__doc__ = method.__doc__

    def __get__(self, obj: object, owner: type | None = None) -> Callable[_P, _R]:
        bound: Callable[_P, _R] = getattr(getattr(obj, self.part), self.name)
        return bound


_LOW_SPACE = 16 * 2**20  # bytes free below which a failed write is put down to a full disk


class Database(Protocol):
    """The label store as its parts see it: one file, transactions, reads, known cells."""

    @property
    def path(self) -> Path:
        """The ``labels.db`` file."""
        ...

    def write(self) -> AbstractContextManager[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, rolled back on any error."""
        ...

    def read(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Rows of one query."""
        ...

    def check_cells(self, conn: sqlite3.Connection, ids: list[str]) -> None:
        """Raise StoreError naming the ids that are not in the cells table."""
        ...


def now_iso() -> str:
    """Now as the store writes it: ISO 8601 UTC with milliseconds, e.g. ``...T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


DAMAGED_FIX = (
    "restore labels.db from a backup (or recover it: sqlite3 labels.db .recover) - nothing is "
    "written to a damaged store"
)


def _is_damaged(err: sqlite3.DatabaseError) -> bool:
    """SQLite found the file corrupt or not a database at all."""
    name = str(getattr(err, "sqlite_errorname", ""))
    text = str(err).lower()
    return (
        name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
        or "malformed" in text
        or "not a database" in text
    )


def _is_busy(err: sqlite3.DatabaseError) -> bool:
    name = str(getattr(err, "sqlite_errorname", ""))
    text = str(err).lower()
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text


def damaged(path: Path, detail: str, what: str = "damaged") -> StoreDamagedError:
    """The error for a damaged ``labels.db``; ``detail``: SQLite's words or the integrity check's
    first findings."""
    return StoreDamagedError(
        f"{path}: {what} ({detail}); {DAMAGED_FIX}",
        brief=f"The label store (labels.db) is damaged; {DAMAGED_FIX}.",
    )


def store_failed(path: Path, err: sqlite3.DatabaseError, doing: str) -> StoreError:
    """The one-line error for SQLite refusing ``doing`` ("open", "read"), worded for the cause."""
    if _is_damaged(err):
        notadb = "not a database" in str(err).lower()
        return damaged(path, str(err), "damaged or not a labels.db" if notadb else "damaged")
    if _is_busy(err):
        return StoreError(
            f"{path}: busy: cannot {doing} the label store ({err}); another process holds it - "
            "retry in a moment"
        )
    why = why_write_failed(path, err)
    if why.startswith(("read-only", "disk full")):
        return StoreError(
            f"{path}: cannot {doing} the label store ({err}); {why}, then retry - labels "
            "committed before are safe"
        )
    return StoreError(
        f"{path}: cannot {doing} the label store ({err}); not a labels.db, or the disk fails - "
        "check the file and the disk"
    )


def is_readonly(err: sqlite3.DatabaseError) -> bool:
    name = str(getattr(err, "sqlite_errorname", ""))
    return name.startswith("SQLITE_READONLY") or "readonly" in str(err) or "read-only" in str(err)


def why_write_failed(path: Path, err: sqlite3.DatabaseError) -> str:
    """The cause of a failed write and its fix, for a user: read-only, disk full, or other."""
    name = str(getattr(err, "sqlite_errorname", ""))
    if is_readonly(err):
        return "read-only: the project folder or labels.db is read-only; make both writable"
    if name == "SQLITE_FULL" or "full" in str(err):
        return "disk full: free some disk space"
    if name.startswith("SQLITE_CANTOPEN") and not all(
        os.access(p, os.W_OK) for p in (path, path.parent) if p.exists()
    ):
        return "read-only: the project folder or labels.db is read-only; make both writable"
    # a write() failed (ENOSPC mid-page, EFBIG, EDQUOT, EIO), or no -wal/-shm could be made
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")):
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = _LOW_SPACE
        if free < _LOW_SPACE:
            return "disk full: free some disk space"
        if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
            return "disk full for this process: its file-size limit (ulimit -f) is reached"
        return "disk full or failing: free some space, check the disk and its quota"
    return "check the project folder"


def write_failed(path: Path, err: sqlite3.DatabaseError) -> StoreError:
    """The one-line error for a write SQLite refused (labels already committed stay safe)."""
    if _is_damaged(err):
        return damaged(path, str(err))
    if _is_busy(err):
        return store_failed(path, err, "write to")
    return StoreError(
        f"{path}: cannot save ({err}); {why_write_failed(path, err)}, then retry - nothing of "
        "this call was saved, labels committed before are safe"
    )

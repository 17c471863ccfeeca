"""The label store's one-line errors, worded for their cause: damaged, read-only, disk full,
busy, other.

A failed write is rolled back by the store, so the message can promise that labels committed
before are safe. A damaged file (SQLite reports corruption, or ``PRAGMA integrity_check`` does)
is :class:`~labeling.errors.StoreDamagedError`: the store writes nothing more into it. Standard
library only, like the store.
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
from pathlib import Path

from labeling.errors import StoreDamagedError, StoreError

_LOW_SPACE = 16 * 2**20  # bytes free below which a failed write is put down to a full disk


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
    why = _why_write_failed(path, err)
    if why.startswith(("read-only", "disk full")):
        return StoreError(
            f"{path}: cannot {doing} the label store ({err}); {why}, then retry - labels "
            "committed before are safe"
        )
    return StoreError(
        f"{path}: cannot {doing} the label store ({err}); not a labels.db, or the disk fails - "
        "check the file and the disk"
    )


def _is_readonly(err: sqlite3.DatabaseError) -> bool:
    name = str(getattr(err, "sqlite_errorname", ""))
    return name.startswith("SQLITE_READONLY") or "readonly" in str(err) or "read-only" in str(err)


def _why_write_failed(path: Path, err: sqlite3.DatabaseError) -> str:
    """The cause of a failed write and its fix, for a user: read-only, disk full, or other."""
    name = str(getattr(err, "sqlite_errorname", ""))
    if _is_readonly(err):
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


def _write_failed(path: Path, err: sqlite3.DatabaseError) -> StoreError:
    """The one-line error for a write SQLite refused (labels already committed stay safe)."""
    if _is_damaged(err):
        return damaged(path, str(err))
    if _is_busy(err):
        return store_failed(path, err, "write to")
    return StoreError(
        f"{path}: cannot save ({err}); {_why_write_failed(path, err)}, then retry - nothing of "
        "this call was saved, labels committed before are safe"
    )

"""The label store's one-line errors for writes SQLite refused: read-only, disk full, other.

A failed write is rolled back by the store, so the message can promise that labels committed
before are safe. Standard library only, like the store.
"""

from __future__ import annotations

import resource
import shutil
import sqlite3
from pathlib import Path

from labeling.errors import StoreError

_LOW_SPACE = 16 * 2**20  # bytes free below which a failed write is put down to a full disk


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
    if name.startswith("SQLITE_IOERR"):  # a write() failed: ENOSPC mid-page, EFBIG, EDQUOT, EIO
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
    return StoreError(
        f"{path}: cannot save ({err}); {_why_write_failed(path, err)}, then retry - nothing of "
        "this call was saved, labels committed before are safe"
    )

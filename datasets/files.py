"""Replacing a file atomically when several processes may write it at once."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def replace_path(
    path: Path, write: Callable[[Path], object], *, mode: int | None = None, sync: bool = False
) -> None:
    """Fill a new temporary file of this process's own beside ``path`` with ``write(tmp)``, then
    rename it over ``path``: readers see the old file or the whole new one, two processes
    writing the same file at once never write into each other's temporary file, and a planted
    link at a temporary name is never followed (the file is created exclusively).

    Args:
        path: the file to replace or create.
        write: fills the temporary file, given its path.
        mode: its permission bits; None keeps the old file's, and a new file gets its folder's
            read and write bits (a project shared by a group stays writable by the group).
        sync: flush the file to disk before the rename.

    Raises:
        OSError: the folder cannot be written (read-only, disk full); no temporary file is left.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if mode is None:
            mode = path.stat().st_mode if path.exists() else path.parent.stat().st_mode & 0o666
        os.chmod(tmp, mode & 0o777)
        if sync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """:func:`replace_path` for writers of an open binary file: ``write(fh)``."""

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    replace_path(path, fill)

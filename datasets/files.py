"""Replacing a file atomically when several processes may write it at once."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def replace_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Fill a temporary file of this process's own beside ``path`` with ``write(fh)``, then
    rename it over ``path``: readers see the old file or the whole new one, and two processes
    writing the same file at once never write into each other's temporary file. The file keeps
    its permissions; a new one gets its folder's read and write bits (a project shared by a
    group stays writable by the group).

    Raises:
        OSError: the folder cannot be written (read-only, disk full); no temporary file is left.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        mode = path.stat().st_mode if path.exists() else path.parent.stat().st_mode & 0o666
        os.chmod(name, mode & 0o777)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise

"""Publishing model versions atomically: fill ``models/.tmp-vNNNN/``, then rename to ``vNNNN``.

Readers (``models.folder``) only see complete folders; a killed publish leaves a
``.tmp-*`` folder that they ignore and the next trainer removes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.errors import ModelError
from models.folder import (
    CLASSES_FILE,
    META_FILE,
    MODELS_DIR,
    TMP_PREFIX,
    VERSION_RE,
    list_versions,
    version_name,
)

logger = logging.getLogger(__name__)


def _numbers(root: Path) -> list[int]:
    out = []
    for child in root.iterdir() if root.is_dir() else []:
        name = child.name.removeprefix(TMP_PREFIX)
        match = VERSION_RE.match(name)
        if match:
            out.append(int(match.group(1)))
    return out


def begin_version(project_dir: Path) -> tuple[int, Path]:
    """Create the temporary folder of the next version; returns ``(number, folder)``."""
    root = Path(project_dir) / MODELS_DIR
    root.mkdir(parents=True, exist_ok=True)
    number = max(_numbers(root), default=0) + 1
    tmp = root / f"{TMP_PREFIX}{version_name(number)}"
    tmp.mkdir()
    return number, tmp


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def publish_version(
    tmp: Path, meta: dict[str, Any], classes: tuple[str, ...] = (), keep: int = 3
) -> Path:
    """Finish a version: write classes.json and meta.json, rename, prune to the newest ``keep``.

    Args:
        tmp: folder from :func:`begin_version`, holding the other files already.
        meta: JSON-able facts (label count, timings, device, ...); ``created``, ``version``
            and ``classes`` are added.
        classes: class names of predictions.npy columns (empty without a classifier).
        keep: complete versions to keep.

    Returns:
        The published ``vNNNN`` folder.
    """
    tmp = Path(tmp)
    name = tmp.name.removeprefix(TMP_PREFIX)
    if not VERSION_RE.match(name) or not (tmp / "embeddings.npy").is_file():
        raise ModelError(f"{tmp}: not a filled temporary version folder; call begin_version")
    write_json(tmp / CLASSES_FILE, list(classes))
    full = {
        **meta,
        "version": int(name[1:]),
        "classes": list(classes),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(tmp / META_FILE, full)  # written last: its presence marks the version complete
    final = tmp.parent / name
    os.rename(tmp, final)
    _fsync_dir(tmp.parent)
    logger.info("published model version %s", final)
    prune_versions(tmp.parent.parent, keep)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def prune_versions(project_dir: Path, keep: int = 3) -> list[Path]:
    """Delete all but the newest ``keep`` complete versions; returns the deleted folders."""
    versions = list_versions(project_dir)
    old = [v.path for v in versions[: max(0, len(versions) - max(1, keep))]]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def remove_stale_tmp(project_dir: Path) -> list[Path]:
    """Delete ``.tmp-*`` folders left by a killed publish (call only while holding the lock)."""
    root = Path(project_dir) / MODELS_DIR
    stale = [p for p in root.glob(f"{TMP_PREFIX}*") if p.is_dir()] if root.is_dir() else []
    for path in stale:
        logger.warning("removing %s left by an interrupted publish", path)
        shutil.rmtree(path, ignore_errors=True)
    return stale

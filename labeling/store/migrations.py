"""Upgrades of projects written by an older PhenoScout: ``labels.db`` and ``project.toml``.

Each schema change is one step function from version N to N+1, kept here for as long as
projects of version N may exist. ``labels.db`` is upgraded when a :class:`~labeling.store.labels.
LabelStore` opens it: a consistent copy is saved first as ``labels.db.vN.bak`` (SQLite's
backup API, so nothing in the WAL is missed), then every step runs in ONE ``BEGIN IMMEDIATE``
transaction, so a failed or interrupted upgrade leaves the original untouched. ``project.toml``
is upgraded by :func:`labeling.config.load_config` (a copy saved as ``project.toml.vN.bak``).

Versions:
    1: the first release.
    2: ``labels.duration_ms`` (milliseconds the annotator spent on the cell: from the batch
       being ready, or from their previous label in the same batch, to this label; shared
       equally among labels given in one call), so labeling cost per class can be measured
       (rare phenotypes are often slower to decide); index ``labels_round`` on
       ``labels(round_id, annotator)`` that finds an annotator's latest label of a round.
       ``project.toml`` 2 marks a project whose ``labels.db`` is at 2, so an older PhenoScout
       stops at project.toml with a clear "newer schema" message.

Only the standard library is imported (the store loads nothing heavy).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labeling.errors import ConfigError, StoreError

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_STEPS",
    "STORE_STEPS",
    "backup_path",
    "migrate_config_data",
    "migrate_store",
    "store_version",
]


def _store_v1_to_v2(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE labels ADD COLUMN duration_ms INTEGER NULL")
    conn.execute("CREATE INDEX IF NOT EXISTS labels_round ON labels(round_id, annotator)")


def _config_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "schema_version": 2}


#: version N -> the step that upgrades a labels.db connection (inside a transaction) to N+1.
STORE_STEPS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _store_v1_to_v2}
#: version N -> the step that upgrades project.toml data (a plain dict) to N+1.
CONFIG_STEPS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _config_v1_to_v2}


def backup_path(path: Path, version: int) -> Path:
    """Where the copy of ``path`` taken before upgrading it from ``version`` goes:
    ``labels.db`` -> ``labels.db.v1.bak``."""
    return Path(path).with_name(f"{Path(path).name}.v{version}.bak")


def store_version(conn: sqlite3.Connection) -> int:
    """The ``schema_version`` recorded in a label store's meta table (0 when missing)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        return int(row[0]) if row else 0
    except ValueError:
        return 0


def _backup_store(path: Path, version: int) -> Path:
    """A consistent copy of ``path`` (committed data, WAL included) at :func:`backup_path`,
    written to a temporary file first so a half-written backup never carries the name."""
    out = backup_path(path, version)
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
    finally:
        dst.close()
        src.close()
    os.replace(tmp, out)
    return out


def migrate_store(path: Path, conn: sqlite3.Connection, target: int) -> int:
    """Upgrade the label store open on ``conn`` to schema ``target``.

    Takes the write lock, re-reads the version (another process may have upgraded it
    meanwhile), backs the file up, runs every step and the version bump in one transaction.

    Args:
        path: the ``labels.db`` file ``conn`` is open on (autocommit mode).
        conn: the store's connection, outside any transaction.
        target: the schema version of this PhenoScout.

    Returns:
        The version the store was at before (``target`` when nothing was needed).

    Raises:
        StoreError: a step failed or the backup could not be written; the store is unchanged.
    """
    path = Path(path)
    version = target
    try:
        conn.execute("BEGIN IMMEDIATE")
        version = store_version(conn)
        if version >= target or version < 1:
            conn.execute("ROLLBACK")
            return version
        backup = _backup_store(path, version)
        for step in range(version, target):
            STORE_STEPS[step](conn)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(target),))
        conn.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            (f"migrated_v{version}_at", datetime.now(UTC).isoformat(timespec="seconds")),
        )
        conn.execute("COMMIT")
    except (sqlite3.Error, OSError, KeyError) as err:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StoreError(
            f"{path}: cannot upgrade the label store from schema {version} to {target} ({err}); "
            "it is unchanged - make the project folder writable, free disk space and retry"
        ) from err
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    logger.warning("%s: upgraded the label store from schema %d to %d (copy of the old one: %s)",
                   path, version, target, backup)  # fmt: skip
    return version


def migrate_config_data(data: dict[str, Any], target: int) -> dict[str, Any]:
    """``project.toml`` data of an older schema upgraded to ``target`` (a new dict; data of
    ``target`` or newer is returned as it is, for the caller to judge).

    Raises:
        ConfigError: the version is not a whole number >= 1.
    """
    version = data.get("schema_version", target)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(
            f"schema_version {version!r} is not a whole number >= 1; restore project.toml "
            "from a backup, or set the version PhenoScout wrote (1 or later)"
        )
    for step in range(version, target):
        data = CONFIG_STEPS[step](data)
    return data

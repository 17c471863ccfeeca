"""Opening ``labels.db``: the connection settings, the integrity check on every open, and the
schema (created for a new store, checked and migrated for an existing one); used by
:class:`labeling.store.LabelStore`."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from labeling.errors import StoreError
from labeling.store.classes import PSEUDO_CLASSES
from labeling.store.db import Database, damaged, now_iso

logger = logging.getLogger("labeling.store.labels")  # the store's one logger

__all__ = [
    "FULL_CHECK_EVERY_S",
    "SCHEMA",
    "SCHEMA_VERSION",
    "check_integrity",
    "connect",
    "create_schema",
    "ensure_schema",
    "full_check_due",
]

SCHEMA_VERSION = 2  # labeling.store.migrations upgrades older stores on open
FULL_CHECK_EVERY_S = 24 * 3600.0  # the full PRAGMA integrity_check runs at most once a day

SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cells(cell_id TEXT PRIMARY KEY);
CREATE TABLE classes(class_id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, colour TEXT,
    key TEXT, created_at TEXT, pseudo INTEGER NOT NULL DEFAULT 0,
    merged_into INTEGER NULL REFERENCES classes(class_id), merged_at TEXT NULL);
CREATE TABLE rounds(round_id INTEGER PRIMARY KEY, started_at TEXT, finished_at TEXT,
    annotator TEXT, strategy TEXT, model_version TEXT, n_cells INTEGER, timings TEXT, state TEXT);
CREATE TABLE labels(label_id INTEGER PRIMARY KEY,
    cell_id TEXT NOT NULL REFERENCES cells(cell_id),
    class_id INTEGER NOT NULL REFERENCES classes(class_id), annotator TEXT NOT NULL,
    labeled_at TEXT, round_id INTEGER NULL REFERENCES rounds(round_id), source TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0,
    sub_strategy TEXT NULL, guess TEXT NULL, confidence REAL NULL, duration_ms INTEGER NULL);
CREATE INDEX labels_cell ON labels(cell_id);
CREATE INDEX labels_round ON labels(round_id, annotator);
CREATE TABLE leases(cell_id TEXT PRIMARY KEY REFERENCES cells(cell_id), annotator TEXT,
    round_id INTEGER, sub_strategy TEXT, guess TEXT, confidence REAL, expires_at REAL);
"""


def connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection to ``path`` in autocommit mode: WAL, synchronous FULL, foreign keys on;
    a write waits up to ``busy_timeout_s`` for another writer."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        logger.warning("%s: journal mode is %s, not WAL", path, mode)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def check_integrity(
    db: Database,
    conn: sqlite3.Connection,
    due: Callable[[sqlite3.Connection], bool] | None = None,
) -> None:
    """Refuse a damaged file before anything is written into it.

    ``PRAGMA quick_check`` on every open (it reads every page but skips the index
    contents); the full ``PRAGMA integrity_check`` (which also matches every index to its
    table) when the quick one fails, or when the last full check recorded in ``meta``
    (``integrity_checked_at``) is over :data:`FULL_CHECK_EVERY_S` old (``due``: that test,
    :func:`full_check_due` by default).

    Raises:
        StoreDamagedError: either check reports damage.
    """
    if not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
        return  # a new, empty file: nothing to check
    quick = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
    if quick != ["ok"] or (due or full_check_due)(conn):
        found = [r[0] for r in conn.execute("PRAGMA integrity_check(5)")]
        if found != ["ok"]:
            text = " ".join("; ".join(str(f) for f in found).split())  # rows are multi-line
            detail = f"PRAGMA integrity_check: {text}"
            raise damaged(db.path, detail[:300])
        _record_full_check(db)


def full_check_due(conn: sqlite3.Connection) -> bool:
    """Whether the last full integrity check recorded in ``meta`` is missing or too old."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'integrity_checked_at'").fetchone()
    except sqlite3.OperationalError:  # no meta table: not a label store (said later)
        return True
    if row is None:
        return True
    try:
        last = datetime.fromisoformat(str(row[0]).replace("Z", "+00:00"))
    except ValueError:
        return True
    return (datetime.now(UTC) - last).total_seconds() > FULL_CHECK_EVERY_S


def _record_full_check(db: Database) -> None:
    """Note the time of a passed full check; a store that cannot be written is checked
    again on its next open (its writes fail with their own error)."""
    try:
        with db.write() as conn:
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('integrity_checked_at', ?)",
                    (now_iso(),),
                )
    except StoreError as e:
        logger.info("%s: last integrity check not recorded (%s)", db.path, e)


def ensure_schema(db: Database, conn: sqlite3.Connection, create: bool) -> None:
    """Create the schema in a new, empty store (``create``), or check an existing store's
    version and migrate it to :data:`SCHEMA_VERSION`.

    Raises:
        StoreError: not a label store, no valid version, or a version newer than this one.
    """
    with db.write() as wconn:
        tables = {r[0] for r in wconn.execute("SELECT name FROM sqlite_master")}
        if "meta" not in tables:
            if tables or not create:
                raise StoreError(
                    f"{db.path}: not a PhenoScout label store (no meta table); "
                    "point to the project's labels.db"
                )
            create_schema(wconn, db.path)
            return
        row = wconn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{db.path}: label store schema version {version} is newer than this "
            f"PhenoScout supports ({SCHEMA_VERSION}); upgrade PhenoScout"
        )
    if version < 1:
        raise StoreError(f"{db.path}: label store has no valid schema_version ({row})")
    if version < SCHEMA_VERSION:
        from labeling.store.migrations import migrate_store

        migrate_store(db.path, conn, SCHEMA_VERSION)


def create_schema(conn: sqlite3.Connection, path: Path) -> None:
    """The tables, version, dates and pseudo-classes of a new store (inside a transaction)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (now_iso(),))
    conn.execute("INSERT INTO meta VALUES ('integrity_checked_at', ?)", (now_iso(),))
    conn.executemany(
        "INSERT INTO classes(name, colour, key, created_at, pseudo) VALUES (?, ?, ?, ?, 1)",
        [(name, colour, key, now_iso()) for name, colour, key in PSEUDO_CLASSES],
    )
    logger.info("%s: created label store (schema %d)", path, SCHEMA_VERSION)

"""The label store: ``labels.db`` (SQLite, WAL) holding classes, label history, rounds, leases.

The store is the only writer of ``labels.db``. Every write is one ``BEGIN IMMEDIATE`` ...
``COMMIT`` transaction, committed before the method returns, so two processes (the app and
``phenoscout label``, say) can write at the same time and nothing is lost. Labels are never
deleted: the current label of a cell is its latest (highest ``label_id``) row that is not undone.

Importing this module loads only the standard library (pandas is imported inside
:meth:`LabelStore.current_labels_frame`), so the CLI reaches its commit quickly.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labeling.errors import StoreError
from labeling.store.classes import (  # re-exported: callers import them from here
    BAD_SEGMENTATION,
    CURRENT_LABELS_SQL,
    PSEUDO_CLASSES,
    UNSURE,
    ClassInfo,
    ClassTable,
)
from labeling.store.db import (
    damaged,
    is_readonly,
    now_iso,
    store_failed,
    why_write_failed,
    write_failed,
)
from labeling.store.names import SKIP, did_you_mean, normalise_class_name
from labeling.store.rounds import RoundsAndLeases, label_durations

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "BAD_SEGMENTATION",
    "SKIP",
    "SOURCES",
    "UNSURE",
    "ClassInfo",
    "LabelRecord",
    "LabelStore",
    "normalise_class_name",
]

SCHEMA_VERSION = 2  # labeling.store.migrations upgrades older stores on open
SOURCES = ("batch", "review", "cli", "import", "more_like_this")
BUSY_TIMEOUT_S = 10.0
FULL_CHECK_EVERY_S = 24 * 3600.0  # the full PRAGMA integrity_check runs at most once a day

_SCHEMA = """
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


@dataclass(frozen=True)
class LabelRecord:
    """One label event (a row of the ``labels`` table)."""

    cell_id: str  # the labeled cell
    label: str  # class name (see LabelStore.history / label_events for merged classes)
    annotator: str  # who gave it
    labeled_at: str  # ISO 8601 UTC with milliseconds, e.g. "2025-01-31T12:00:00.123Z"
    round_id: int | None  # the round it answered, None outside rounds
    source: str  # one of SOURCES
    undone: bool = False  # True once undone by LabelStore.undo_last
    sub_strategy: str | None = None  # the query sub-strategy that picked the cell, if leased
    guess: str | None = None  # the model's guess when the cell was handed out, if any
    duration_ms: int | None = None  # time spent on the cell (see labeling.store.migrations, v2)


class LabelStore:
    """Reads and writes ``labels.db``; safe to share between threads of one process.

    It owns the connection and the labels and cells tables, and composes two parts that work
    through it (it is their :class:`~labeling.store.db.Database`): the class table
    (:class:`~labeling.store.classes.ClassTable`) and the rounds and leases
    (:class:`~labeling.store.rounds.RoundsAndLeases`); their methods are the store's too.

    Args:
        path: the ``labels.db`` file.
        create: create the file (and its schema) when missing; otherwise a missing file is an
            error.

    Raises:
        StoreError: the file is missing (and ``create`` is False), is not a PhenoScout label
            store, is damaged, or was written by a newer PhenoScout.
    """

    def __init__(self, path: Path | str, *, create: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._classes = ClassTable(self)
        self._rounds = RoundsAndLeases(self)
        if not self.path.exists() and not create:
            raise StoreError(
                f"{self.path}: label store not found; check the project folder or create the "
                "project first (phenoscout ingest)"
            )
        if create and not self.path.parent.is_dir():
            raise StoreError(f"{self.path}: folder {self.path.parent} does not exist; create it")
        try:
            self._db = self._connect()
            self._check_integrity()
            self._ensure_schema(create)
        except sqlite3.DatabaseError as e:
            self.close()
            if is_readonly(e):
                raise StoreError(
                    f"{self.path}: cannot open the label store for writing ({e}); "
                    f"{why_write_failed(self.path, e)} - labels committed before are safe"
                ) from e
            raise store_failed(self.path, e, "open") from e
        except StoreError:
            self.close()
            raise

    # ------------------------------------------------------------------ connection
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("%s: journal mode is %s, not WAL", self.path, mode)
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _check_integrity(self) -> None:
        """Refuse a damaged file before anything is written into it.

        ``PRAGMA quick_check`` on every open (it reads every page but skips the index
        contents); the full ``PRAGMA integrity_check`` (which also matches every index to its
        table) when the quick one fails, or when the last full check recorded in ``meta``
        (``integrity_checked_at``) is over :data:`FULL_CHECK_EVERY_S` old.

        Raises:
            StoreDamagedError: either check reports damage.
        """
        conn = self._conn
        if not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
            return  # a new, empty file: nothing to check
        quick = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
        if quick != ["ok"] or self._full_check_due(conn):
            found = [r[0] for r in conn.execute("PRAGMA integrity_check(5)")]
            if found != ["ok"]:
                text = " ".join("; ".join(str(f) for f in found).split())  # rows are multi-line
                detail = f"PRAGMA integrity_check: {text}"
                raise damaged(self.path, detail[:300])
            self._record_full_check()

    @staticmethod
    def _full_check_due(conn: sqlite3.Connection) -> bool:
        try:
            row = conn.execute(
                "SELECT value FROM meta WHERE key = 'integrity_checked_at'"
            ).fetchone()
        except sqlite3.OperationalError:  # no meta table: not a label store (said later)
            return True
        if row is None:
            return True
        try:
            last = datetime.fromisoformat(str(row[0]).replace("Z", "+00:00"))
        except ValueError:
            return True
        return (datetime.now(UTC) - last).total_seconds() > FULL_CHECK_EVERY_S

    def _record_full_check(self) -> None:
        """Note the time of a passed full check; a store that cannot be written is checked
        again on its next open (its writes fail with their own error)."""
        try:
            with self.write() as conn:
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                    conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('integrity_checked_at', ?)",
                        (now_iso(),),
                    )
        except StoreError as e:
            logger.info("%s: last integrity check not recorded (%s)", self.path, e)

    def _ensure_schema(self, create: bool) -> None:
        with self.write() as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "meta" not in tables:
                if tables or not create:
                    raise StoreError(
                        f"{self.path}: not a PhenoScout label store (no meta table); "
                        "point to the project's labels.db"
                    )
                self._create_schema(conn)
                return
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: label store schema version {version} is newer than this "
                f"PhenoScout supports ({SCHEMA_VERSION}); upgrade PhenoScout"
            )
        if version < 1:
            raise StoreError(f"{self.path}: label store has no valid schema_version ({row})")
        if version < SCHEMA_VERSION:
            from labeling.store.migrations import migrate_store

            migrate_store(self.path, self._conn, SCHEMA_VERSION)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.execute("INSERT INTO meta VALUES ('created_at', ?)", (now_iso(),))
        conn.execute("INSERT INTO meta VALUES ('integrity_checked_at', ?)", (now_iso(),))
        conn.executemany(
            "INSERT INTO classes(name, colour, key, created_at, pseudo) VALUES (?, ?, ?, ?, 1)",
            [(name, colour, key, now_iso()) for name, colour, key in PSEUDO_CLASSES],
        )
        logger.info("%s: created label store (schema %d)", self.path, SCHEMA_VERSION)

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"{self.path}: the label store is closed; open a new LabelStore")
        return self._db

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, rolled back on any error."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                if "lock" not in str(e) and "busy" not in str(e):  # read-only, full, I/O error
                    raise write_failed(self.path, e) from e
                raise StoreError(
                    f"{self.path}: busy: cannot start a write ({e}); another process has held "
                    f"the store for over {BUSY_TIMEOUT_S:.0f} s - close it or retry"
                ) from e
            except sqlite3.DatabaseError as e:  # not a database any more, say
                raise write_failed(self.path, e) from e
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.DatabaseError):  # read-only or full disk, say
                    raise write_failed(self.path, e) from e
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, for reads: SQLite's errors become StoreErrors worded
        for their cause (damaged, busy, ...)."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.DatabaseError as e:
                raise store_failed(self.path, e, "read") from e

    def read(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Rows of one query, under the store's lock."""
        with self._reading() as conn:
            return conn.execute(sql, params).fetchall()

    _read = read  # the name tests use to peek at the tables

    def close(self) -> None:
        """Close the connection; further calls raise StoreError. Safe to call twice."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ cells
    def add_cells(self, cell_ids: Iterable[str]) -> int:
        """Register cell ids (one transaction; known ids are ignored). Returns how many were new.

        Raises:
            StoreError: when an id is not a non-empty string.
        """
        ids = list(cell_ids)
        bad = [c for c in ids if not isinstance(c, str) or not c]
        if bad:
            raise StoreError(f"cell id {bad[0]!r} is not a non-empty string; cell ids are text")
        with self.write() as conn:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO cells(cell_id) VALUES (?)", ((c,) for c in ids))
            return conn.total_changes - before

    def n_cells(self) -> int:
        """Number of cells registered in the project."""
        return int(self.read("SELECT COUNT(*) FROM cells")[0][0])

    def unknown_cells(self, cell_ids: Iterable[str]) -> list[str]:
        """The ids among ``cell_ids`` that are not cells of this project, in input order."""
        with self._reading() as conn:
            return self._unknown(conn, list(cell_ids))

    has_cells = unknown_cells  # the name used in the design brief; returns the UNKNOWN ids

    @staticmethod
    def _unknown(conn: sqlite3.Connection, ids: list[str]) -> list[str]:
        rows = conn.execute(
            "SELECT j.value FROM json_each(?) j LEFT JOIN cells c ON c.cell_id = j.value "
            "WHERE c.cell_id IS NULL ORDER BY j.key",
            (json.dumps([str(c) for c in ids]),),
        )
        return [r[0] for r in rows]

    def check_cells(self, conn: sqlite3.Connection, ids: list[str]) -> None:
        """Raise StoreError naming the ids that are not in the cells table."""
        unknown = self._unknown(conn, ids)
        if unknown:
            raise StoreError(
                f"{self.path.name}: {len(unknown)} unknown cell id(s), e.g. {unknown[:5]}; "
                "nothing of this call was saved - check the ids against cells.parquet"
            )

    # ------------------------------------------------------------------ labels
    def submit(
        self,
        labels: Mapping[str, str] | Sequence[tuple[str, str]],
        annotator: str,
        source: str,
        round_id: int | None = None,
        create_classes: bool = True,
    ) -> int:
        """Record labels in ONE transaction, committed before returning.

        Every cell id is checked first; one unknown id (or unknown class with
        ``create_classes=False``) saves nothing of the call. Each (cell, class) pair adds a
        history row and closes every lease on that cell. A label of ``SKIP`` only closes the
        lease. A class name that was merged away is recorded as its merge target.

        Returns:
            The number of label rows committed. SKIP entries are not counted, and neither is a
            label identical (class, annotator, source) to the one the cell already carries.

        Raises:
            StoreError: unknown cell ids or classes, bad class names, a bad ``source``, an empty
                ``annotator`` or an unknown ``round_id``.
        """
        pairs = list(labels.items()) if isinstance(labels, Mapping) else list(labels)
        if not pairs:
            return 0
        self._check_submit_args(annotator, source)
        cell_ids = [str(c) for c, _ in pairs]
        named = [(str(c), normalise_class_name(lab)) for c, lab in pairs if lab != SKIP]
        now = now_iso()
        with self.write() as conn:
            self.check_cells(conn, cell_ids)
            self._rounds.check_round(conn, round_id)
            ids = self._class_ids(conn, {lab for _, lab in named}, create_classes)
            leased = self._rounds.lease_info(conn, cell_ids)
            current = self._current_rows(conn, [c for c, _ in named])
            # the same label again from the same person and place (a double click) adds nothing
            named = [(c, v) for c, v in named if current.get(c) != (ids[v], annotator, source)]
            spent = label_durations(conn, annotator, [c for c, _ in named], now)
            conn.executemany(
                "INSERT INTO labels(cell_id, class_id, annotator, labeled_at, round_id, source, "
                "sub_strategy, guess, confidence, duration_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (c, ids[lab], annotator, now,
                     round_id if round_id is not None else leased.get(c, (None,) * 4)[0],
                     source, *leased.get(c, (None,) * 4)[1:], spent.get(c))
                    for c, lab in named
                ],
            )  # fmt: skip
            conn.execute(
                "DELETE FROM leases WHERE cell_id IN (SELECT value FROM json_each(?))",
                (json.dumps(cell_ids),),
            )
        logger.debug("%s: committed %d labels by %s", self.path.name, len(named), annotator)
        return len(named)

    @staticmethod
    def _current_rows(conn: sqlite3.Connection, cell_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """cell_id -> (effective class_id, annotator, source) of each cell's label in force."""
        rows = conn.execute(
            "SELECT l.cell_id, COALESCE(c.merged_into, c.class_id), l.annotator, l.source "
            "FROM labels l JOIN classes c ON c.class_id = l.class_id WHERE l.label_id IN "
            "(SELECT MAX(label_id) FROM labels WHERE undone = 0 AND cell_id IN "
            "(SELECT value FROM json_each(?)) GROUP BY cell_id)",
            (json.dumps(cell_ids),),
        ).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    @staticmethod
    def _check_submit_args(annotator: str, source: str) -> None:
        if not isinstance(annotator, str) or not annotator.strip():
            raise StoreError(f"annotator {annotator!r} is empty; give a name or initials")
        if source not in SOURCES:
            raise StoreError(f"label source {source!r} is unknown; use one of {SOURCES}")

    def _class_ids(self, conn: sqlite3.Connection, names: set[str], create: bool) -> dict[str, int]:
        by_name = self._classes.classes_by_name(conn)
        ids: dict[str, int] = {}
        for name in sorted(names):
            row = by_name.get(name)
            if row is not None:
                ids[name] = int(row[2] if row[2] is not None else row[1])
            elif create:
                ids[name] = self._classes.insert_class(conn, name, None, None)
                by_name = self._classes.classes_by_name(conn)
            else:
                active = [n for n, r in by_name.items() if r[2] is None]
                raise StoreError(
                    f"class {name!r} does not exist{did_you_mean(name, active)}; add it first "
                    "- nothing of this call was saved"
                )
        return ids

    def undo_last(self, annotator: str) -> LabelRecord | None:
        """Undo ``annotator``'s latest label still in force; the cell's previous label (if any)
        becomes current again. Returns the undone record (``undone=True``), or None."""
        with self.write() as conn:
            row = conn.execute(
                "SELECT l.label_id, l.cell_id, c.name, l.annotator, l.labeled_at, l.round_id, "
                "l.source FROM labels l JOIN classes c ON c.class_id = l.class_id "
                "WHERE l.annotator = ? AND l.undone = 0 ORDER BY l.label_id DESC LIMIT 1",
                (annotator,),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE labels SET undone = 1 WHERE label_id = ?", (row[0],))
        logger.info("%s: undid label of %s by %s", self.path.name, row[1], annotator)
        return LabelRecord(row[1], row[2], row[3], row[4], row[5], row[6], undone=True)

    def current_labels(self, include_pseudo: bool = False) -> dict[str, str]:
        """cell_id -> class name of every labeled cell (latest non-undone row wins)."""
        rows = self.read(
            f"SELECT cell_id, label FROM ({CURRENT_LABELS_SQL}) WHERE pseudo = 0 OR ?",
            (int(include_pseudo),),
        )
        return dict(rows)

    def current_labels_frame(self, include_pseudo: bool = False) -> pd.DataFrame:
        """Current labels as a frame: cell_id, label, annotator, labeled_at, round_id (Int64),
        source, pseudo, duration_ms (Int64: time taken, missing where not measured); one row per
        labeled cell, in labeling order."""
        import pandas as pd

        rows = self.read(
            "SELECT cell_id, label, annotator, labeled_at, round_id, source, pseudo, duration_ms "
            f"FROM ({CURRENT_LABELS_SQL}) WHERE pseudo = 0 OR ?",
            (int(include_pseudo),),
        )
        cols = ["cell_id", "label", "annotator", "labeled_at", "round_id", "source", "pseudo",
                "duration_ms"]  # fmt: skip
        frame = pd.DataFrame.from_records(rows, columns=cols)
        frame["round_id"] = frame["round_id"].astype("Int64")
        frame["duration_ms"] = frame["duration_ms"].astype("Int64")
        frame["pseudo"] = frame["pseudo"].astype(bool)
        return frame

    def history(self, cell_id: str) -> list[LabelRecord]:
        """Every label event of a cell, oldest first, undone ones flagged. ``label`` is the class
        the row was given as (a merged-away class keeps its old name here).

        Raises:
            StoreError: when ``cell_id`` is not a cell of the project.
        """
        with self._reading() as conn:
            self.check_cells(conn, [cell_id])
            rows = conn.execute(
                "SELECT l.cell_id, c.name, l.annotator, l.labeled_at, l.round_id, l.source, "
                "l.undone FROM labels l JOIN classes c ON c.class_id = l.class_id "
                "WHERE l.cell_id = ? ORDER BY l.label_id",
                (cell_id,),
            ).fetchall()
        return [LabelRecord(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    def label_counts(self, include_pseudo: bool = False) -> dict[str, int]:
        """Class name -> number of cells currently carrying it, for every listed class (0s too)."""
        return {c.name: c.n_labeled for c in self.classes(include_pseudo=include_pseudo)}

    def n_labels_given(self) -> int:
        """Label events in force (not undone), pseudo-labels included: the "labels spent" axis."""
        return int(self.read("SELECT COUNT(*) FROM labels WHERE undone = 0")[0][0])

    def label_events(self) -> list[LabelRecord]:
        """All non-undone label events in the order given, with class names resolved through
        merges (for discovery curves); pseudo-labels included."""
        rows = self.read(
            "SELECT l.cell_id, eff.name, l.annotator, l.labeled_at, l.round_id, l.source, 0, "
            "l.sub_strategy, l.guess, l.duration_ms "
            "FROM labels l JOIN classes c ON c.class_id = l.class_id "
            "JOIN classes eff ON eff.class_id = COALESCE(c.merged_into, c.class_id) "
            "WHERE l.undone = 0 ORDER BY l.label_id"
        )
        return [
            LabelRecord(r[0], r[1], r[2], r[3], r[4], r[5], False, r[7], r[8], r[9]) for r in rows
        ]

    # ------------------------------------------------------------------ classes (ClassTable)
    def add_class(self, name: str, colour: str | None = None, key: str | None = None) -> ClassInfo:
        """See :meth:`ClassTable.add_class`."""
        return self._classes.add_class(name, colour, key)

    def classes(self, include_pseudo: bool = True) -> list[ClassInfo]:
        """See :meth:`ClassTable.classes`."""
        return self._classes.classes(include_pseudo)

    def rename_class(self, old: str, new: str) -> None:
        """See :meth:`ClassTable.rename_class`."""
        self._classes.rename_class(old, new)

    def merge_classes(self, source: str, target: str) -> int:
        """See :meth:`ClassTable.merge_classes`."""
        return self._classes.merge_classes(source, target)

    def set_class_key(self, name: str, key: str | None) -> None:
        """See :meth:`ClassTable.set_class_key`."""
        self._classes.set_class_key(name, key)

    def set_class_colour(self, name: str, colour: str) -> None:
        """See :meth:`ClassTable.set_class_colour`."""
        self._classes.set_class_colour(name, colour)

    # ------------------------------------------------------------------ rounds and leases
    def start_round(
        self,
        annotator: str,
        strategy: str,
        model_version: str | None,
        n_cells: int,
        state: dict[str, Any] | None = None,
    ) -> int:
        """See :meth:`RoundsAndLeases.start_round`."""
        return self._rounds.start_round(annotator, strategy, model_version, n_cells, state)

    def finish_round(self, round_id: int, timings: dict[str, Any]) -> None:
        """See :meth:`RoundsAndLeases.finish_round`."""
        self._rounds.finish_round(round_id, timings)

    def last_state(self, strategy: str) -> dict[str, Any]:
        """See :meth:`RoundsAndLeases.last_state`."""
        return self._rounds.last_state(strategy)

    def seconds_per_label(self) -> dict[str, tuple[int, float]]:
        """See :meth:`RoundsAndLeases.seconds_per_label`."""
        return self._rounds.seconds_per_label()

    def rounds(self) -> list[dict[str, Any]]:
        """See :meth:`RoundsAndLeases.rounds`."""
        return self._rounds.rounds()

    def lease(
        self, items: Sequence[Mapping[str, Any]], annotator: str, round_id: int, ttl_s: float = 3600
    ) -> int:
        """See :meth:`RoundsAndLeases.lease`."""
        return self._rounds.lease(items, annotator, round_id, ttl_s)

    def leased_ids(self, exclude_annotator: str | None = None) -> set[str]:
        """See :meth:`RoundsAndLeases.leased_ids`."""
        return self._rounds.leased_ids(exclude_annotator)

    def open_lease(self, annotator: str) -> list[dict[str, Any]]:
        """See :meth:`RoundsAndLeases.open_lease`."""
        return self._rounds.open_lease(annotator)

    def release(self, annotator: str) -> int:
        """See :meth:`RoundsAndLeases.release`."""
        return self._rounds.release(annotator)

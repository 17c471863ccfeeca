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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labeling.errors import StoreError
from labeling.store import history
from labeling.store.classes import (  # re-exported: callers import them from here
    BAD_SEGMENTATION,
    UNSURE,
    ClassInfo,
    ClassTable,
)
from labeling.store.db import (
    Delegate,
    is_readonly,
    now_iso,
    store_failed,
    why_write_failed,
    write_failed,
)
from labeling.store.history import LabelRecord
from labeling.store.names import SKIP, did_you_mean, normalise_class_name
from labeling.store.rounds import RoundsAndLeases, label_durations
from labeling.store.schema import (
    check_integrity,
    connect,
    ensure_schema,
    full_check_due,
)

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

SOURCES = ("batch", "review", "cli", "import", "more_like_this")
BUSY_TIMEOUT_S = 10.0


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
            check_integrity(self, self._conn, self._full_check_due)
            ensure_schema(self, self._conn, create)
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
        return connect(self.path, BUSY_TIMEOUT_S)

    _full_check_due = staticmethod(full_check_due)  # tests count its calls

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
        """See :func:`labeling.store.history.undo_last`."""
        return history.undo_last(self, annotator)

    def current_labels(self, include_pseudo: bool = False) -> dict[str, str]:
        """See :func:`labeling.store.history.current_labels`."""
        return history.current_labels(self, include_pseudo)

    def current_labels_frame(self, include_pseudo: bool = False) -> pd.DataFrame:
        """See :func:`labeling.store.history.current_labels_frame`."""
        return history.current_labels_frame(self, include_pseudo)

    def history(self, cell_id: str) -> list[LabelRecord]:
        """Every label event of a cell, oldest first, undone ones flagged. ``label`` is the class
        the row was given as (a merged-away class keeps its old name here).

        Raises:
            StoreError: when ``cell_id`` is not a cell of the project.
        """
        with self._reading() as conn:
            self.check_cells(conn, [cell_id])
            return history.history(conn, cell_id)

    def label_counts(self, include_pseudo: bool = False) -> dict[str, int]:
        """Class name -> number of cells currently carrying it, for every listed class (0s too)."""
        return {c.name: c.n_labeled for c in self.classes(include_pseudo=include_pseudo)}

    def n_labels_given(self) -> int:
        """Label events in force (not undone), pseudo-labels included: the "labels spent" axis."""
        return int(self.read("SELECT COUNT(*) FROM labels WHERE undone = 0")[0][0])

    def label_events(self) -> list[LabelRecord]:
        """See :func:`labeling.store.history.label_events`."""
        return history.label_events(self)

    # ------------------------------------------------------------------ classes (ClassTable)
    add_class = Delegate("_classes", ClassTable.add_class)
    classes = Delegate("_classes", ClassTable.classes)
    rename_class = Delegate("_classes", ClassTable.rename_class)
    merge_classes = Delegate("_classes", ClassTable.merge_classes)
    merge_targets = Delegate("_classes", ClassTable.merge_targets)
    set_class_key = Delegate("_classes", ClassTable.set_class_key)
    set_class_colour = Delegate("_classes", ClassTable.set_class_colour)

    # ------------------------------------------------------------------ rounds and leases
    start_round = Delegate("_rounds", RoundsAndLeases.start_round)
    finish_round = Delegate("_rounds", RoundsAndLeases.finish_round)
    last_state = Delegate("_rounds", RoundsAndLeases.last_state)
    seconds_per_label = Delegate("_rounds", RoundsAndLeases.seconds_per_label)
    rounds = Delegate("_rounds", RoundsAndLeases.rounds)
    labeled_in_round = Delegate("_rounds", RoundsAndLeases.labeled_in_round)
    lease = Delegate("_rounds", RoundsAndLeases.lease)
    leased_ids = Delegate("_rounds", RoundsAndLeases.leased_ids)
    open_lease = Delegate("_rounds", RoundsAndLeases.open_lease)
    release = Delegate("_rounds", RoundsAndLeases.release)

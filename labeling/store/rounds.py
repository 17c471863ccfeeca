"""Rounds (one per batch handed out, with the strategy's state) and leases (which annotator
holds which cells until when): a part of :class:`labeling.store.LabelStore`, working through
its :class:`~labeling.store.db.Database`."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from labeling.errors import StoreError
from labeling.store.db import Database, now_iso

__all__ = ["RoundsAndLeases", "label_durations"]

_LEASE_COLS = "cell_id, annotator, round_id, sub_strategy, guess, confidence, expires_at"
_ROUND_COLS = (
    "round_id, started_at, finished_at, annotator, strategy, model_version, n_cells, timings, state"
)


def label_durations(
    conn: sqlite3.Connection, annotator: str, cell_ids: list[str], labeled_at: str
) -> dict[str, int]:
    """Milliseconds ``annotator`` spent on each of ``cell_ids`` that is leased to them.

    Measured from the later of the batch being ready (its round finished) and their previous
    label in the same round, to ``labeled_at``; cells of one round labeled in one call share that
    time equally. Cells not leased to ``annotator`` (review, CLI, another's batch) get none.

    Returns:
        cell_id -> duration_ms (>= 0).
    """
    rows = conn.execute(
        "SELECT cell_id, round_id FROM leases WHERE annotator = ? AND round_id IS NOT NULL "
        "AND cell_id IN (SELECT value FROM json_each(?))",
        (annotator, json.dumps(cell_ids)),
    ).fetchall()
    by_round: dict[int, list[str]] = {}
    for cell_id, round_id in rows:
        by_round.setdefault(int(round_id), []).append(cell_id)
    now = datetime.fromisoformat(labeled_at)
    out: dict[str, int] = {}
    for round_id, ids in by_round.items():
        start = conn.execute(
            "SELECT MAX(t) FROM (SELECT COALESCE(finished_at, started_at) AS t FROM rounds "
            "WHERE round_id = :r UNION ALL SELECT MAX(labeled_at) FROM labels "
            "WHERE round_id = :r AND annotator = :a)",
            {"r": round_id, "a": annotator},
        ).fetchone()[0]
        if start:
            seconds = (now - datetime.fromisoformat(start)).total_seconds()
            out.update(dict.fromkeys(ids, max(0, round(seconds * 1000 / len(ids)))))
    return out


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, without importing numpy
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _median(sorted_values: list[int]) -> float:
    n = len(sorted_values)
    return (sorted_values[(n - 1) // 2] + sorted_values[n // 2]) / 2


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _dumps(obj: dict[str, Any] | None) -> str | None:
    return None if obj is None else json.dumps(obj, default=_json_default)


def _loads(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)


class RoundsAndLeases:
    """The ``rounds`` and ``leases`` tables of a label store.

    Args:
        db: the store (``LabelStore``) whose connection and cells this part uses.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def path(self) -> Path:
        return self.db.path

    def check_round(self, conn: sqlite3.Connection, round_id: int | None) -> None:
        """Raise StoreError when ``round_id`` (None: no round) does not exist."""
        if round_id is None:
            return
        if not conn.execute("SELECT 1 FROM rounds WHERE round_id = ?", (round_id,)).fetchone():
            raise StoreError(
                f"{self.path.name}: round {round_id} does not exist; call start_round first"
            )

    # ------------------------------------------------------------------ rounds
    def start_round(
        self,
        annotator: str,
        strategy: str,
        model_version: str | None,
        n_cells: int,
        state: dict[str, Any] | None = None,
    ) -> int:
        """Record the start of a query round (``state``: strategy JSON state); return its id.

        Raises:
            StoreError: an empty ``annotator`` (the labels would have no one to go to).
        """
        if not isinstance(annotator, str) or not annotator.strip():
            raise StoreError(f"annotator {annotator!r} is empty; give a name or initials")
        state_json = _dumps(state)
        with self.db.write() as conn:
            cur = conn.execute(
                "INSERT INTO rounds(started_at, annotator, strategy, model_version, n_cells, state)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (now_iso(), annotator, strategy, model_version, int(n_cells), state_json),
            )
            return int(cur.lastrowid or 0)

    def finish_round(self, round_id: int, timings: dict[str, Any]) -> None:
        """Mark a round finished and store its timings (seconds per step, say) as JSON."""
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE rounds SET finished_at = ?, timings = ? WHERE round_id = ?",
                (now_iso(), _dumps(timings), round_id),
            )
            if cur.rowcount == 0:
                raise StoreError(f"{self.path.name}: round {round_id} does not exist")

    def last_state(self, strategy: str) -> dict[str, Any]:
        """The JSON state of the latest round of ``strategy`` that saved one ({} if none)."""
        rows = self.db.read(
            "SELECT state FROM rounds WHERE strategy = ? AND state IS NOT NULL "
            "ORDER BY round_id DESC LIMIT 1",
            (strategy,),
        )
        return (_loads(rows[0][0]) or {}) if rows else {}

    def seconds_per_label(self) -> dict[str, tuple[int, float]]:
        """Labeling cost per class: class name -> (labels timed, median seconds spent), over
        labels in force that were given on a leased cell (``duration_ms`` recorded), classes
        resolved through merges, pseudo-classes included. Classes without such labels are left
        out."""
        rows = self.db.read(
            "SELECT eff.name, l.duration_ms FROM labels l JOIN classes c ON c.class_id = "
            "l.class_id JOIN classes eff ON eff.class_id = COALESCE(c.merged_into, c.class_id) "
            "WHERE l.undone = 0 AND l.duration_ms IS NOT NULL ORDER BY eff.name, l.duration_ms"
        )
        by_class: dict[str, list[int]] = {}
        for name, ms in rows:
            by_class.setdefault(name, []).append(int(ms))
        return {name: (len(ms), _median(ms) / 1000) for name, ms in by_class.items()}

    def rounds(self) -> list[dict[str, Any]]:
        """Every round as a dict (timings and state parsed), oldest first."""
        cols = _ROUND_COLS.split(", ")
        rows = self.db.read(f"SELECT {_ROUND_COLS} FROM rounds ORDER BY round_id")
        out = [dict(zip(cols, r, strict=True)) for r in rows]
        for d in out:
            d["timings"], d["state"] = _loads(d["timings"]), _loads(d["state"])
        return out

    def labeled_in_round(self, round_id: int, annotator: str) -> bool:
        """Whether ``annotator`` gave a label (not undone) in round ``round_id`` (an index
        lookup, not a read of every label)."""
        rows = self.db.read(
            "SELECT 1 FROM labels WHERE round_id = ? AND annotator = ? AND undone = 0 LIMIT 1",
            (round_id, annotator),
        )
        return bool(rows)

    # ------------------------------------------------------------------ leases
    @staticmethod
    def lease_info(conn: sqlite3.Connection, cell_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """cell_id -> (round_id, sub_strategy, guess, confidence) of the leases on these cells,
        so that a label remembers which strategy picked its cell and what the model guessed."""
        rows = conn.execute(
            "SELECT cell_id, round_id, sub_strategy, guess, confidence FROM leases "
            "WHERE cell_id IN (SELECT value FROM json_each(?))",
            (json.dumps(cell_ids),),
        ).fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}

    def lease(
        self, items: Sequence[Mapping[str, Any]], annotator: str, round_id: int, ttl_s: float = 3600
    ) -> int:
        """Lease cells to ``annotator`` for ``ttl_s`` seconds (one transaction).

        Args:
            items: dicts with ``cell_id`` and optionally ``sub_strategy``, ``guess`` (class
                name) and ``confidence``, in the order the batch is shown.
            annotator: who gets the batch.
            round_id: the round the batch belongs to.
            ttl_s: lease lifetime; 0 gives a lease that has already expired.

        Returns:
            The number leased: cells held by another annotator's unexpired lease, and cells
            that carry a label (given, say, by another labeler since the batch was chosen), are
            left out (the annotator's own earlier leases of the same cells are renewed; leases
            of other cells stay open, so call :meth:`release` first to start a fresh batch).
        """
        cell_ids = [str(it["cell_id"]) for it in items]
        now = time.time()
        with self.db.write() as conn:
            self.db.check_cells(conn, cell_ids)
            self.check_round(conn, round_id)
            conn.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))
            sql = (
                "SELECT cell_id FROM leases WHERE annotator != ? UNION SELECT cell_id FROM labels "
                "WHERE undone = 0 AND cell_id IN (SELECT value FROM json_each(?))"
            )
            taken = {r[0] for r in conn.execute(sql, (annotator, json.dumps(cell_ids)))}
            rows = [
                (cid, annotator, round_id, it.get("sub_strategy"), it.get("guess"),
                 _float_or_none(it.get("confidence")), now + ttl_s)
                for cid, it in zip(cell_ids, items, strict=True) if cid not in taken
            ]  # fmt: skip
            sql = f"INSERT OR REPLACE INTO leases({_LEASE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            conn.executemany(sql, rows)
        return len(rows)

    def leased_ids(self, exclude_annotator: str | None = None) -> set[str]:
        """Ids of cells under an unexpired lease (of other annotators when one is excluded)."""
        rows = self.db.read(
            "SELECT cell_id FROM leases WHERE expires_at > ? AND annotator IS NOT ?",
            (time.time(), exclude_annotator),
        )
        return {r[0] for r in rows}

    def open_lease(self, annotator: str) -> list[dict[str, Any]]:
        """``annotator``'s unexpired leases not yet labeled or skipped, in lease order (dicts
        with cell_id, annotator, round_id, sub_strategy, guess, confidence, expires_at)."""
        rows = self.db.read(
            f"SELECT {_LEASE_COLS} FROM leases WHERE annotator = ? AND expires_at > ? "
            "ORDER BY rowid",
            (annotator, time.time()),
        )
        cols = _LEASE_COLS.split(", ")
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def release(self, annotator: str) -> int:
        """Drop every lease of ``annotator``. Returns how many were dropped."""
        with self.db.write() as conn:
            return conn.execute("DELETE FROM leases WHERE annotator = ?", (annotator,)).rowcount

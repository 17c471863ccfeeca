"""Label history: the :class:`LabelRecord` of one label event, undo, and the queries over the
``labels`` table (current labels, a cell's history, every event); a part of
:class:`labeling.store.LabelStore`, working through its :class:`~labeling.store.db.Database`.

pandas is imported inside :func:`current_labels_frame` only.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from labeling.store.classes import CURRENT_LABELS_SQL
from labeling.store.db import Database

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("labeling.store.labels")  # the store's one logger

__all__ = [
    "LabelRecord",
    "current_labels",
    "current_labels_frame",
    "history",
    "label_events",
    "undo_last",
]


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


def undo_last(db: Database, annotator: str) -> LabelRecord | None:
    """Undo ``annotator``'s latest label still in force; the cell's previous label (if any)
    becomes current again. Returns the undone record (``undone=True``), or None."""
    with db.write() as conn:
        row = conn.execute(
            "SELECT l.label_id, l.cell_id, c.name, l.annotator, l.labeled_at, l.round_id, "
            "l.source FROM labels l JOIN classes c ON c.class_id = l.class_id "
            "WHERE l.annotator = ? AND l.undone = 0 ORDER BY l.label_id DESC LIMIT 1",
            (annotator,),
        ).fetchone()
        if row is None:
            return None
        conn.execute("UPDATE labels SET undone = 1 WHERE label_id = ?", (row[0],))
    logger.info("%s: undid label of %s by %s", db.path.name, row[1], annotator)
    return LabelRecord(row[1], row[2], row[3], row[4], row[5], row[6], undone=True)


def current_labels(db: Database, include_pseudo: bool = False) -> dict[str, str]:
    """cell_id -> class name of every labeled cell (latest non-undone row wins)."""
    rows = db.read(
        f"SELECT cell_id, label FROM ({CURRENT_LABELS_SQL}) WHERE pseudo = 0 OR ?",
        (int(include_pseudo),),
    )
    return dict(rows)


def current_labels_frame(db: Database, include_pseudo: bool = False) -> pd.DataFrame:
    """Current labels as a frame: cell_id, label, annotator, labeled_at, round_id (Int64),
    source, pseudo, duration_ms (Int64: time taken, missing where not measured); one row per
    labeled cell, in labeling order."""
    import pandas as pd

    rows = db.read(
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


def history(conn: sqlite3.Connection, cell_id: str) -> list[LabelRecord]:
    """Every label event of a (known) cell, oldest first, undone ones flagged. ``label`` is the
    class the row was given as (a merged-away class keeps its old name here)."""
    rows = conn.execute(
        "SELECT l.cell_id, c.name, l.annotator, l.labeled_at, l.round_id, l.source, "
        "l.undone FROM labels l JOIN classes c ON c.class_id = l.class_id "
        "WHERE l.cell_id = ? ORDER BY l.label_id",
        (cell_id,),
    ).fetchall()
    return [LabelRecord(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]


def label_events(db: Database) -> list[LabelRecord]:
    """All non-undone label events in the order given, with class names resolved through
    merges (for discovery curves); pseudo-labels included."""
    rows = db.read(
        "SELECT l.cell_id, eff.name, l.annotator, l.labeled_at, l.round_id, l.source, 0, "
        "l.sub_strategy, l.guess, l.duration_ms "
        "FROM labels l JOIN classes c ON c.class_id = l.class_id "
        "JOIN classes eff ON eff.class_id = COALESCE(c.merged_into, c.class_id) "
        "WHERE l.undone = 0 ORDER BY l.label_id"
    )
    return [LabelRecord(r[0], r[1], r[2], r[3], r[4], r[5], False, r[7], r[8], r[9]) for r in rows]

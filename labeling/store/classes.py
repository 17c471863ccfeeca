"""The class table of the label store (add, list, rename, merge, keys, colours): a part of
:class:`labeling.store.LabelStore`, working through its :class:`~labeling.store.db.Database`."""

from __future__ import annotations

import itertools
import logging
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeling.errors import StoreError
from labeling.store.db import Database, now_iso
from labeling.store.names import did_you_mean, normalise_class_name

logger = logging.getLogger("labeling.store.labels")

__all__ = [
    "BAD_SEGMENTATION",
    "CURRENT_LABELS_SQL",
    "PSEUDO_CLASSES",
    "UNSURE",
    "ClassInfo",
    "ClassTable",
]

UNSURE = "unsure"  # pseudo-class: a label a user can give, never a training class
BAD_SEGMENTATION = "bad segmentation"  # pseudo-class, as above
#: Default keys in the order classes get them: the ten digits, then letters that no other key of
#: the app uses (u, b: the pseudo-classes; s skip, z undo, n next batch; c and r: the browser's
#: own Streamlit keys), so a screen of 13-16 classes and more labels by key too.
_KEYS = (*"1234567890", *"adefghijklmopqtvwxy")
_PALETTE = tuple(
    "#1f77b4 #ff7f0e #2ca02c #d62728 #9467bd #8c564b #e377c2 #bcbd22 #17becf #393b79 "
    "#aec7e8 #ffbb78 #98df8a #ff9896 #c5b0d5 #c49c94 #f7b6d2 #dbdb8d #9edae5 #6b6ecf".split()
)


def extra_colour(n: int) -> str:
    """The ``n``-th colour after the palette's 20: hues a golden angle apart, darker than the
    palette's, so a screen of 21+ classes gets no repeated ring colour."""
    import colorsys

    r, g, b = colorsys.hls_to_rgb((0.07 + n * 0.381966) % 1.0, 0.32, 0.75)
    return "#{:02x}{:02x}{:02x}".format(*(round(255 * v) for v in (r, g, b)))


PSEUDO_CLASSES = ((UNSURE, "#b0b0b0", "u"), (BAD_SEGMENTATION, "#5a5a5a", "b"))
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")

# Latest non-undone row per cell, with the class resolved through merges (``eff``).
CURRENT_LABELS_SQL = """
SELECT l.cell_id, eff.name AS label, l.annotator, l.labeled_at, l.round_id, l.source,
       eff.pseudo AS pseudo, eff.class_id AS class_id, l.duration_ms AS duration_ms
FROM labels l JOIN classes c ON c.class_id = l.class_id
JOIN classes eff ON eff.class_id = COALESCE(c.merged_into, c.class_id)
WHERE l.label_id IN (SELECT MAX(label_id) FROM labels WHERE undone = 0 GROUP BY cell_id)
"""


@dataclass(frozen=True)
class ClassInfo:
    """A class as listed by :meth:`LabelStore.classes`."""

    name: str  # free text, 1-200 characters
    colour: str | None  # "#rrggbb"
    key: str | None  # one-character keyboard shortcut, or None
    created_at: str  # ISO 8601 UTC
    pseudo: bool  # True for "unsure" and "bad segmentation": never a training class
    n_labeled: int  # cells whose current label is this class


class ClassTable:
    """The ``classes`` table of a label store.

    Args:
        db: the store (``LabelStore``) whose connection this part uses.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def path(self) -> Path:
        return self.db.path

    # ------------------------------------------------------------------ classes
    @staticmethod
    def classes_by_name(conn: sqlite3.Connection) -> dict[str, tuple[Any, ...]]:
        """name -> (name, class_id, merged_into, pseudo, key, colour) of every class row."""
        rows = conn.execute(
            "SELECT name, class_id, merged_into, pseudo, key, colour FROM classes"
        ).fetchall()
        return {r[0]: r for r in rows}

    def active_class_id(self, conn: sqlite3.Connection, name: str) -> tuple[int, bool]:
        """(class_id, pseudo) of an existing, unmerged class, else StoreError."""
        clean = normalise_class_name(name)
        by_name = self.classes_by_name(conn)
        row = by_name.get(clean)
        if row is None or row[2] is not None:
            active = [n for n, r in by_name.items() if r[2] is None]
            why = "was merged into another class" if row is not None else "does not exist"
            raise StoreError(f"class {clean!r} {why}{did_you_mean(clean, active)}")
        return int(row[1]), bool(row[3])

    def insert_class(
        self, conn: sqlite3.Connection, name: str, colour: str | None, key: str | None
    ) -> int:
        by_name = self.classes_by_name(conn)
        if name in by_name:
            merged = by_name[name][2] is not None
            raise StoreError(
                f"class {name!r} "
                + ("was merged into another class" if merged else "exists")
                + "; pick another name"
            )
        self._check_case_clash(by_name, name, exclude=None)
        active = [r for r in by_name.values() if r[2] is None]
        used_keys = {r[4] for r in active}
        if key is None:
            key = next((k for k in _KEYS if k not in used_keys), None)
        else:
            self._check_key(conn, key, exclude=None)
        if colour is None:
            used = {r[5] for r in active}
            n_real = sum(1 for r in by_name.values() if not r[3])
            extra = (extra_colour(n_real + i) for i in itertools.count())
            colour = next(c for c in itertools.chain(_PALETTE, extra) if c not in used)
        colour = self._check_colour(colour)
        cur = conn.execute(
            "INSERT INTO classes(name, colour, key, created_at, pseudo) VALUES (?, ?, ?, ?, 0)",
            (name, colour, key, now_iso()),
        )
        logger.info("%s: new class %r (key %s, colour %s)", self.path.name, name, key, colour)
        return int(cur.lastrowid or 0)

    @staticmethod
    def _check_case_clash(by_name: Mapping[str, Any], name: str, exclude: str | None) -> None:
        for other, row in by_name.items():
            if other != exclude and row[2] is None and other.casefold() == name.casefold():
                raise StoreError(
                    f"class {name!r} differs from existing class {other!r} only by case; "
                    f"use {other!r} or pick another name"
                )

    @staticmethod
    def _check_colour(colour: str) -> str:
        if not isinstance(colour, str) or not _HEX.match(colour):
            raise StoreError(f"colour {colour!r} is not of the form #rrggbb, e.g. '#1f77b4'")
        return colour.lower()

    def _check_key(self, conn: sqlite3.Connection, key: str, exclude: int | None) -> None:
        if not isinstance(key, str) or len(key) != 1 or not key.isprintable() or key.isspace():
            raise StoreError(f"key {key!r} is not a single printable character, e.g. '1' or 'm'")
        row = conn.execute(
            "SELECT name FROM classes WHERE key = ? AND merged_into IS NULL AND class_id IS NOT ?",
            (key, exclude),
        ).fetchone()
        if row:
            raise StoreError(f"key {key!r} is already used by class {row[0]!r}; free it first")

    def add_class(self, name: str, colour: str | None = None, key: str | None = None) -> ClassInfo:
        """Create a class. Default colour: the next unused palette colour; default key: the next
        free one of "1".."9", "0", then the letters of ``_KEYS`` (none once all are taken).

        Raises:
            StoreError: for a bad or existing name (also one differing only by case), a bad
                colour, or a key that is malformed or already used.
        """
        clean = normalise_class_name(name)
        with self.db.write() as conn:
            self.insert_class(conn, clean, colour, key)
        return next(c for c in self.classes() if c.name == clean)

    def classes(self, include_pseudo: bool = True) -> list[ClassInfo]:
        """Classes in creation order (pseudo-classes last); merged-away classes are not listed."""
        rows = self.db.read(
            "SELECT k.name, k.colour, k.key, k.created_at, k.pseudo, COUNT(cur.cell_id) "
            f"FROM classes k LEFT JOIN ({CURRENT_LABELS_SQL}) cur ON cur.class_id = k.class_id "
            "WHERE k.merged_into IS NULL AND (k.pseudo = 0 OR ?) "
            "GROUP BY k.class_id ORDER BY k.pseudo, k.class_id",
            (int(include_pseudo),),
        )
        return [ClassInfo(r[0], r[1], r[2], r[3], bool(r[4]), int(r[5])) for r in rows]

    def rename_class(self, old: str, new: str) -> None:
        """Rename a class; its labels follow (history shows the new name).

        Raises:
            StoreError: when ``old`` is unknown or a pseudo-class, or ``new`` is bad or taken.
        """
        clean = normalise_class_name(new)
        with self.db.write() as conn:
            class_id, pseudo = self.active_class_id(conn, old)
            if pseudo:
                raise StoreError(f"pseudo-class {old!r} cannot be renamed")
            by_name = self.classes_by_name(conn)
            old_name = normalise_class_name(old)
            if clean in by_name and clean != old_name:
                raise StoreError(f"cannot rename {old!r} to {clean!r}: that name is taken")
            self._check_case_clash(by_name, clean, exclude=old_name)
            conn.execute("UPDATE classes SET name = ? WHERE class_id = ?", (clean, class_id))
        logger.info("%s: renamed class %r to %r", self.path.name, old, clean)

    def merge_targets(self) -> dict[str, str]:
        """Each merged-away class name -> the name of the class its labels now go to."""
        rows = self.db.read(
            "SELECT k.name, t.name FROM classes k JOIN classes t ON t.class_id = k.merged_into"
        )
        return {str(a): str(b) for a, b in rows}

    def merge_classes(self, source: str, target: str) -> int:
        """Merge ``source`` into ``target``: cells labeled ``source`` now count as ``target``.

        Label rows are kept as given (cell, time, annotator, original class); the class row of
        ``source`` records ``merged_into`` and ``merged_at`` and leaves the class list. Later
        labels submitted under the old name go to ``target``.

        Returns:
            The number of cells whose current label changed.

        Raises:
            StoreError: unknown classes, ``source == target``, or ``source`` a pseudo-class.
        """
        with self.db.write() as conn:
            src_id, src_pseudo = self.active_class_id(conn, source)
            dst_id, _ = self.active_class_id(conn, target)
            if src_id == dst_id:
                raise StoreError(f"cannot merge class {source!r} into itself")
            if src_pseudo:
                raise StoreError(f"pseudo-class {source!r} cannot be merged away")
            n_cells = conn.execute(
                f"SELECT COUNT(*) FROM ({CURRENT_LABELS_SQL}) WHERE class_id = ?", (src_id,)
            ).fetchone()[0]
            conn.execute(
                "UPDATE classes SET merged_into = ?, merged_at = ?, key = NULL "
                "WHERE class_id = ? OR merged_into = ?",
                (dst_id, now_iso(), src_id, src_id),
            )
        logger.info("%s: merged %r into %r (%d cells)", self.path.name, source, target, n_cells)
        return int(n_cells)

    def set_class_key(self, name: str, key: str | None) -> None:
        """Set (or with None clear) a class's one-character keyboard shortcut."""
        with self.db.write() as conn:
            class_id, _ = self.active_class_id(conn, name)
            if key is not None:
                self._check_key(conn, key, exclude=class_id)
            conn.execute("UPDATE classes SET key = ? WHERE class_id = ?", (key, class_id))

    def set_class_colour(self, name: str, colour: str) -> None:
        """Set a class's display colour ("#rrggbb")."""
        colour = self._check_colour(colour)
        with self.db.write() as conn:
            class_id, _ = self.active_class_id(conn, name)
            conn.execute("UPDATE classes SET colour = ? WHERE class_id = ?", (colour, class_id))

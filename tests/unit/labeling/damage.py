"""Ways to damage a real labels.db for tests, each a damage SQLite can meet in the field."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def corrupt_cell_index(db: Path, stale_check: bool = False) -> str:
    """Change one key inside the cells' primary-key index (``sqlite_autoindex_cells_1``), in
    place, byte for byte: every page stays well formed, so ``PRAGMA quick_check`` passes, but
    the index no longer matches its table, which only ``PRAGMA integrity_check`` finds. A
    lookup through the index then misses an existing cell.

    Args:
        db: a closed labels.db (no -wal left).
        stale_check: also date the last full check two days back, so the next open runs it.

    Returns:
        The cell id whose index entry now points nowhere.
    """
    with sqlite3.connect(db) as conn:
        if stale_check:
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('integrity_checked_at', "
                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days'))"
            )
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [r[0] for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'sqlite_autoindex_cells_1' "
            "AND pagetype = 'leaf'"
        )]  # fmt: skip
        cell = conn.execute("SELECT cell_id FROM cells ORDER BY cell_id LIMIT 1 OFFSET 5")
        cell_id = cell.fetchone()[0]
    conn.close()
    data = bytearray(db.read_bytes())
    key = cell_id.encode()
    for page in leaves or [1]:
        at = data.find(key, (page - 1) * page_size, page * page_size)
        if at >= 0:
            data[at + len(key) - 1] = ord("~")  # the key's last character, same length
            db.write_bytes(bytes(data))
            break
    else:
        raise AssertionError(f"{cell_id!r} not found in the index pages {leaves}")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA integrity_check").fetchall() != [("ok",)]
    conn.close()
    return cell_id

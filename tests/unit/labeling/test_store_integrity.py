"""labels.db damaged, full, read-only or busy: the store refuses to write into a damaged file
and words each error for its cause."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import labeling.store.labels as store_module
from labeling.errors import ProjectError, StoreDamagedError, StoreError
from labeling.store.labels import LabelStore
from tests.unit.labeling.damage import corrupt_cell_index

REPO = Path(__file__).resolve().parents[3]
CELLS = [f"plate1.A{i % 12:02d}_s{i % 4}.npz:{i}" for i in range(400)]


@pytest.fixture
def db(tmp_path) -> Path:
    """A closed labels.db with 400 cells (the cells' index spans several pages) and labels."""
    path = tmp_path / "labels.db"
    with LabelStore(path, create=True) as store:
        store.add_cells(CELLS)
        store.submit({c: "round" for c in CELLS[:20]}, "ann", "cli")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checked_at(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'integrity_checked_at'")
        value = row.fetchone()[0]
    conn.close()
    return value


def test_a_damaged_index_is_found_on_open_and_nothing_is_written(db):
    cell = corrupt_cell_index(db, stale_check=True)
    before = _sha(db)
    with pytest.raises(StoreDamagedError) as caught:
        LabelStore(db)
    message = str(caught.value)
    assert message.startswith(f"{db}: damaged (PRAGMA integrity_check: row ")
    assert "missing from index sqlite_autoindex_cells_1" in message and "\n" not in message
    assert "restore labels.db from a backup" in message and "cannot save" not in message
    assert "/" not in caught.value.brief and "damaged" in caught.value.brief
    assert _sha(db) == before, "something was written into the damaged file"
    assert cell in CELLS


def test_the_full_check_runs_once_a_day_and_is_recorded(db, monkeypatch):
    first = _checked_at(db)  # a new store counts as checked when created
    ran: list[str] = []
    real = LabelStore._full_check_due
    monkeypatch.setattr(LabelStore, "_full_check_due",
                        staticmethod(lambda c: ran.append("due?") or real(c)))  # fmt: skip
    LabelStore(db).close()
    assert _checked_at(db) == first, "a full check ran again within the day"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '2020-01-01T00:00:00.000Z' "
                     "WHERE key = 'integrity_checked_at'")  # fmt: skip
    conn.close()
    LabelStore(db).close()
    assert _checked_at(db) > "2020-01-02", "a day-old check was not redone and recorded"
    assert ran == ["due?", "due?"]


def test_a_damaged_page_fails_the_quick_check_even_right_after_a_full_one(db):
    data = bytearray(db.read_bytes())
    with sqlite3.connect(db) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'labels'")
        page = root.fetchone()[0]
    conn.close()
    data[(page - 1) * 4096 + 8 : page * 4096] = b"\xa5" * (4096 - 8)
    db.write_bytes(bytes(data))
    with pytest.raises(StoreDamagedError, match=r"labels\.db: damaged \("):
        LabelStore(db)


def test_a_store_damaged_while_open_refuses_writes_and_reads_as_damaged(db):
    store = LabelStore(db)
    data = bytearray(db.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)  # every page but the header page
    db.write_bytes(bytes(data))
    store._conn.execute("PRAGMA shrink_memory")  # its cached pages are gone: read from disk
    with pytest.raises(StoreDamagedError, match="damaged") as caught:
        store.submit({CELLS[30]: "flat"}, "ann", "cli")
    assert "cannot save" not in str(caught.value)
    for read in (store.current_labels, store.classes, lambda: store.history(CELLS[0])):
        with pytest.raises(StoreDamagedError, match=r"labels\.db: damaged \("):
            read()
    store.close()


def test_a_busy_store_says_busy(db, monkeypatch):
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.1)
    store = LabelStore(db)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match=r"labels\.db: busy: "):
            store.submit({CELLS[30]: "flat"}, "ann", "cli")
    finally:
        other.execute("ROLLBACK")
        other.close()
        store.close()


_OPEN_ON_A_FULL_DISK = textwrap.dedent("""
    import json, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    from labeling.errors import StoreError
    from labeling.store.labels import LabelStore
    try:
        LabelStore(sys.argv[1]).close()
        print(json.dumps(None))
    except StoreError as err:
        print(json.dumps(str(err)))
""")


def test_a_full_disk_at_open_is_worded_as_a_full_disk(db):
    """No -wal or -shm file can be made (the store was closed): the open needs to write."""
    out = subprocess.run([sys.executable, "-c", _OPEN_ON_A_FULL_DISK, str(db)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    message = json.loads(out.stdout.strip().splitlines()[-1])
    assert message is not None, "the open wrote nothing: the test proves nothing"
    assert message.startswith(f"{db}: cannot open the label store (")
    assert "disk full" in message and "damaged" not in message and "backup" not in message


def test_damaged_model_version_files_are_project_errors(tmp_path):
    from models.folder import load_embeddings

    version = tmp_path / "models" / "v0001"
    version.mkdir(parents=True)
    (version / "meta.json").write_text(json.dumps({"classes": [], "n_labels": 0}))
    np.save(version / "embeddings.npy", np.zeros((3, 4), np.float32))
    (version / "cell_ids.npy").write_bytes(b"\x93NUMPY garbage" * 10)
    with pytest.raises(ProjectError, match=r"cell_ids\.npy: unreadable \("):
        load_embeddings(tmp_path, 1)

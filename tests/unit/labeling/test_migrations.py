"""Schema migrations: a labels.db and a project.toml written by schema 1 are upgraded on open,
with a backup first, in one transaction; a failed upgrade leaves the original intact."""

from __future__ import annotations

import re
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from labeling.config import SCHEMA_VERSION as PROJECT_SCHEMA
from labeling.config import load_config
from labeling.errors import StoreError
from labeling.project import open_project
from labeling.store import migrations
from labeling.store.labels import LabelStore
from labeling.store.schema import SCHEMA_VERSION

# The schema-1 DDL exactly as PhenoScout 1 created it (labeling/store.py before v2).
V1_SCHEMA = """
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
    sub_strategy TEXT NULL, guess TEXT NULL, confidence REAL NULL);
CREATE INDEX labels_cell ON labels(cell_id);
CREATE TABLE leases(cell_id TEXT PRIMARY KEY REFERENCES cells(cell_id), annotator TEXT,
    round_id INTEGER, sub_strategy TEXT, guess TEXT, confidence REAL, expires_at REAL);
"""
T = "2024-05-01T10:00:0{}.000Z"
V1_ROWS = {
    "meta": [("schema_version", "1"), ("created_at", T.format(0))],
    "classes": [(1, "unsure", "#b0b0b0", "u", T.format(0), 1, None, None),
                (2, "bad segmentation", "#5a5a5a", "b", T.format(0), 1, None, None),
                (3, "mitotic", "#1f77b4", "1", T.format(0), 0, None, None),
                (4, "round", "#ff7f0e", "2", T.format(0), 0, None, None),
                (5, "roundish", "#2ca02c", "3", T.format(0), 0, 4, T.format(5))],
    "rounds": [(1, T.format(1), T.format(2), "ann", "discover", "h1", 3, "{}", '{"arms": {}}')],
    "labels": [(1, "a", 3, "ann", T.format(3), 1, "batch", 0, "margin", "round", 0.6),
               (2, "b", 5, "ann", T.format(4), 1, "batch", 0, "random", None, None),
               (3, "a", 4, "bob", T.format(5), None, "review", 0, None, None, None),
               (4, "c", 1, "bob", T.format(6), None, "cli", 1, None, None, None),
               (5, "c", 3, "ann", T.format(7), None, "cli", 0, None, None, None)],
    "leases": [("d", "ann", 1, "novelty", "mitotic", 0.4, 4.0e9)],
}  # fmt: skip
EXPECTED = {"a": "round", "b": "round", "c": "mitotic"}  # latest wins, merges resolved


def make_v1_store(path: Path) -> Path:
    """A schema-1 labels.db built by hand: 5 cells, classes (one merged), a round, 5 label rows
    (a relabel, an undone one) and an open lease."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_SCHEMA)
    conn.executemany("INSERT INTO cells VALUES (?)", [(c,) for c in "abcde"])
    for table, rows in V1_ROWS.items():
        marks = ", ".join("?" * len(rows[0]))
        conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    conn.close()
    return path


def _rows(path: Path, table: str, columns: str = "*") -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT {columns} FROM {table} ORDER BY 1").fetchall()
    finally:
        conn.close()


def _columns(path: Path, table: str) -> list[str]:
    return [r[1] for r in _rows(path, f"pragma_table_info('{table}')", "cid, name")]


def _shape(path: Path) -> dict[str, list[tuple]]:
    """Every table's columns (name, type, not null, default, pk) and every index's columns."""
    objects = _rows(path, "sqlite_master", "name, type, tbl_name")
    shape = {}
    for name, kind, _ in objects:
        what = "table_info" if kind == "table" else "index_info"
        shape[f"{kind} {name}"] = _rows(path, f"pragma_{what}('{name}')", "*")
    return shape


V1_LABEL_COLS = ("label_id, cell_id, class_id, annotator, labeled_at, round_id, source, undone, "
                 "sub_strategy, guess, confidence")  # fmt: skip


# ------------------------------------------------------------------ labels.db
def test_v1_store_is_upgraded_on_open_with_every_label_kept(tmp_path):
    db = make_v1_store(tmp_path / "labels.db")
    with LabelStore(db) as store:
        assert store.current_labels() == EXPECTED
        assert [(r.label, r.annotator, r.undone) for r in store.history("c")] == [
            ("unsure", "bob", True), ("mitotic", "ann", False)]  # fmt: skip
        assert [d["cell_id"] for d in store.open_lease("ann")] == ["d"]
        assert store.rounds()[0]["state"] == {"arms": {}}
        assert store.last_state("discover") == {"arms": {}}
    assert dict(_rows(db, "meta"))["schema_version"] == str(SCHEMA_VERSION) == "2"
    assert "duration_ms" in _columns(db, "labels")
    assert _rows(db, "labels", V1_LABEL_COLS) == V1_ROWS["labels"]  # every row, byte for byte
    assert _rows(db, "labels", "duration_ms") == [(None,)] * 5
    LabelStore(tmp_path / "fresh.db", create=True).close()
    assert _shape(db) == _shape(tmp_path / "fresh.db")  # the same tables, columns and indexes
    assert _rows(db, "pragma_integrity_check") == [("ok",)]


def test_the_backup_is_the_untouched_v1_store(tmp_path):
    db = make_v1_store(tmp_path / "labels.db")
    LabelStore(db).close()
    backup = tmp_path / "labels.db.v1.bak"
    assert backup.is_file() and not (tmp_path / "labels.db.v1.bak.tmp").exists()
    assert dict(_rows(backup, "meta"))["schema_version"] == "1"
    assert "duration_ms" not in _columns(backup, "labels")
    assert _rows(backup, "labels") == V1_ROWS["labels"]
    LabelStore(db).close()  # opening again migrates nothing and keeps the backup
    assert _rows(backup, "labels") == V1_ROWS["labels"]


def test_an_upgraded_store_takes_new_labels_with_their_time(tmp_path):
    db = make_v1_store(tmp_path / "labels.db")
    with LabelStore(db) as store:
        rid = store.start_round("ann", "discover", None, 1)
        store.lease([{"cell_id": "e"}], "ann", rid)
        store.finish_round(rid, {})
        assert store.submit({"e": "mitotic"}, "ann", "batch") == 1
        assert store.submit({"d": "round"}, "bob", "review") == 1  # d is leased to ann
        events = {e.cell_id: e for e in store.label_events()}
        assert 0 <= events["e"].duration_ms < 60_000
        assert events["d"].duration_ms is None  # not bob's batch: no time recorded
        assert store.seconds_per_label() == {"mitotic": (1, events["e"].duration_ms / 1000)}
        assert store.current_labels() == {**EXPECTED, "d": "round", "e": "mitotic"}


def test_a_failed_upgrade_leaves_the_original_intact(tmp_path, monkeypatch):
    db = make_v1_store(tmp_path / "labels.db")
    real = migrations.STORE_STEPS[1]

    def half_then_fail(conn):
        real(conn)  # the column is added inside the transaction ...
        conn.execute("UPDATE labels SET class_id = 3")  # ... and rows are changed ...
        raise sqlite3.OperationalError("simulated failure in the middle of the upgrade")

    monkeypatch.setitem(migrations.STORE_STEPS, 1, half_then_fail)
    with pytest.raises(
        StoreError,
        match=r"labels\.db: cannot upgrade the label store from "
        r"schema 1 to 2 \(simulated .*\); it is unchanged",
    ):
        LabelStore(db)
    assert dict(_rows(db, "meta"))["schema_version"] == "1"
    assert "duration_ms" not in _columns(db, "labels")
    assert _rows(db, "labels") == V1_ROWS["labels"]
    assert _rows(db, "pragma_integrity_check") == [("ok",)]
    monkeypatch.setitem(migrations.STORE_STEPS, 1, real)  # the next open succeeds
    with LabelStore(db) as store:
        assert store.current_labels() == EXPECTED


def test_a_failed_backup_stops_the_upgrade(tmp_path, monkeypatch):
    db = make_v1_store(tmp_path / "labels.db")

    def no_room(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(migrations, "_backup_store", no_room)
    with pytest.raises(StoreError, match=r"cannot upgrade .*No space left on device.*unchanged"):
        LabelStore(db)
    assert dict(_rows(db, "meta"))["schema_version"] == "1"


def test_a_newer_store_is_still_refused_and_untouched(tmp_path):
    db = make_v1_store(tmp_path / "labels.db")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))  # fmt: skip
    conn.close()
    with pytest.raises(
        StoreError,
        match=rf"schema version {SCHEMA_VERSION + 1} is newer than "
        rf"this PhenoScout supports \({SCHEMA_VERSION}\); upgr",
    ):
        LabelStore(db)
    assert "duration_ms" not in _columns(db, "labels")
    assert not (tmp_path / "labels.db.v1.bak").exists()


def test_two_openers_at_once_upgrade_once(tmp_path):
    db = make_v1_store(tmp_path / "labels.db")
    errors, barrier = [], threading.Barrier(4)

    def open_it():
        barrier.wait()
        try:
            with LabelStore(db) as store:
                assert store.current_labels() == EXPECTED
        except Exception as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [k for k, _ in _rows(db, "meta") if k.startswith("migrated")] == ["migrated_v1_at"]


# ------------------------------------------------------------------ project.toml and open_project
@pytest.fixture
def v1_project(tmp_path, small_project) -> Path:
    """small_project as PhenoScout 1 wrote it: project.toml schema 1, a schema-1 labels.db."""
    path = tmp_path / "project"
    shutil.copytree(small_project, path)
    toml = path / "project.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(re.sub(r"(?m)^schema_version = \d+$", "schema_version = 1", text), "utf-8")
    for name in ("labels.db", "labels.db-wal", "labels.db-shm"):
        (path / name).unlink(missing_ok=True)
    make_v1_store(path / "labels.db")
    return path


def test_open_project_upgrades_a_v1_project(v1_project, caplog):
    project = open_project(v1_project)
    try:
        assert project.config.schema_version == PROJECT_SCHEMA == 2
        assert project.store.current_labels() == EXPECTED
    finally:
        project.close()
    assert re.search(r"(?m)^schema_version = 2$", (v1_project / "project.toml").read_text())
    old = (v1_project / "project.toml.v1.bak").read_text()
    assert re.search(r"(?m)^schema_version = 1$", old)
    assert (v1_project / "labels.db.v1.bak").is_file()
    assert "upgraded" in caplog.text
    again = load_config(v1_project / "project.toml")  # nothing left to upgrade
    assert again == project.config


def test_a_project_toml_that_cannot_be_rewritten_is_upgraded_in_memory(v1_project, monkeypatch):
    import labeling.config as config

    def read_only(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(config, "save_config", read_only)
    cfg = load_config(v1_project / "project.toml")
    assert cfg.schema_version == 2
    assert re.search(r"(?m)^schema_version = 1$", (v1_project / "project.toml").read_text())


@pytest.mark.parametrize("value", ["0", '"one"', "-3"])
def test_a_nonsense_project_schema_version_is_a_clear_error(v1_project, value):
    from labeling.errors import ConfigError

    toml = v1_project / "project.toml"
    toml.write_text(re.sub(r"(?m)^schema_version = 1$", f"schema_version = {value}",
                           toml.read_text()))  # fmt: skip
    with pytest.raises(ConfigError, match=r"project\.toml: .*schema.version"):
        load_config(toml)


# ------------------------------------------------------------------ what v2 records
def test_duration_runs_from_the_batch_or_the_previous_label_and_is_shared(tmp_path):
    from datetime import UTC, datetime, timedelta

    with LabelStore(tmp_path / "labels.db", create=True) as store:
        store.add_cells(list("abcdef"))
        rid = store.start_round("ann", "discover", None, 5)
        store.lease([{"cell_id": c} for c in "abcde"], "ann", rid)
        ready = datetime.now(UTC) - timedelta(seconds=20)  # the batch was shown 20 s ago
        store._conn.execute("UPDATE rounds SET finished_at = ? WHERE round_id = ?",
                            (ready.isoformat(timespec="milliseconds")[:23] + "Z", rid))  # fmt: skip
        store.submit({"a": "round"}, "ann", "batch")
        store.submit({"b": "flat"}, "ann", "batch")  # right after a: a short time
        store.submit({"c": "round", "d": "round"}, "ann", "batch")  # two at once: shared
        store.submit({"e": "flat"}, "bob", "review")  # not bob's batch
        store.submit({"f": "flat"}, "ann", "cli")  # not leased
        ms = {e.cell_id: e.duration_ms for e in store.label_events()}
        seconds = store.seconds_per_label()
    assert 20_000 <= ms["a"] < 30_000
    assert 0 <= ms["b"] < 5_000 and ms["c"] == ms["d"] < 5_000
    assert ms["e"] is None and ms["f"] is None
    assert set(seconds) == {"round", "flat"} and seconds["flat"] == (1, ms["b"] / 1000)
    assert seconds["round"][0] == 3

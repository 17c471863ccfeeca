"""Tests of the SQLite label store (labeling/store.py)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from labeling.errors import StoreError
from labeling.store.labels import BAD_SEGMENTATION, SKIP, UNSURE, LabelStore

REPO = Path(__file__).resolve().parents[3]
CELLS = [f"c{i:02d}" for i in range(20)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "labels.db"


@pytest.fixture
def store(db: Path):
    with LabelStore(db, create=True) as s:
        s.add_cells(CELLS)
        yield s


# ---------------------------------------------------------------- opening and durability
def test_submit_survives_close_and_reopen(store: LabelStore, db: Path) -> None:
    assert store.submit({"c00": "mitotic", "c01": "normal"}, "ann", "batch") == 2
    store.close()
    with LabelStore(db) as again:
        assert again.current_labels() == {"c00": "mitotic", "c01": "normal"}
        assert again.n_cells() == len(CELLS)


def test_settings_wal_full_sync_foreign_keys(store: LabelStore, db: Path) -> None:
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)


def test_missing_file_without_create_is_an_error(db: Path) -> None:
    with pytest.raises(StoreError, match="labels.db: label store not found"):
        LabelStore(db)
    assert not db.exists()


def test_non_sqlite_file_names_file_and_cause(db: Path) -> None:
    db.write_text("cell_id,label\nc0,mitotic\n" * 200)
    with pytest.raises(
        StoreError,
        match=r"labels\.db: damaged or not a labels\.db \(file is not a database\); restore",
    ):
        LabelStore(db)


def test_sqlite_file_of_another_program_is_refused(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t(x)")
    with pytest.raises(StoreError, match="not a PhenoScout label store"):
        LabelStore(db, create=True)


def test_newer_schema_version_says_upgrade(store: LabelStore, db: Path) -> None:
    store._conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    store.close()
    with pytest.raises(StoreError, match=r"schema version 7 is newer .*\(2\); upgrade PhenoScout"):
        LabelStore(db)


def test_closed_store_raises(store: LabelStore) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.n_cells()


# ---------------------------------------------------------------- cells
def test_add_cells_ignores_known_and_reports_unknown(store: LabelStore) -> None:
    assert store.add_cells(["c00", "new1", "new2"]) == 2
    assert store.n_cells() == len(CELLS) + 2
    assert store.unknown_cells(["c00", "zz", "new1", "yy"]) == ["zz", "yy"]
    with pytest.raises(StoreError, match="not a non-empty string"):
        store.add_cells(["ok", ""])
    assert store.unknown_cells(["ok"]) == ["ok"]  # the failed call added nothing


# ---------------------------------------------------------------- labels
def test_history_and_latest_wins(store: LabelStore) -> None:
    store.submit([("c00", "a")], "ann", "batch")
    store.submit([("c00", "b")], "bob", "review")
    store.submit([("c01", "a"), ("c01", "b")], "ann", "cli")  # same call: the later pair wins
    assert store.current_labels() == {"c00": "b", "c01": "b"}
    hist = store.history("c00")
    assert [(h.label, h.annotator, h.source) for h in hist] == [
        ("a", "ann", "batch"),
        ("b", "bob", "review"),
    ]
    assert hist[0].labeled_at.endswith("Z") and "T" in hist[0].labeled_at
    assert store.n_labels_given() == 4
    assert [e.cell_id for e in store.label_events()] == ["c00", "c00", "c01", "c01"]


def test_undo_restores_previous_label(store: LabelStore) -> None:
    store.submit({"c00": "a"}, "ann", "batch")
    store.submit({"c00": "b"}, "ann", "batch")
    store.submit({"c05": "a"}, "bob", "batch")  # another annotator's label is not undone
    undone = store.undo_last("ann")
    assert undone is not None
    assert (undone.cell_id, undone.label, undone.undone) == ("c00", "b", True)
    assert store.current_labels() == {"c00": "a", "c05": "a"}
    assert [h.undone for h in store.history("c00")] == [False, True]
    store.undo_last("ann")
    assert store.current_labels() == {"c05": "a"}
    assert store.undo_last("ann") is None
    assert store.n_labels_given() == 1


def test_unknown_cell_commits_nothing_of_the_call(store: LabelStore) -> None:
    store.lease([{"cell_id": "c00"}], "ann", store.start_round("ann", "random", None, 1))
    with pytest.raises(StoreError, match=r"2 unknown cell id\(s\), e.g. \['nope', 'gone'\]"):
        store.submit({"c00": "brand new", "nope": "x", "gone": "x"}, "ann", "batch")
    assert store.current_labels() == {}
    assert "brand new" not in store.label_counts()  # class creation rolled back too
    assert store.leased_ids() == {"c00"}  # lease not closed


def test_unknown_class_without_create_commits_nothing(store: LabelStore) -> None:
    store.add_class("mitotic")
    with pytest.raises(StoreError, match="'mitotc' does not exist; did you mean 'mitotic'"):
        store.submit({"c00": "mitotic", "c01": "mitotc"}, "ann", "batch", create_classes=False)
    assert store.current_labels() == {}


@pytest.mark.parametrize(
    ("annotator", "source", "match"),
    [("", "batch", "annotator '' is empty"), ("ann", "web", "label source 'web' is unknown")],
)
def test_submit_rejects_bad_annotator_or_source(store, annotator, source, match) -> None:
    with pytest.raises(StoreError, match=match):
        store.submit({"c00": "a"}, annotator, source)


def test_current_labels_frame(store: LabelStore) -> None:
    rid = store.start_round("ann", "margin", "v0001", 2)
    store.submit({"c00": "a", "c01": UNSURE}, "ann", "batch", round_id=rid)
    store.submit({"c02": "b"}, "ann", "cli")
    frame = store.current_labels_frame()
    assert list(frame.columns) == [
        "cell_id",
        "label",
        "annotator",
        "labeled_at",
        "round_id",
        "source",
        "pseudo",
        "duration_ms",
    ]
    assert frame["cell_id"].tolist() == ["c00", "c02"]
    assert frame["duration_ms"].isna().tolist()[1]  # a label outside any round is not timed
    assert frame["round_id"].tolist()[0] == rid and frame["round_id"].isna().tolist()[1]
    assert len(store.current_labels_frame(include_pseudo=True)) == 3


# ---------------------------------------------------------------- classes
ODD_NAMES = [
    "🧫 mitotic 🔬",
    "a=b",
    'it\'s "odd"',
    "one, two",
    "x" * 200,
    "Zellkern-Fragmentierung ü",
    "👩‍🔬 ZWJ emoji",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_class_names_round_trip(store: LabelStore, db: Path, name: str) -> None:
    store.submit({"c00": name}, "ann", "batch")
    store.close()
    with LabelStore(db) as again:
        assert again.current_labels() == {"c00": name}
        assert name in [c.name for c in again.classes()]


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("x" * 201, "201 characters; use at most 200"),
        ("two\nlines", "newline or control character"),
        ("tab\there", "control character"),
        ("a\u2028b", "newline"),
        (3, "is not text"),
    ],
)
def test_bad_class_names_rejected(store: LabelStore, name, match) -> None:
    with pytest.raises(StoreError, match=match):
        store.add_class(name)
    with pytest.raises(StoreError, match=match):
        store.submit({"c00": name}, "ann", "batch")
    assert store.n_labels_given() == 0


def test_skip_sentinel_is_not_a_class_name(store: LabelStore) -> None:
    with pytest.raises(StoreError, match="reserved for skipping"):
        store.add_class(SKIP)
    with pytest.raises(StoreError, match="reserved for skipping"):
        store.rename_class(UNSURE, f" {SKIP} ")


def test_names_are_stripped_and_case_clashes_refused(store: LabelStore) -> None:
    assert store.add_class("  mitotic ").name == "mitotic"
    with pytest.raises(StoreError, match="'mitotic' exists"):
        store.add_class("mitotic")
    with pytest.raises(StoreError, match="only by case; use 'mitotic'"):
        store.add_class("Mitotic")


def test_keys_colours_and_pseudo_classes(store: LabelStore) -> None:
    pseudo = {c.name: c for c in store.classes() if c.pseudo}
    assert {n: c.key for n, c in pseudo.items()} == {UNSURE: "u", BAD_SEGMENTATION: "b"}
    infos = [store.add_class(f"k{i}") for i in range(11)]
    assert [c.key for c in infos] == [*"1234567890", "a"]  # then letters: 13-16 classes
    assert len({c.colour for c in infos[:10]}) == 10 and all(c.colour for c in infos)
    more = [store.add_class(f"m{i}") for i in range(19)]
    keys = [c.key for c in infos + more]
    assert keys[-1] is None and len(set(keys[:-1])) == 29  # 29 keys, then none
    assert not {"u", "b", "s", "z", "n", "c", "r"} & set(keys)  # the app's other keys
    colours = [c.colour for c in infos + more]  # 30 classes: no ring colour repeated
    assert len(set(colours)) == 30 and colours[20] not in colours[:20]
    assert not {c.colour for c in store.classes() if c.pseudo} & set(colours)
    with pytest.raises(StoreError, match="key '1' is already used by class 'k0'"):
        store.set_class_key("k10", "1")
    store.set_class_key("k0", None)
    store.set_class_key("k10", "1")
    store.set_class_colour("k10", "#ABCDEF")
    k10 = next(c for c in store.classes() if c.name == "k10")
    assert (k10.key, k10.colour) == ("1", "#abcdef")
    with pytest.raises(StoreError, match="not of the form #rrggbb"):
        store.set_class_colour("k10", "red")


def test_pseudo_labels_excluded_from_training_counts(store: LabelStore) -> None:
    store.submit({"c00": "a", "c01": UNSURE, "c02": BAD_SEGMENTATION}, "ann", "batch")
    assert store.label_counts() == {"a": 1}
    assert store.label_counts(include_pseudo=True) == {"a": 1, UNSURE: 1, BAD_SEGMENTATION: 1}
    assert store.current_labels() == {"c00": "a"}
    assert len(store.current_labels(include_pseudo=True)) == 3
    assert [c.name for c in store.classes(include_pseudo=False)] == ["a"]
    assert store.n_labels_given() == 3  # an "unsure" click still spends a label


def test_rename_class(store: LabelStore) -> None:
    store.submit({"c00": "mitotc", "c01": "other"}, "ann", "batch")
    store.rename_class("mitotc", "mitotic")
    assert store.current_labels() == {"c00": "mitotic", "c01": "other"}
    assert store.history("c00")[0].label == "mitotic"
    with pytest.raises(StoreError, match="that name is taken"):
        store.rename_class("mitotic", "other")
    with pytest.raises(StoreError, match="pseudo-class 'unsure' cannot be renamed"):
        store.rename_class(UNSURE, "maybe")
    with pytest.raises(StoreError, match="'mitotc' does not exist; did you mean 'mitotic'"):
        store.rename_class("mitotc", "x")


def test_merge_classes(store: LabelStore) -> None:
    store.submit({"c00": "blebs", "c01": "blebs", "c02": "apoptotic"}, "ann", "batch")
    store.submit({"c01": "normal"}, "bob", "review")  # c01 no longer counts as blebs
    assert store.merge_classes("blebs", "apoptotic") == 1
    assert store.label_counts() == {"apoptotic": 2, "normal": 1}
    assert "blebs" not in [c.name for c in store.classes()]
    assert [h.label for h in store.history("c00")] == ["blebs"]  # history kept as given
    assert store.label_events()[0].label == "apoptotic"  # events resolved through the merge
    store.submit({"c03": "blebs"}, "ann", "batch")  # a stale tab's label goes to the target
    assert store.current_labels()["c03"] == "apoptotic"
    with pytest.raises(StoreError, match="was merged into another class"):
        store.add_class("blebs")
    store.undo_last("bob")  # undo brings back the merged class's label, resolved
    assert store.current_labels()["c01"] == "apoptotic"
    assert store.merge_classes("apoptotic", "normal") == 4  # chains resolve in one step
    assert store.label_counts() == {"normal": 4}
    with pytest.raises(StoreError, match="cannot be merged away"):
        store.merge_classes(UNSURE, "normal")
    with pytest.raises(StoreError, match="into itself"):
        store.merge_classes("normal", "normal")


# ---------------------------------------------------------------- rounds and leases
def test_rounds_and_strategy_state(store: LabelStore) -> None:
    assert store.last_state("bandit") == {}
    r1 = store.start_round("ann", "bandit", None, 5, state={"w": [0.5, 0.5]})
    r2 = store.start_round("ann", "bandit", "v0002", 5, state={"w": [0.9, 0.1]})
    store.start_round("ann", "random", None, 5)
    store.finish_round(r1, {"fit_s": 0.25})
    assert store.last_state("bandit") == {"w": [0.9, 0.1]}
    rounds = store.rounds()
    assert [r["round_id"] for r in rounds] == [r1, r2, r2 + 1]
    assert rounds[0]["timings"] == {"fit_s": 0.25} and rounds[0]["finished_at"]
    assert rounds[1]["finished_at"] is None and rounds[1]["model_version"] == "v0002"
    with pytest.raises(StoreError, match="round 99 does not exist"):
        store.finish_round(99, {})
    with pytest.raises(StoreError, match="round 99 does not exist"):
        store.submit({"c00": "a"}, "ann", "batch", round_id=99)


def test_lease_then_submit_closes_the_lease(store: LabelStore) -> None:
    rid = store.start_round("ann", "margin", None, 3)
    items = [
        {"cell_id": c, "sub_strategy": "margin", "guess": "a", "confidence": 0.6}
        for c in ("c03", "c01", "c02")
    ]
    assert store.lease(items, "ann", rid) == 3
    assert [d["cell_id"] for d in store.open_lease("ann")] == ["c03", "c01", "c02"]
    assert store.open_lease("ann")[0]["confidence"] == pytest.approx(0.6)
    assert store.submit({"c03": "a", "c01": SKIP}, "ann", "batch", round_id=rid) == 1
    assert [d["cell_id"] for d in store.open_lease("ann")] == ["c02"]
    assert store.current_labels() == {"c03": "a"}  # the skip recorded no label
    assert store.release("ann") == 1 and store.leased_ids() == set()


def test_lease_expiry_with_ttl_zero(store: LabelStore) -> None:
    store.lease([{"cell_id": "c00"}], "ann", store.start_round("ann", "r", None, 1), ttl_s=0)
    assert store.leased_ids() == set() and store.open_lease("ann") == []
    assert store.lease([{"cell_id": "c00"}], "bob", 1) == 1  # expired: free for others


def test_leases_of_other_annotators(store: LabelStore) -> None:
    rid = store.start_round("ann", "r", None, 2)
    store.lease([{"cell_id": "c00"}, {"cell_id": "c01"}], "ann", rid)
    store.lease([{"cell_id": "c05"}], "bob", rid)
    assert store.leased_ids() == {"c00", "c01", "c05"}
    assert store.leased_ids(exclude_annotator="bob") == {"c00", "c01"}
    assert store.lease([{"cell_id": "c01"}, {"cell_id": "c02"}], "bob", rid) == 1  # c01 is ann's
    assert store.leased_ids(exclude_annotator="ann") == {"c05", "c02"}
    store.submit({"c00": "a"}, "bob", "review")  # a label by anyone closes the lease
    assert [d["cell_id"] for d in store.open_lease("ann")] == ["c01"]
    with pytest.raises(StoreError, match="unknown cell id"):
        store.lease([{"cell_id": "nope"}], "ann", rid)


# ---------------------------------------------------------------- concurrency
_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from labeling.store.labels import LabelStore
    db, tag = Path(sys.argv[1]), sys.argv[2]
    with LabelStore(db) as s:
        (db.parent / f"ready_{tag}").touch()
        while not (db.parent / "go").exists():  # start together with the other writers
            time.sleep(0.001)
        for i in range(200):
            s.submit([(f"{tag}{i % 50}", f"class{i % 3}")], tag, "cli")
            time.sleep(0.0002)  # let the others in, so the commits interleave
""")


def test_two_processes_submitting_lose_nothing(store: LabelStore, db: Path) -> None:
    store.add_cells([f"{t}{i}" for t in ("p", "q") for i in range(50)])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(db), tag],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p", "q")
    ]
    deadline = time.monotonic() + 30
    while not all((db.parent / f"ready_{t}").exists() for t in "pq"):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.001)
    (db.parent / "go").touch()
    for i in range(100):  # this process writes at the same time
        store.submit({CELLS[i % 20]: f"main{i // 20}"}, "main", "batch")  # each a new label
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert store._conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 500
    assert store.n_labels_given() == 500
    assert len(store.current_labels()) == 120
    counts = {k: v for k, v in store.label_counts().items() if v}
    assert counts == {"main4": 20, "class0": 34, "class1": 34, "class2": 32}


def test_threads_share_one_store(store: LabelStore) -> None:
    def work(k: int) -> None:
        for i in range(25):
            # a class per submit: a repeat of the label a cell carries adds nothing (double click)
            store.submit({CELLS[(k * 5 + i) % 20]: f"t{k}-{i}"}, f"ann{k}", "batch")
            store.current_labels()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.n_labels_given() == 100


def test_import_loads_nothing_heavy() -> None:
    code = (
        "import sys, labeling.store.labels; print(sorted({'pandas', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_label_remembers_the_lease_that_handed_it_out(tmp_path):
    from labeling.store.labels import LabelStore

    with LabelStore(tmp_path / "labels.db", create=True) as store:
        store.add_cells(["a", "b", "c"])
        rid = store.start_round("ann", "discover", None, 2)
        store.lease(
            [
                {"cell_id": "a", "sub_strategy": "random", "guess": "x", "confidence": 0.4},
                {"cell_id": "b", "sub_strategy": "margin"},
            ],
            "ann",
            rid,
        )
        store.submit({"a": "x", "b": "y", "c": "z"}, annotator="ann", source="batch")
        events = {e.cell_id: e for e in store.label_events()}
    assert (events["a"].sub_strategy, events["a"].guess, events["a"].round_id) == (
        "random",
        "x",
        rid,
    )
    assert events["b"].sub_strategy == "margin" and events["b"].guess is None
    assert events["c"].sub_strategy is None and events["c"].round_id is None


def test_a_double_click_adds_no_second_label(tmp_path):
    from labeling.store.labels import LabelStore

    with LabelStore(tmp_path / "labels.db", create=True) as store:
        store.add_cells(["a", "b"])
        assert store.submit({"a": "x"}, annotator="ann", source="batch") == 1
        assert store.submit({"a": "x"}, annotator="ann", source="batch") == 0
        assert store.submit({"a": "x"}, annotator="bob", source="batch") == 1  # a second opinion
        assert store.submit({"a": "y"}, annotator="ann", source="batch") == 1
        assert store.submit({"a": "x"}, annotator="ann", source="batch") == 1  # back to x
        assert [r.label for r in store.history("a")] == ["x", "x", "y", "x"]
        assert store.n_labels_given() == 4

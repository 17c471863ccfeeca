"""Two labelers on one project at once, as two processes on the core API (next_batch and
submit_labels, what the app and the CLI call): batches are leased apart, no label is lost, a
relabel keeps the history and the latest wins, and every label keeps its annotator."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from labeling.io.export import labels_table
from labeling.project import open_project

REPO = Path(__file__).resolve().parents[2]

_LABELER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from labeling.loop import next_batch, submit_labels
    from labeling.project import open_project
    path, me, other, n_rounds, n = Path(sys.argv[1]), sys.argv[2], sys.argv[3], *map(int, sys.argv[4:6])
    project = open_project(path)
    truth = project.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    (path / f"ready_{me}").touch()
    while not (path / "go").exists():  # start together with the other labeler
        time.sleep(0.001)
    batches, events = [], []
    for r in range(n_rounds):
        ids = [b["cell_id"] for b in next_batch(project, n, annotator=me)]
        batches.append(ids)
        for cid in ids:  # one label at a time, as the app commits them
            k = submit_labels(project, {cid: str(truth[cid])}, annotator=me)
            events.append([cid, str(truth[cid]), me, "batch", k])
        frame = project.store.current_labels_frame()
        theirs = sorted(frame.loc[frame["annotator"] == other, "cell_id"])
        if theirs:  # a second opinion on one of the other's cells: it must win
            cid, label = theirs[r % len(theirs)], f"second opinion {me} {r}"
            k = submit_labels(project, {cid: label}, annotator=me, source="review")
            events.append([cid, label, me, "review", k])
    print(json.dumps({"batches": batches, "events": events}))
""")


def _start(project: Path, me: str, other: str, n_rounds: int, n: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _LABELER, str(project), me, other, str(n_rounds), str(n)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture
def project(tmp_path, small_project) -> Path:
    path = tmp_path / "project"
    shutil.copytree(small_project, path)
    return path


def _run_two(project: Path, n_rounds: int, n: int) -> dict[str, dict]:
    names = ("ann", "bob")
    procs = {me: _start(project, me, other, n_rounds, n) for me, other in (names, names[::-1])}
    deadline = time.monotonic() + 120
    while not all((project / f"ready_{me}").exists() for me in names):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values())
        time.sleep(0.01)
    (project / "go").touch()
    results = {}
    for me, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        results[me] = json.loads(out.strip().splitlines()[-1])
    return results


@pytest.mark.slow
def test_two_processes_label_at_once_and_nothing_is_lost_or_shared(project):
    n_rounds, n = 6, 6
    results = _run_two(project, n_rounds, n)
    handed = {me: [c for batch in r["batches"] for c in batch] for me, r in results.items()}
    # 1. leases: every batch full, and no cell handed to both labelers
    for me, batches in ((me, r["batches"]) for me, r in results.items()):
        assert [len(b) for b in batches] == [n] * n_rounds, me
        assert len(set(handed[me])) == n * n_rounds, f"{me} got a cell twice"
    assert set(handed["ann"]).isdisjoint(handed["bob"]), "a cell was handed to both"
    # 2. no label lost: the store holds exactly the rows whose submit returned 1, no others
    acked = [e for r in results.values() for e in r["events"] if e[4] == 1]
    assert len(acked) == sum(len(r["events"]) for r in results.values())  # none was a no-op
    reviews = [e for e in acked if e[3] == "review"]
    assert len(reviews) >= n_rounds, "too few relabels to test history"
    conn = sqlite3.connect(project / "labels.db")
    rows = conn.execute(
        "SELECT l.cell_id, c.name, l.annotator, l.source FROM labels l "
        "JOIN classes c ON c.class_id = l.class_id ORDER BY l.label_id"
    ).fetchall()
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    assert Counter(map(tuple, rows)) == Counter(tuple(e[:4]) for e in acked)
    # 3. attribution and history: per annotator the store keeps each one's order; latest wins
    proj = open_project(project)
    try:
        current = proj.store.current_labels()
        for cell in {e[0] for e in acked}:
            history = proj.store.history(cell)
            for me in results:
                mine = [(e[1], e[3]) for e in results[me]["events"] if e[0] == cell]
                assert [(h.label, h.source) for h in history if h.annotator == me] == mine
            assert current[cell] == history[-1].label
        relabeled = {e[0] for e in reviews}
        assert all(len(proj.store.history(c)) >= 2 for c in relabeled)
        assert all(current[c].startswith("second opinion") for c in relabeled)
        batch_by = {e[0]: e[2] for e in acked if e[3] == "batch"}
        labeled_by = {c: me for me in handed for c in handed[me]}
        assert batch_by == labeled_by  # each batch label is its own labeler's
        assert proj.store.leased_ids() == set()  # every lease closed by its label
        timed = [e for e in proj.store.label_events() if e.source == "batch"]
        assert all(e.duration_ms is not None for e in timed)  # labeling time recorded
        exported = labels_table(proj).set_index("cell_id")
        current_batch = [c for c in batch_by if c not in relabeled]
        assert exported.loc[current_batch, "duration_ms"].notna().all()  # and exported
    finally:
        proj.close()


def test_a_cell_taken_between_choice_and_lease_is_never_handed_out(project, monkeypatch):
    """The race made certain: while bob's batch is being chosen, ann leases half of the cells
    it will pick and labels one more; bob still gets a full batch, none of those cells."""
    import labeling.loop as loop
    from labeling.store.labels import LabelStore

    proj = open_project(project)
    real_items, raced = loop._items, {}

    def items_then_race(selection, pool, head):
        items = real_items(selection, pool, head)
        if not raced:  # the first choice only: the retry must see what ann took
            ids = [it["cell_id"] for it in items]
            with LabelStore(project / "labels.db") as other:
                rid = other.start_round("ann", "random", None, 3)
                assert other.lease([{"cell_id": c} for c in ids[:3]], "ann", rid) == 3
                other.submit({ids[3]: "round"}, "ann", "cli")
            raced.update(leased=set(ids[:3]), labeled={ids[3]})
        return items

    monkeypatch.setattr(loop, "_items", items_then_race)
    try:
        batch = [b["cell_id"] for b in loop.next_batch(proj, 8, annotator="bob")]
        assert len(batch) == len(set(batch)) == 8
        assert not set(batch) & (raced["leased"] | raced["labeled"])
        assert {d["cell_id"] for d in proj.store.open_lease("bob")} == set(batch)
        assert {d["cell_id"] for d in proj.store.open_lease("ann")} == raced["leased"]
    finally:
        proj.close()


def test_lease_leaves_out_labeled_cells(project):
    from labeling.store.labels import LabelStore

    with LabelStore(project / "labels.db") as store:
        a, b, c = (r[0] for r in store._read("SELECT cell_id FROM cells LIMIT 3"))
        store.submit({a: "round"}, "ann", "cli")
        rid = store.start_round("bob", "random", None, 3)
        assert store.lease([{"cell_id": x} for x in (a, b, c)], "bob", rid) == 2
        assert [d["cell_id"] for d in store.open_lease("bob")] == [b, c]
        store.undo_last("ann")  # a has no label any more: it can be leased again
        assert store.lease([{"cell_id": a}], "bob", rid) == 1

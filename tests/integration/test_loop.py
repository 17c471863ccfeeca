"""The headless loop (next batch, label, refit) and the simulation, on a small demo screen."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from labeling.cli.commands import main
from labeling.errors import PoolExhaustedError, StoreError
from labeling.loop import fit_head, next_batch, submit_labels
from labeling.project import open_project
from labeling.simulate import SimConfig, random_labels_to_all, simulate
from labeling.store.labels import SKIP


@pytest.fixture()
def project(tmp_path, small_project):
    path = tmp_path / "p"
    shutil.copytree(small_project, path)
    proj = open_project(path)
    yield proj
    proj.close()


def _truth(project):
    return project.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]


def test_batches_are_unique_unlabeled_and_leased_apart(project):
    a = next_batch(project, 24, annotator="ann")
    b = next_batch(project, 24, annotator="bob")
    ids_a, ids_b = [x["cell_id"] for x in a], [x["cell_id"] for x in b]
    assert len(set(ids_a)) == 24 and len(set(ids_b)) == 24
    assert not set(ids_a) & set(ids_b), "a cell leased to ann was handed to bob"
    assert set(project.store.leased_ids()) == set(ids_a) | set(ids_b)
    # a reload resumes the open batch
    assert [x["cell_id"] for x in next_batch(project, 24, annotator="ann")] == ids_a
    truth = _truth(project)
    submit_labels(project, {c: truth[c] for c in ids_a}, annotator="ann")
    c = next_batch(project, 24, annotator="ann")
    assert not {x["cell_id"] for x in c} & (set(ids_a) | set(ids_b))
    assert all(set(x) == {"cell_id", "path", "strategy", "guess", "confidence"} for x in c)


def test_cold_start_then_guesses_after_two_classes(project):
    first = next_batch(project, 12, annotator="ann")
    assert all(x["guess"] is None for x in first)
    assert sum(x["strategy"] == "random" for x in first) >= 1, "the random slice is missing"
    truth = _truth(project)
    submit_labels(project, {x["cell_id"]: truth[x["cell_id"]] for x in first}, annotator="ann")
    second = next_batch(project, 12, annotator="ann")
    assert all(x["guess"] in set(truth) and 0 < x["confidence"] <= 1 for x in second)
    rounds = project.store.rounds()
    assert rounds[-1]["state"]["arms"], "discover keeps its bandit state in the rounds table"


def test_labels_given_on_leased_and_other_cells(project):
    batch = next_batch(project, 5, annotator="ann")
    leased = batch[0]["cell_id"]
    other = next(
        c
        for c in project.cells(columns=["cell_id"])["cell_id"]
        if c not in {x["cell_id"] for x in batch}
    )
    assert submit_labels(project, {leased: "x", other: "y"}, annotator="ann", source="cli") == 2
    assert leased not in project.store.leased_ids()
    events = {e.cell_id: e for e in project.store.label_events()}
    assert events[leased].sub_strategy == batch[0]["strategy"]
    assert events[other].sub_strategy is None and events[other].source == "cli"


def test_pool_exhausted(project):
    ids = project.cells(columns=["cell_id"])["cell_id"].tolist()
    submit_labels(project, {c: "a" if i % 2 else "b" for i, c in enumerate(ids)}, "ann")
    with pytest.raises(PoolExhaustedError, match="pool exhausted"):
        next_batch(project, 3, annotator="ann")


def test_head_is_cached_for_the_same_labels(project):
    truth = _truth(project)
    ids = list(truth.index[:60])
    submit_labels(project, {c: truth[c] for c in ids}, annotator="ann")
    h1 = fit_head(project)
    h2 = fit_head(project)
    assert h1.version == h2.version and np.array_equal(h1.proba, h2.proba)
    assert h1.proba.shape == (len(truth), len(set(truth[ids])))


def test_cli_next_and_label(project, capsys):
    assert main(["next", str(project.path), "--n", "4", "--annotator", "ann"]) == 0
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert len(lines) == 4 and all(set(x) >= {"cell_id", "path", "strategy"} for x in lines)
    assert out.err == ""  # as many as asked: nothing to say
    n_cells = project.store.n_cells()
    assert main(["next", str(project.path), "--n", str(n_cells + 10), "--annotator", "bob"]) == 0
    out = capsys.readouterr()
    n = len(out.out.splitlines())
    assert n <= n_cells - 4 and out.err.startswith(f"{n} cells of the {n_cells + 10} asked for")
    args = [f'{lines[0]["cell_id"]}=odd = name, "quoted" 🦠', f"{lines[1]['cell_id']}=mitotic"]
    assert main(["label", str(project.path), "--annotator", "ann", *args]) == 0
    assert capsys.readouterr().out.startswith("committed 2")
    assert main(["label", str(project.path), "--annotator", "ann", *args]) == 0
    again = capsys.readouterr().out  # nothing new: no refit of the head
    assert again.startswith("committed 0 (2 unchanged") and "head refit" not in again
    labels = project.store.current_labels()
    assert labels[lines[0]["cell_id"]] == 'odd = name, "quoted" 🦠'
    # one unknown id: nothing of that call is committed
    code = main(["label", str(project.path), f"{lines[2]['cell_id']}=x", "no-such-cell=x"])
    assert code == 2 and "no-such-cell" in capsys.readouterr().err
    assert lines[2]["cell_id"] not in project.store.current_labels()


def test_label_commit_does_not_import_torch(project):
    cell = project.cells(columns=["cell_id"])["cell_id"].iloc[0]
    code = (
        "import sys\nfrom labeling.cli.commands import main\n"
        f"main(['label', {str(project.path)!r}, '--no-refit', {cell + '=a'!r}])\n"
        "print('torch' in sys.modules, 'streamlit' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["committed 1", "False False"]


def test_store_refuses_unknown_cells_directly(project):
    with pytest.raises(StoreError, match="unknown cell"):
        submit_labels(project, {"nope": "a"}, annotator="ann")


def test_random_labels_to_all_counts_batches():
    truth = ["a"] * 98 + ["b", "c"]
    need = random_labels_to_all(truth, batch_size=10, n_orderings=200, seed=1)
    assert need.min() >= 10 and need.max() <= 100 and np.all(need % 10 == 0)
    assert np.median(need) > 50  # two singletons among 100: the last one comes late


def test_simulation_is_deterministic(tmp_path, small_demo):
    cfg = SimConfig(strategies=("discover",), budget=40, batch_size=10, seeds=1,
                    cache_dir=tmp_path / "cache")  # fmt: skip
    a = simulate(small_demo, cfg, tmp_path / "a")
    b = simulate(small_demo, cfg, tmp_path / "b")
    cols = ["classes_found", "labels_to_all_classes", "macro_f1"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    ca, cb = (pd.read_csv(tmp_path / d / "curves.csv") for d in "ab")
    pd.testing.assert_frame_equal(ca, cb)
    assert list(ca.columns) == ["strategy", "seed", "n_labeled", "label", "n_found"]
    assert (tmp_path / "a" / "discovery.png").stat().st_size > 10_000


@pytest.mark.slow
def test_discover_finds_every_class_before_random(tmp_path):
    from datasets.crops.demo import generate_demo

    data = tmp_path / "demo"
    generate_demo(data, n_cells=2000, seed=11)
    cfg = SimConfig(strategies=("discover",), budget=150, batch_size=10, seeds=2,
                    cache_dir=tmp_path / "cache")  # fmt: skip
    summary = simulate(data, cfg, tmp_path / "out")
    truth = pd.read_csv(data / "labels.csv")["label"]
    random_need = np.median(random_labels_to_all(truth, 10, n_orderings=500))
    assert summary["labels_to_all_classes"].notna().all(), summary
    assert summary["labels_to_all_classes"].median() < random_need / 2


@pytest.mark.slow
def test_simulation_with_finetune_uses_the_backbone(tmp_path):
    pytest.importorskip("torch")
    from datasets.crops.demo import generate_demo

    data = tmp_path / "demo"
    generate_demo(data, n_cells=300, seed=5)
    cfg = SimConfig(strategies=("discover",), budget=20, batch_size=10, seeds=1, finetune=True,
                    cache_dir=tmp_path / "cache")  # fmt: skip
    summary = simulate(data, cfg, tmp_path / "out")
    assert len(summary) == 1 and summary["classes_found"].iloc[0] >= 2
    backbones = list((tmp_path / "cache").glob("sim/*/models/backbone.pt"))
    assert len(backbones) == 1, "the U-Net was pretrained once and cached with the dataset"
    curves = pd.read_csv(tmp_path / "out" / "curves.csv")
    assert sorted(curves["n_labeled"].unique()) == [10, 20]


def test_current_batch_rebuilds_the_batch_after_a_reload(project):
    from labeling.loop import current_batch

    batch = next_batch(project, 24, annotator="ann")
    ids = [x["cell_id"] for x in batch]
    truth = _truth(project)
    submit_labels(project, {ids[3]: truth[ids[3]], ids[0]: truth[ids[0]]}, annotator="ann")
    submit_labels(project, {ids[5]: SKIP}, annotator="ann")
    again = current_batch(project, "ann")
    assert [x["cell_id"] for x in again] == ids  # in the batch's order, the skipped one too
    assert [x["cell_id"] for x in again if x.get("skipped")] == [ids[5]]
    # a skipped cell handed to someone else since is theirs: it leaves this batch
    round_id = project.store.start_round("bob", "random", None, 1)
    assert project.store.lease([{"cell_id": ids[5]}], "bob", round_id) == 1
    assert ids[5] not in [x["cell_id"] for x in current_batch(project, "ann")]
    assert again[3]["strategy"] == batch[3]["strategy"] and again[3]["guess"] == batch[3]["guess"]
    bobs = {x["cell_id"] for x in current_batch(project, "bob")}
    assert bobs == {ids[5]}  # bob's open batch: the cell handed to him
    assert not {x["cell_id"] for x in current_batch(project, "cy")} & set(ids)  # a new batch


def test_a_reload_of_a_finished_batch_shows_it_done(project, monkeypatch):
    import time
    from types import SimpleNamespace

    from labeling import loop
    from labeling.loop import current_batch, shown_round

    batch = next_batch(project, 6, annotator="fin")
    ids = [x["cell_id"] for x in batch]
    truth = _truth(project)
    submit_labels(project, {ids[0]: SKIP}, annotator="fin")
    submit_labels(project, {c: truth[c] for c in ids[1:]}, annotator="fin")
    n_rounds = len(project.store.rounds())
    again = current_batch(project, "fin")  # the batch as left, skip and all: no new round
    assert [x["cell_id"] for x in again] == ids and len(project.store.rounds()) == n_rounds
    assert [x["cell_id"] for x in again if x.get("skipped")] == [ids[0]]
    assert shown_round(project, "fin") == project.store.rounds()[-1]["round_id"]
    later = time.time() + 61 * 60  # past the 60-minute leases: its open cells may have run
    clock = SimpleNamespace(time=lambda: later, perf_counter=time.perf_counter)
    monkeypatch.setattr(loop, "time", clock)  # out, not been skipped
    fresh = current_batch(project, "fin")  # then a new batch, as before
    assert not {x["cell_id"] for x in fresh} & set(ids[1:]) and fresh


def test_undo_last_reverts_and_leases_the_cell_back(project):
    from labeling.loop import current_batch, undo_last

    assert undo_last(project, "ann") is None
    batch = next_batch(project, 12, annotator="ann")
    ids = [x["cell_id"] for x in batch]
    submit_labels(project, {ids[0]: "a"}, annotator="ann")
    submit_labels(project, {ids[1]: "b"}, annotator="ann")
    record = undo_last(project, "ann")
    assert record.cell_id == ids[1] and record.label == "b" and record.undone
    assert record.sub_strategy == batch[1]["strategy"]
    assert project.store.current_labels() == {ids[0]: "a"}
    assert ids[1] in {lease["cell_id"] for lease in project.store.open_lease("ann")}
    # a reload shows it open again, in its place
    assert [x["cell_id"] for x in current_batch(project, "ann")] == ids
    # a relabel undone keeps the earlier label in force: no lease back
    submit_labels(project, {ids[0]: "b"}, annotator="ann")
    assert undo_last(project, "ann").cell_id == ids[0]
    assert project.store.current_labels()[ids[0]] == "a"
    assert ids[0] not in {lease["cell_id"] for lease in project.store.open_lease("ann")}
    # a label given outside rounds is undone without a lease
    free = next(c for c in _truth(project).index if c not in ids)
    submit_labels(project, {free: "a"}, annotator="ann", source="cli")
    assert undo_last(project, "ann").round_id is None
    assert free not in project.store.leased_ids()

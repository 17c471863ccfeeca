"""Tests of labeling/reports.py: hand-made label events with known answers, a small label store,
and one end-to-end report on a copy of the shared demo project."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labeling.errors import ConfigError, DataError, NotTrainedError
from labeling.reports.report import (
    class_counts,
    cross_validated,
    discovery_curves,
    expected_random_curve,
    labels_per_round,
    prevalence,
    random_slice,
    stopping_signal,
    wilson_interval,
    write_report,
)
from labeling.reports.summary import summary_text
from labeling.store.labels import BAD_SEGMENTATION, UNSURE, LabelRecord, LabelStore


def ev(cell: str, label: str, sub: str | None = None, *, undone: bool = False) -> LabelRecord:
    return LabelRecord(cell, label, "ann", "2025-01-01T00:00:00.000Z", None, "batch", undone, sub)


# c3 is first labeled B by "discover", then corrected to A in review; c2 and c6 are pseudo.
EVENTS = [
    ev("c1", "A", "random"),
    ev("c2", UNSURE, "random"),
    ev("c3", "B", "discover"),
    ev("c4", "A", "random"),
    ev("c3", "A"),
    ev("c6", BAD_SEGMENTATION, "random"),
]


# ---------------------------------------------------------------- discovery curves
def test_discovery_curves_known_answer_with_relabel_and_pseudo_labels() -> None:
    curves = discovery_curves(EVENTS)
    assert list(curves.columns) == ["n_labeled", "label", "n_found"]
    wide = curves.pivot(index="n_labeled", columns="label", values="n_found")
    assert list(wide.index) == [1, 2, 3, 4, 5, 6]  # pseudo-labels spend labels too
    assert wide["A"].tolist() == [1, 1, 1, 2, 3, 3]
    assert wide["B"].tolist() == [0, 0, 1, 1, 0, 0]  # the correction moves c3 from B to A
    assert set(curves["label"]) == {"A", "B"}  # no pseudo-classes


def test_discovery_curves_list_never_found_classes_and_skip_undone() -> None:
    events = [ev("c1", "A"), ev("c2", "B", undone=True), ev("c3", "A")]
    curves = discovery_curves(events, classes=["B", "A", UNSURE])
    assert list(dict.fromkeys(curves["label"])) == ["A", "B"]  # discovery order, then the rest
    assert curves[curves["label"] == "A"]["n_found"].tolist() == [1, 2]
    assert curves[curves["label"] == "B"]["n_found"].tolist() == [0, 0]
    assert discovery_curves([]).empty


def test_expected_random_curve_is_labels_times_prevalence() -> None:
    prev = pd.DataFrame({"label": ["A", "B"], "estimate": [0.5, 0.0], "low": [0.2, 0.0],
                         "high": [0.8, 0.1]})  # fmt: skip
    curve = expected_random_curve(4, prev)
    a = curve[curve["label"] == "A"]
    assert a["n_labeled"].tolist() == [0, 1, 2, 3, 4]
    assert a["expected"].tolist() == [0, 0.5, 1.0, 1.5, 2.0]
    assert a["high"].tolist() == pytest.approx([0, 0.8, 1.6, 2.4, 3.2])
    b = expected_random_curve(np.array([10, 20]), prev).query("label == 'B'")
    assert b["expected"].tolist() == [0, 0] and b["high"].tolist() == pytest.approx([1, 2])


# ---------------------------------------------------------------- prevalence
def test_wilson_interval_against_hand_computed_values() -> None:
    # 3/10, z = 1.959964: (2k + z^2 -/+ z sqrt(z^2 + 4k(n-k)/n)) / (2 (n + z^2))
    assert wilson_interval(3, 10) == pytest.approx((0.107791, 0.603222), abs=1e-6)
    # 0/20: lower bound 0, upper z^2 / (n + z^2) = 3.841459 / 23.841459
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.161125), abs=1e-6)
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo90, hi90 = wilson_interval(3, 10, confidence=0.90)
    assert 0.107791 < lo90 < hi90 < 0.603222  # narrower at lower confidence


def test_prevalence_uses_the_random_slice_only() -> None:
    assert random_slice(EVENTS) == {"c1": "A", "c2": UNSURE, "c4": "A", "c6": BAD_SEGMENTATION}
    table = prevalence(EVENTS, classes=["C"]).set_index("label")
    assert list(table.columns) == ["n_random", "n_slice", "estimate", "low", "high"]
    assert table.loc["A", "n_random"] == 2 and table.loc["A", "n_slice"] == 4  # pseudo in n
    assert table.loc["A", "estimate"] == 0.5
    assert (table.loc["A", "low"], table.loc["A", "high"]) == pytest.approx(wilson_interval(2, 4))
    for never in ("B", "C"):  # B only by "discover", C never labeled
        assert table.loc[never, "estimate"] == 0 and table.loc[never, "low"] == 0
        assert table.loc[never, "high"] == pytest.approx(3.841459 / (4 + 3.841459), abs=1e-6)


def test_prevalence_takes_the_latest_label_of_a_random_cell() -> None:
    events = [ev("c1", "A", "random"), ev("c2", "A", "random"), ev("c1", "B")]
    table = prevalence(events).set_index("label")
    assert table["n_random"].to_dict() == {"A": 1, "B": 1}


def test_prevalence_without_random_slice_is_unknown() -> None:
    table = prevalence([ev("c1", "A", "discover")])
    assert math.isnan(table["estimate"].iloc[0])
    assert (table["low"].iloc[0], table["high"].iloc[0]) == (0.0, 1.0)


# ---------------------------------------------------------------- stopping signal
def test_stopping_signal_good_turing_and_labels_since_new_class() -> None:
    events = [
        ev("r1", "A", "random"), ev("r2", "A", "random"), ev("r3", "B", "random"),
        ev("r4", UNSURE, "random"), ev("r5", "C", "random"),
        ev("d1", "D", "rare"),  # the last new class, at 6 labels spent
        ev("d2", "D", "rare"), ev("r6", "A", "random"), ev("d3", UNSURE, "rare"),
    ]  # fmt: skip
    s = stopping_signal(events)
    # random slice: A A B unsure C A -> n = 6; singletons B and C (pseudo-classes never count)
    low, high = s.pop("p_new_class_low"), s.pop("p_new_class_high")
    assert s == {
        "n_labels": 9, "n_classes": 4, "last_new_class": "D", "last_new_class_at": 6,
        "labels_since_new_class": 3, "n_random": 6, "n_singletons": 2, "p_new_class": 2 / 6,
    }  # fmt: skip
    # Esty's interval: se = sqrt(n1 (1 - n1/n) + 2 n2) / n, n2 = 0 (A is seen three times)
    # (0.711 above), widened to the one-sided exact bound of 2 in 6 where that is wider (0.729)
    se = (2 * (1 - 2 / 6)) ** 0.5 / 6
    assert 2 / 6 + 1.959964 * se == pytest.approx(0.7105, abs=1e-4)
    assert low == 0.0 and high == pytest.approx(0.7287, abs=1e-4)
    json.dumps(s)


def test_a_class_relabeled_away_is_not_found() -> None:
    events = [ev("c1", "A", "random"), ev("c2", "B", "rare"), ev("c2", "A", "review")]
    s = stopping_signal(events)  # c2's B was a slip, corrected: B has no cell now
    assert s["n_classes"] == 1 and s["last_new_class"] == "A" and s["n_labels"] == 3


def test_stopping_signal_without_random_slice_or_labels() -> None:
    s = stopping_signal([ev("c1", UNSURE), ev("c2", "A", "discover")])
    assert s["p_new_class"] is None and s["n_random"] == 0
    assert s["labels_since_new_class"] == 0 and s["n_classes"] == 1
    empty = stopping_signal([])
    assert empty["n_labels"] == 0 and empty["last_new_class"] is None
    assert empty["labels_since_new_class"] == 0 and empty["p_new_class"] is None


# ---------------------------------------------------------------- store summaries
@pytest.fixture
def store(tmp_path: Path):
    with LabelStore(tmp_path / "labels.db", create=True) as s:
        s.add_cells(f"c{i}" for i in range(10))
        yield s


def _labeled_round(store: LabelStore, labels: dict[str, str], sub: str, strategy: str) -> int:
    round_id = store.start_round("ann", strategy, None, len(labels))
    store.lease([{"cell_id": c, "sub_strategy": sub} for c in labels], "ann", round_id)
    store.submit(labels, "ann", "batch")
    return round_id


def test_class_counts_from_the_store(store: LabelStore) -> None:
    store.add_class("never")
    store.submit({"c0": "A", "c1": "A", "c2": "B", "c3": UNSURE}, "ann", "cli")
    store.submit({"c2": "A"}, "ann", "review")
    table = class_counts(store).set_index("label")
    assert table.loc["A", "n_labeled"] == 3 and table.loc["A", "n_given"] == 3
    assert table.loc["B", "n_labeled"] == 0 and table.loc["B", "n_given"] == 1
    assert table.loc["A", "fraction"] == 1.0 and math.isnan(table.loc[UNSURE, "fraction"])
    assert table.loc[UNSURE, "n_labeled"] == 1 and table.loc[UNSURE, "pseudo"]
    assert table.loc["never", "n_labeled"] == 0 and pd.isna(table.loc["never", "first_found_at"])
    assert list(table.index[-2:]) == [UNSURE, BAD_SEGMENTATION]  # pseudo-classes last


def test_class_counts_say_what_found_each_class_first(store: LabelStore) -> None:
    _labeled_round(store, {"c0": "A", "c1": "B"}, "cluster_coverage", "discover")
    _labeled_round(store, {"c2": "A", "c3": "C"}, "entropy", "discover")
    store.submit({"c4": "D", "c5": "B"}, "ann", "review")  # outside a batch
    found = class_counts(store).set_index("label")["first_found_by"]
    assert found[["A", "B", "C", "D"]].tolist() == ["cluster_coverage"] * 2 + ["entropy", "review"]
    assert found[[UNSURE, BAD_SEGMENTATION]].isna().all()


def test_labels_per_round_counts_labels_and_new_classes(store: LabelStore) -> None:
    r1 = _labeled_round(store, {"c0": "A", "c1": "B", "c2": UNSURE}, "random", "discover")
    r2 = _labeled_round(store, {"c3": "A", "c4": "C"}, "rare", "discover")
    store.submit({"c5": "D", "c0": "A"}, "ann", "cli")  # outside rounds
    store.start_round("ann", "random", None, 4)  # handed out, never labeled
    table = labels_per_round(store)
    assert table["round_id"].tolist()[:3] == [r1, r2, r2 + 1] and pd.isna(table["round_id"][3])
    assert table["n_labels"].tolist() == [3, 2, 0, 2]
    assert table["n_labels"].sum() == len(store.label_events())
    assert table["new_classes"].tolist() == [2, 1, 0, 1]
    assert table["new_class_names"].tolist() == ["A; B", "C", "", "D"]
    assert table["n_cells"].tolist()[:3] == [3, 2, 4]
    assert (table["seconds"][:2] >= 0).all() and math.isnan(table["seconds"][2])


# ---------------------------------------------------------------- cross-validation
def _blobs(counts: dict[str, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    ids, x, labels = [], [], {}
    for j, (name, n) in enumerate(counts.items()):
        for i in range(n):
            cid = f"{name}{i}"
            ids.append(cid)
            x.append(rng.normal(0, 0.1, 4) + 10 * np.eye(4)[j])
            labels[cid] = name
    ids += ["u0", "u1"]  # unlabeled cells take part in the standardisation only
    x += [rng.normal(0, 1, 4), rng.normal(0, 1, 4)]
    return (np.array(ids), np.array(x, dtype=np.float32)), labels


def test_cross_validated_separable_classes_and_left_out_singleton() -> None:
    features, labels = _blobs({"A": 6, "B": 3, "C": 1})
    confusion, per_class = cross_validated(features=features, labels=labels, seed=0)
    assert list(confusion.index) == ["A", "B"] and list(confusion.columns) == ["A", "B"]
    assert np.array_equal(confusion.to_numpy(), [[6, 0], [0, 3]])
    assert per_class.attrs["n_splits"] == 3  # min(5, smallest included class)
    assert per_class.attrs["left_out"] == ["C"]
    rows = per_class.set_index("label")
    assert rows.loc[["A", "B"], "f1"].tolist() == [1.0, 1.0]
    assert rows.loc["C", "support"] == 1 and not rows.loc["C", "included"]
    assert math.isnan(rows.loc["C", "precision"])


def test_cross_validated_confusion_counts_every_included_label() -> None:
    features, labels = _blobs({"A": 12, "B": 8})
    ids, x = features
    x = x.copy()
    x[list(ids).index("A0")] = x[list(ids).index("B0")]  # one A cell looks like B
    confusion, per_class = cross_validated(features=(ids, x), labels=labels, seed=1)
    assert per_class.attrs["n_splits"] == 5
    assert confusion.to_numpy().sum() == 20 and confusion.loc["A"].sum() == 12
    assert confusion.loc["A", "B"] >= 1


def test_cross_validated_needs_two_classes_with_two_labels() -> None:
    features, labels = _blobs({"A": 5, "B": 1})
    need = r"at least 2 classes with >= 2 labels each; labels per class: "
    with pytest.raises(NotTrainedError, match=need + r"\{'A': 5, 'B': 1\}"):
        cross_validated(features=features, labels=labels)
    with pytest.raises(NotTrainedError, match=need + "none yet"):
        cross_validated(features=features, labels={})
    with pytest.raises(ConfigError, match="give a project, or both features and labels"):
        cross_validated(features=features)


def test_cross_validated_labeled_cell_without_features() -> None:
    features, labels = _blobs({"A": 3, "B": 3})
    with pytest.raises(DataError, match=r"1 labeled cell without features.*'zz'"):
        cross_validated(features=features, labels={**labels, "zz": "A"})


# ---------------------------------------------------------------- end to end
@pytest.fixture
def project(tmp_path: Path, small_project: Path):
    """A private copy of the shared 600-cell demo project (created once per session)."""
    from labeling.project import open_project

    path = shutil.copytree(small_project, tmp_path / "p")
    proj = open_project(path)
    yield proj
    proj.close()


def _label_like_the_loop(project, rng: np.random.Generator) -> int:
    """A random round, a round of rare cells and one CLI pseudo-label; returns labels given."""
    truth = project.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    random_ids = rng.choice(truth.index.to_numpy(), 80, replace=False)
    rare = truth[truth.isin(["mitotic", "apoptotic", "micronucleated"])].index
    rare = [c for c in rare if c not in set(random_ids)][:8]
    store = project.store
    for ids, sub in ((random_ids, "random"), (rare, "rare")):
        round_id = store.start_round("ann", "discover", None, len(ids))
        store.lease([{"cell_id": str(c), "sub_strategy": sub} for c in ids], "ann", round_id)
        store.submit({str(c): truth[c] for c in ids}, "ann", "batch")
    free = next(c for c in truth.index if c not in set(random_ids) | set(rare))
    store.submit({free: BAD_SEGMENTATION}, "ann", "cli")
    return len(random_ids) + len(rare) + 1


def test_write_report_says_when_prevalence_rests_on_few_random_cells(project, tmp_path):
    truth = project.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    ids = [str(c) for c in truth.index[:12]]
    round_id = project.store.start_round("ann", "discover", None, len(ids))
    project.store.lease([{"cell_id": c, "sub_strategy": "random"} for c in ids], "ann", round_id)
    project.store.submit({c: truth[c] for c in ids}, "ann", "batch")
    write_report(project, tmp_path / "out")
    notes = (tmp_path / "out" / "notes.txt").read_text()
    assert "prevalence rests on 12 random cells so far" in notes
    assert (pd.read_csv(tmp_path / "out" / "prevalence.csv")["n_slice"] == 12).all()
    curves = pd.read_csv(tmp_path / "out" / "discovery.csv")  # no random curve from 12 cells
    assert "expected_random" not in curves.columns and len(curves) > 0
    chance = summary_text(tmp_path / "out").splitlines()[1]  # led by the upper end alone
    high = json.loads((tmp_path / "out" / "stopping.json").read_text())["p_new_class_high"]
    assert chance.startswith(f"Chance that the next cell is of a class not seen yet: at most "
                             f"{100 * high:.1f}% (the upper end") and "only 12 random cells" in chance  # fmt: skip


def test_write_report_on_a_new_project_skips_what_needs_labels(project, tmp_path: Path) -> None:
    files = write_report(project, tmp_path / "out")
    names = {f.name for f in files}
    assert names == {"counts.csv", "rounds.csv", "stopping.json", "notes.txt"}
    notes = (tmp_path / "out" / "notes.txt").read_text()
    assert "no labels yet" in notes and "cross-validation skipped" in notes
    assert json.loads((tmp_path / "out" / "stopping.json").read_text())["n_labels"] == 0
    text = summary_text(tmp_path / "out")
    assert text.startswith("No labels yet") and "cross-validation skipped" in text


def test_write_report_end_to_end(project, tmp_path: Path) -> None:
    n_given = _label_like_the_loop(project, np.random.default_rng(0))
    out = tmp_path / "out"
    files = write_report(project, out)
    expected = {
        "counts.csv",
        "rounds.csv",
        "stopping.json",
        "discovery.csv",
        "discovery.png",
        "prevalence.csv",
        "confusion.csv",
        "per_class.csv",
        "confusion.png",
        "notes.txt",
    }
    assert {f.name for f in files} == expected and all(f.exists() for f in files)
    for png in ("discovery.png", "confusion.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stop = json.loads((out / "stopping.json").read_text())
    assert stop["n_labels"] == n_given and stop["n_random"] == 80
    curves = pd.read_csv(out / "discovery.csv")
    n_classes = curves["label"].nunique()
    assert len(curves) == n_given * n_classes and curves["n_labeled"].max() == n_given
    assert {"expected_random", "expected_low", "expected_high"} <= set(curves.columns)
    final = curves[curves["n_labeled"] == n_given].set_index("label")["n_found"]
    truth_now = pd.Series(project.store.current_labels()).value_counts()
    assert final.sort_index().to_dict() == truth_now.sort_index().to_dict()
    prev = pd.read_csv(out / "prevalence.csv")
    assert (prev["n_slice"] == 80).all() and prev["n_random"].sum() == 80
    assert (prev["low"] <= prev["estimate"]).all() and (prev["estimate"] <= prev["high"]).all()
    confusion = pd.read_csv(out / "confusion.csv", index_col=0)
    per_class = pd.read_csv(out / "per_class.csv")
    assert confusion.to_numpy().sum() == per_class.loc[per_class["included"], "support"].sum()
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["n_labels"].sum() == n_given
    lines = summary_text(out).splitlines()  # what `phenoscout report` prints
    assert lines[0].startswith(f"{n_given} labels, {stop['n_classes']} classes found")
    assert "from 80 random cells" in lines[1]
    rows = {ln.split()[0]: ln.split() for ln in lines[3 : 3 + len(truth_now)]}
    for label, n in truth_now.items():  # a row per class: its labels and cross-validated F1
        assert int(rows[label][1]) == n
        f1 = per_class.set_index("label").loc[label, "f1"]
        assert rows[label][-1] == f"{f1:.3f}"
    assert lines[-1].startswith("cross-validation: ")


# ---------------------------------------------------------------- predictions over the screen
def _label_two_rounds(project) -> None:
    from labeling.loop import next_batch, submit_labels

    truth = project.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    for _ in range(2):
        batch = next_batch(project, 20, annotator="ann")
        submit_labels(project, {b["cell_id"]: truth[b["cell_id"]] for b in batch}, "ann")


def test_predicted_distribution_counts_every_cell_once(project) -> None:
    from labeling.loop import fit_head
    from labeling.reports.report import predicted_distribution

    with pytest.raises(NotTrainedError, match="at least 2 classes"):
        predicted_distribution(project)
    _label_two_rounds(project)
    dist = predicted_distribution(project)
    head = fit_head(project)
    assert set(dist["label"]) == set(head.classes)
    assert dist["n_cells"].sum() == 600 and dist["fraction"].sum() == pytest.approx(1.0)
    assert dist["n_cells"].is_monotonic_decreasing
    argmax = pd.Series(np.asarray(head.classes)[head.proba.argmax(axis=1)]).value_counts()
    assert dict(zip(dist["label"], dist["n_cells"])) == {
        c: int(argmax.get(c, 0)) for c in head.classes
    }


def test_well_fractions_per_well_with_z_against_negative_controls(project) -> None:
    from labeling.reports.report import well_fractions

    _label_two_rounds(project)
    wells = well_fractions(project)
    assert list(wells.columns) == [
        "plate", "well", "label", "n_cells", "n_well", "fraction", "z", "n_controls"
    ]  # fmt: skip
    per_well = wells.groupby(["plate", "well"])
    assert per_well["fraction"].sum().to_numpy() == pytest.approx(1.0)
    assert per_well["n_cells"].sum().sum() == 600
    cells = project.cells(columns=["plate", "well", "control"]).drop_duplicates()
    controls = cells[cells["control"] == "negative"][["plate", "well"]]
    ctrl = wells.merge(controls, on=["plate", "well"])
    # over the control wells themselves, z has mean 0 per class (one control well per plate here,
    # so each plate is compared with the controls of both plates)
    assert ctrl.groupby("label")["z"].mean().abs().max() < 1e-9
    assert np.isfinite(wells["z"]).all()
    assert (wells["n_controls"] == len(controls)).all()  # 1 per plate: all plates' controls


def test_negative_controls_in_any_spelling_or_a_note_when_none(project, monkeypatch) -> None:
    from labeling.predictions import control_note, is_negative
    from labeling.reports.report import well_fractions

    values = pd.Series(["Negative", " NEG_CTRL", "neg", "positive", "DMSO", None])
    assert is_negative(values).tolist() == [True, True, True, False, False, False]
    _label_two_rounds(project)
    cells = project.cells()
    assert control_note(project) is None
    spelled = cells.assign(control=cells["control"].replace({"negative": "Negative"}))
    monkeypatch.setattr(type(project), "cells", lambda self, columns=None: spelled)
    assert np.isfinite(well_fractions(project)["z"]).all()  # "Negative" counts
    none = cells.assign(control=cells["control"].replace({"negative": "ctrl"}))
    monkeypatch.setattr(type(project), "cells", lambda self, columns=None: none)
    assert well_fractions(project)["z"].isna().all()
    note = control_note(project)
    assert note is not None and "no negative controls" in note and "'ctrl'" in note


def test_a_part_added_without_plates_is_a_plate_of_its_own_per_well(project, monkeypatch):
    from labeling.reports.report import well_fractions

    _label_two_rounds(project)
    cells = project.cells()
    last = cells["plate"] == cells["plate"].iloc[-1]  # as if added later, without a plate
    moved = cells.assign(part=np.where(last, 1, 0), plate=cells["plate"].where(~last))
    monkeypatch.setattr(type(project), "cells", lambda self, columns=None: moved)
    parts = [{"part": 0, "root": "/data/screen"}, {"part": 1, "root": "/data/extra_wells"}]
    monkeypatch.setattr("datasets.cells.read_parts", lambda path: parts)
    wells = well_fractions(project)
    assert wells.groupby(["plate", "well"])["n_well"].first().sum() == len(cells)  # none lost
    assert "extra_wells" in set(wells["plate"]) and wells.attrs["n_without_well"] == 0


def test_well_fractions_needs_plate_and_well(project, monkeypatch) -> None:
    from labeling.reports.report import well_fractions

    cells = project.cells()
    monkeypatch.setattr(
        type(project), "cells", lambda self, columns=None: cells.drop(columns=["plate", "well"])
    )
    with pytest.raises(DataError, match="no plate and well column"):
        well_fractions(project)


def test_discovery_panels_count_cells_in_whole_numbers() -> None:
    from labeling.reports.plots import class_panels, style_panel

    fig, axes = class_panels(1)
    ax = axes.flat[0]
    ax.plot([0, 24, 48], [0, 1, 2])
    style_panel(ax, "rare (0.1%)")
    ticks = [t for t in ax.get_yticks() if 0 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks)
    fig.clf()


def test_long_class_names_are_cut_in_figures(monkeypatch, tmp_path) -> None:
    from labeling.reports import report
    from labeling.reports.plots import NAME_CHARS, short

    assert short("x" * 200) == "x" * (NAME_CHARS - 1) + "…" and short("G1") == "G1"
    drawn = {}
    monkeypatch.setattr(report, "save_figure", lambda fig, out: drawn.setdefault("fig", fig))
    names = ["y" * 200, "G1"]
    report.plot_confusion(pd.DataFrame([[3, 1], [0, 4]], index=names, columns=names), tmp_path)
    ax = drawn["fig"].axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert ticks == [short(n) for n in names] * 2 and max(map(len, ticks)) == NAME_CHARS

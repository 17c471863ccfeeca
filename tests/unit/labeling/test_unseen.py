"""The one unseen-class estimate and discover's hand-over from exploration to entropy."""

from __future__ import annotations

import numpy as np
import pytest

from labeling.strategies import Selection, select, update_state
from labeling.strategies.arms import RoundContext, class_need, rank_balanced_margin
from labeling.strategies.discover import HANDOVER, n_explore
from labeling.strategies.unseen import unseen_class_chance
from tests.unit.labeling.test_strategies import blob_pool


def test_good_turing_on_the_slice_with_estys_interval():
    est = unseen_class_chance(["A", "A", "A", "B", "C", "D", "D", "unsure"], pseudo=["unsure"])
    assert (est.n, est.n1, est.n2) == (8, 2, 1)
    assert est.p == pytest.approx(2 / 8)
    se = np.sqrt(2 * (1 - 2 / 8) + 2 * 1) / 8
    assert est.low == pytest.approx(max(0.0, 0.25 - 1.959964 * se), abs=1e-5)
    assert est.high == pytest.approx(0.25 + 1.959964 * se, abs=1e-5)
    assert unseen_class_chance({"A": 6, "B": 2, "C": 1}) == unseen_class_chance(
        ["A"] * 6 + ["B"] * 2 + ["C"]
    )


def test_no_singleton_still_leaves_an_upper_bound_and_an_empty_slice_knows_nothing():
    est = unseen_class_chance({"A": 30, "B": 30})
    assert est.p == 0.0 and est.low == 0.0
    assert est.high == pytest.approx(1 - 0.05 ** (1 / 60))
    empty = unseen_class_chance([])
    assert empty.p is None and (empty.low, empty.high) == (0.0, 1.0)


def test_a_slice_of_singletons_leaves_a_lower_bound_below_one():
    # one random cell (the first batch of 24) or two of different classes: p = 1 but the
    # share could be far lower; Esty's variance is 0 there, the exact bound is alpha^(1/n)
    one = unseen_class_chance(["A"])
    assert one.p == 1.0 and one.high == 1.0
    assert one.low == pytest.approx(0.05)
    two = unseen_class_chance(["A", "B"])
    assert two.low == pytest.approx(0.05**0.5)
    # 9 singletons and a class of 3 in 12 cells: the exact lower bound is below Esty's
    nine = unseen_class_chance(list("ABCDEFGHI") + ["J"] * 3)
    se = np.sqrt(9 * (1 - 0.75)) / 12
    assert nine.low < 0.75 - 1.959964 * se and nine.low == pytest.approx(0.4727, abs=1e-3)


def test_exploration_slots_shrink_as_the_unseen_chance_falls():
    many = unseen_class_chance(["A", "B", "C", "D"])  # every class a singleton
    none = unseen_class_chance({"A": 200, "B": 200})
    assert n_explore(9, many) == 9
    assert n_explore(9, none) == 1  # one exploration cell per batch stays
    assert n_explore(9, unseen_class_chance([])) == 9
    # the estimate, not its upper end, hands over: 2 singletons in 40 cells -> p = 0.05
    few = unseen_class_chance(["A"] * 20 + ["B"] * 18 + ["C", "D"])
    assert n_explore(9, few) == 1 and few.high > 0.1


def _with_slice(slice_counts: dict) -> dict:
    _, state = select("discover", blob_pool(True), 3, np.random.default_rng(0), {})
    state["slice"] = dict(slice_counts)
    return state


def test_discover_hands_over_to_entropy_once_no_class_is_unseen():
    pool = blob_pool(True)
    sel, state = select("discover", pool, 10, np.random.default_rng(0), _with_slice({}))
    assert HANDOVER not in sel.strategies, "an empty slice: everything explores"
    sel, state = select(
        "discover", pool, 10, np.random.default_rng(0), _with_slice({"A": 40, "B": 30, "C": 20})
    )
    assert sel.strategies.count(HANDOVER) == 8
    assert sel.strategies.count("random") == 1
    assert state["unseen"]["p"] == 0.0


def test_the_random_slice_grows_to_the_unseen_class_chance_at_most_half_the_batch():
    pool = blob_pool(True)
    # 3 singletons among 10 random cells: p = 0.3 > the 5% fraction
    state = _with_slice({"A": 4, "B": 3, "C": 1, "D": 1, "E": 1})
    sel, state = select("discover", pool, 10, np.random.default_rng(0), state)
    assert state["unseen"]["p"] == pytest.approx(0.3)
    assert sel.strategies.count("random") == 3
    every = _with_slice({c: 1 for c in "ABCDEF"})  # p = 1: still half the batch
    assert (
        select("discover", pool, 10, np.random.default_rng(0), every)[0].strategies.count("random")
        == 5
    )


def test_the_random_slice_is_counted_in_the_state_and_not_rewarded():
    sel = Selection(["x1", "x2", "x3"], ["random", "random", HANDOVER], [0.0] * 3)
    given = {"x1": "A", "x2": "B", "x3": "C"}
    state = update_state("discover", {}, sel, given, {}, {"A"})
    assert state["slice"] == {"A": 1, "B": 1}
    assert "random" not in state["arms"] and HANDOVER not in state["arms"]


def test_balanced_margin_weighs_classes_with_few_labels_up():
    need = class_need({"A": 100, "B": 25, "C": 1}, ("A", "B", "C", "D"))
    np.testing.assert_allclose(need, [1.0, 2.0, 10.0, 10.0])
    pool = blob_pool(True)  # A 5 labels, B 4, C 1
    proba = np.zeros_like(pool.proba)
    proba[:, 0], proba[:, 1] = 0.5, 0.5  # A vs B: the smallest margin everywhere...
    proba[60:70] = [0.45, 0.0, 0.55]  # ...but these ten border the class with one label
    pool.proba = proba
    ranked = rank_balanced_margin(RoundContext(pool, np.random.default_rng(0)), 10)
    top = ranked.idx[np.argsort(-ranked.scores, kind="stable")[:10]]
    assert sorted(top.tolist()) == list(range(60, 70))
    assert set(ranked.idx[:10].tolist()) & set(range(60, 70)), "ranked batch keeps them first"


def test_a_version_1_state_keeps_its_arms_and_starts_a_slice():
    _, state = select("discover", blob_pool(True), 3, np.random.default_rng(0), {})
    old = {k: v for k, v in state.items() if k not in ("slice", "unseen")}
    old["version"] = 1
    old["arms"]["novelty"]["alpha"] = 42.0
    _, new = select("discover", blob_pool(True), 3, np.random.default_rng(0), old)
    assert new["version"] == 2 and new["slice"] == {}
    assert new["arms"]["novelty"]["alpha"] == 42.0

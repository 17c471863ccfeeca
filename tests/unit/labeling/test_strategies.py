"""Query strategies on hand-made arrays: known answers, invariants, the discover bandit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from labeling.errors import ConfigError, DataError, PoolExhaustedError
from labeling.strategies import (
    NEAR_DUPLICATE_COSINE,
    STRATEGIES,
    Pool,
    Selection,
    build_index,
    more_like_this,
    select,
    update_state,
)
from labeling.strategies.measures import uncertainty
from labeling.strategies.pool import rank_desc

# ---------------------------------------------------------------- helpers


def make_pool(features, labels, proba=None, classes=(), ids=None, n_clusters=None):
    """A pool over ``features``; ``labels[i]`` None means unlabeled."""
    features = np.asarray(features, dtype=np.float32)
    n = len(features)
    labels = np.asarray(labels, dtype=object)
    ids = np.asarray(ids if ids is not None else [f"c{i:04d}" for i in range(n)])
    index = build_index(features, np.random.default_rng(0), n_clusters=n_clusters)
    proba = None if proba is None else np.asarray(proba, dtype=np.float32)
    return Pool(ids, features, labels != None, labels, proba, tuple(classes), index)  # noqa: E711


def blobs(sizes=(50, 40, 10), d=6, spread=1.0, seed=0):
    """Blobs 10 apart along the first axes; returns (features, blob of each cell).

    Keep ``spread`` near 1: tighter blobs far from the origin are near-copies by cosine.
    """
    rng = np.random.default_rng(seed)
    xs, which = [], []
    for b, n in enumerate(sizes):
        centre = np.zeros(d)
        centre[b] = 10.0
        xs.append(centre + spread * rng.normal(size=(n, d)))
        which += [b] * n
    return np.concatenate(xs), np.asarray(which)


def softmax_proba(n, k, seed=0):
    logits = 2.0 * np.random.default_rng(seed).normal(size=(n, k))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def blob_pool(with_model: bool) -> Pool:
    """100 cells in blobs of 50/40/10; 5 + 4 + 1 of them labeled A/B/C."""
    x, which = blobs()
    labels = np.full(len(x), None, dtype=object)
    for b, name, n_lab in ((0, "A", 5), (1, "B", 4), (2, "C", 1)):
        labels[np.flatnonzero(which == b)[:n_lab]] = name
    proba = softmax_proba(len(x), 3) if with_model else None
    return make_pool(x, labels, proba, ("A", "B", "C") if with_model else (), n_clusters=10)


def cosines(pool: Pool, sel: Selection) -> np.ndarray:
    pos = [int(np.flatnonzero(pool.cell_ids == c)[0]) for c in sel.cell_ids]
    f = pool.features[pos].astype(np.float64)
    u = f / np.linalg.norm(f, axis=1, keepdims=True)
    sims = u @ u.T
    return sims[~np.eye(len(pos), dtype=bool)]


# ---------------------------------------------------------------- known answers

# Unlabeled cells at unit vectors, both labeled cells at the origin: every unlabeled cell is
# equally far from the labels and from each other, so ranked batch mode orders by uncertainty.
UNCERTAIN_ROWS = {
    "sure": [0.90, 0.05, 0.05, 0.00],
    "close_top_two": [0.50, 0.48, 0.02, 0.00],  # smallest margin
    "low_top": [0.38, 0.31, 0.31, 0.00],  # smallest top probability
    "flat": [0.40, 0.20, 0.20, 0.20],  # highest entropy
}


def uncertain_pool() -> Pool:
    names = list(UNCERTAIN_ROWS)
    x = np.vstack([np.zeros((2, 4)), np.eye(4)])
    proba = np.vstack([[[1, 0, 0, 0], [0, 1, 0, 0]], list(UNCERTAIN_ROWS.values())])
    labels = ["a", "b"] + [None] * 4
    return make_pool(x, labels, proba, ("a", "b", "c", "d"), ids=["l0", "l1", *names])


@pytest.mark.parametrize(
    ("name", "expected"),
    [("margin", "close_top_two"), ("least_confidence", "low_top"), ("entropy", "flat")],
)
def test_uncertainty_strategies_pick_the_known_row(name, expected):
    sel, _ = select(name, uncertain_pool(), 1, np.random.default_rng(0), {})
    assert sel.cell_ids == [expected] and sel.strategies == [name]


def test_margin_ranks_the_whole_batch_by_margin():
    sel, _ = select("margin", uncertain_pool(), 4, np.random.default_rng(0), {})
    assert sel.cell_ids == ["close_top_two", "low_top", "flat", "sure"]


def test_modal_measures_match_their_definitions():
    p = np.asarray(list(UNCERTAIN_ROWS.values()), dtype=np.float32)
    top2 = np.sort(p, axis=1)[:, ::-1][:, :2]
    np.testing.assert_allclose(uncertainty("margin", p), 1 - (top2[:, 0] - top2[:, 1]), atol=1e-6)
    np.testing.assert_allclose(uncertainty("least_confidence", p), 1 - p.max(axis=1), atol=1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(p * np.log(p), axis=1) / np.log(4)
    np.testing.assert_allclose(uncertainty("entropy", p), h, atol=1e-5)


def test_equal_scores_are_broken_by_cell_id():
    idx = rank_desc(np.array([1.0, 2.0, 2.0, 0.0]), np.arange(4), np.array(["d", "c", "b", "a"]))
    assert idx.tolist() == [2, 1, 0, 3]


def test_novelty_picks_the_far_point():
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(size=(20, 5)), np.full((1, 5), 10.0)])
    labels = ["a"] * 5 + [None] * 16
    sel, _ = select("novelty", make_pool(x, labels), 1, np.random.default_rng(0), {})
    assert sel.cell_ids == ["c0020"]


def test_cluster_coverage_picks_the_centre_of_the_unlabeled_cluster():
    x, which = blobs(sizes=(10, 10, 10), spread=0.2)
    labels = np.full(30, None, dtype=object)
    labels[[0, 10]] = ["A", "B"]
    pool = make_pool(x, labels, n_clusters=3)
    sel, _ = select("cluster_coverage", pool, 1, np.random.default_rng(0), {})
    pos = int(sel.cell_ids[0][1:])
    assert which[pos] == 2
    members = np.flatnonzero(which == 2)
    centre = x[members].mean(axis=0)
    assert pos == members[np.argmin(np.linalg.norm(x[members] - centre, axis=1))]


def test_predicted_rare_picks_the_cell_most_likely_of_the_rare_class():
    x = np.random.default_rng(2).normal(size=(15, 4))
    labels = ["common"] * 10 + ["rare"] + [None] * 4
    p_rare = np.array([0.0] * 11 + [0.10, 0.60, 0.30, 0.05])
    proba = np.stack([1 - p_rare, p_rare], axis=1)
    pool = make_pool(x, labels, proba, ("common", "rare"))
    sel, _ = select("predicted_rare", pool, 2, np.random.default_rng(0), {})
    assert sel.cell_ids == ["c0012", "c0013"]


def test_diversity_cold_start_spreads_over_the_blobs():
    x, which = blobs(sizes=(40, 40, 40), spread=0.2)
    pool = make_pool(x, [None] * 120)
    sel, _ = select("diversity", pool, 3, np.random.default_rng(0), {})
    assert sorted(which[[int(c[1:]) for c in sel.cell_ids]].tolist()) == [0, 1, 2]


def circle_pool() -> Pool:
    """24 points on the unit circle, 15 degrees apart, mirrored exactly about the x axis."""
    half = [(np.cos(np.radians(a)), np.sin(np.radians(a))) for a in range(0, 181, 15)]
    pts = {f"p{a:03d}": xy for a, xy in zip(range(0, 181, 15), half, strict=True)}
    pts.update(
        {
            f"p{360 - a:03d}": (x, -y)
            for a, (x, y) in zip(range(15, 180, 15), half[1:-1], strict=True)
        }
    )
    ids = sorted(pts)
    labels = ["a" if c == "p015" else None for c in ids]
    return make_pool([pts[c] for c in ids], labels, ids=ids)


def test_more_like_this_returns_nearest_unlabeled_cells_closest_first():
    sel = more_like_this(circle_pool(), ["p000"], 3)
    # p015 is labeled; p030 and p330 are equally near, so the smaller id comes first
    assert sel.cell_ids == ["p345", "p030", "p330"]
    assert sel.strategies == ["more_like_this"] * 3
    assert sel.scores[0] > sel.scores[1] == pytest.approx(sel.scores[2])


def test_more_like_this_rejects_unknown_cells_and_empty_queries():
    with pytest.raises(DataError, match=r"cell ids not in the pool: \['nope'\]"):
        more_like_this(circle_pool(), ["nope"], 2)
    with pytest.raises(ConfigError, match="at least one query cell"):
        more_like_this(circle_pool(), [], 2)


# ---------------------------------------------------------------- invariants


@pytest.mark.parametrize("with_model", [True, False], ids=["model", "cold"])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_returns_n_unique_unlabeled_cells_deterministically(name, with_model):
    pool = blob_pool(with_model)
    sel, state = select(name, pool, 8, np.random.default_rng(5), {})
    assert len(sel.cell_ids) == len(set(sel.cell_ids)) == 8
    assert len(sel.strategies) == len(sel.scores) == 8
    assert not set(sel.cell_ids) & set(pool.cell_ids[pool.labeled].tolist())
    assert np.isfinite(sel.scores).all()
    again, state2 = select(name, pool, 8, np.random.default_rng(5), {})
    assert again == sel and state2 == state
    assert (cosines(pool, sel) < NEAR_DUPLICATE_COSINE).all()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_asking_for_more_than_the_unlabeled_pool_raises(name):
    with pytest.raises(
        PoolExhaustedError, match="^pool exhausted: 90 unlabeled cells available, 91 requested$"
    ):
        select(name, blob_pool(True), 91, np.random.default_rng(0), {})


def near_copy_pool() -> Pool:
    """8 directions, 6 scaled copies each (cosine 1 within a direction); 2 cells labeled."""
    dirs = np.random.default_rng(3).normal(size=(8, 6))
    x = np.concatenate([dirs * s for s in (1.0, 1.5, 2.0, 2.5, 3.0, 3.5)])
    labels = np.full(48, None, dtype=object)
    labels[[0, 1]] = ["a", "b"]
    return make_pool(x, labels, softmax_proba(48, 2, seed=4), ("a", "b"))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_batch_never_holds_near_identical_cells(name):
    pool = near_copy_pool()
    sel, _ = select(name, pool, 8, np.random.default_rng(0), {})
    assert (cosines(pool, sel) < NEAR_DUPLICATE_COSINE).all()
    # 8 directions are left: a batch of 9 is cut to 8 distinct cells, never padded with a copy
    short, _ = select(name, pool, 9, np.random.default_rng(0), {})
    assert len(short.cell_ids) == 8 == len(set(short.cell_ids))
    assert (cosines(pool, short) < NEAR_DUPLICATE_COSINE).all()


def test_unknown_strategy_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="unknown strategy 'margn'; did you mean 'margin'"):
        select("margn", blob_pool(True), 3, np.random.default_rng(0), {})
    with pytest.raises(ConfigError, match="batch size 0"):
        select("margin", blob_pool(True), 0, np.random.default_rng(0), {})


def test_pool_rejects_mismatched_shapes():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(DataError, match=r"proba of shape \(4, 3\); expected \(4, 2\)"):
        Pool(
            np.array(list("abcd")),
            x,
            np.zeros(4, bool),
            np.full(4, None),
            np.zeros((4, 3)),
            ("a", "b"),
        )
    index = build_index(np.zeros((5, 2), np.float32), np.random.default_rng(0))
    with pytest.raises(DataError, match="index built on 5 cells but the pool has 4"):
        Pool(np.array(list("abcd")), x, np.zeros(4, bool), np.full(4, None), None, (), index)


def test_build_index_orders_members_by_cluster_then_distance_to_centre():
    x, _ = blobs(sizes=(30, 20, 10))
    ix = build_index(x, np.random.default_rng(0), n_clusters=3)
    assert sorted(ix.sizes.tolist()) == [10, 20, 30] and ix.cluster_start[-1] == 60
    for c in range(3):
        seg = ix.member_order[ix.cluster_start[c] : ix.cluster_start[c + 1]]
        assert (ix.cluster_ids[seg] == c).all()
        d = np.linalg.norm(x[seg] - ix.centroids[c], axis=1)
        assert (np.diff(d) >= -1e-5).all()


# ---------------------------------------------------------------- discover


@pytest.mark.parametrize(("n", "n_random"), [(80, 4), (24, 1), (10, 1), (2, 1)])
def test_discover_keeps_a_random_slice(n, n_random):
    sel, _ = select("discover", blob_pool(True), n, np.random.default_rng(0), {})
    assert sel.strategies.count("random") == n_random


def test_discover_mixes_exploration_and_margin_once_a_model_exists():
    sel, state = select("discover", blob_pool(True), 10, np.random.default_rng(0), {})
    assert "margin" in sel.strategies
    assert {"cluster_coverage", "typical", "novelty", "diversity"} & set(sel.strategies)
    assert sum(state["last_plan"].values()) == 10
    # an exploration arm out of open clusters goes on with novelty's cells
    assert set(sel.strategies) <= set(state["last_plan"]) | {"novelty"}


@pytest.mark.parametrize("labels", ["none", "one_class"])
def test_discover_cold_start_is_a_diverse_batch_without_a_model(labels):
    x, which = blobs(sizes=(40, 40, 40))
    lab = np.full(120, None, dtype=object)
    if labels == "one_class":
        lab[:3] = "A"
    pool = make_pool(x, lab)
    sel, _ = select("discover", pool, 6, np.random.default_rng(0), {})
    assert set(sel.strategies) <= {
        "random",
        "cluster_coverage",
        "typical",
        "diversity",
        "novelty",
        "fill",
    }
    reached = set(which[[int(c[1:]) for c in sel.cell_ids]].tolist())
    assert reached >= ({1, 2} if labels == "one_class" else {0, 1, 2})


def _skewed_state(favourite: str) -> dict:
    _, state = select("discover", blob_pool(True), 3, np.random.default_rng(0), {})
    for arm, stats in state["arms"].items():
        stats["alpha"], stats["beta"] = (100.0, 1.0) if arm == favourite else (1.0, 100.0)
    return state


@pytest.mark.parametrize("favourite", ["margin", "novelty"])
def test_discover_gives_most_slots_to_the_arm_that_paid_off(favourite):
    state = _skewed_state(favourite)
    sel, _ = select("discover", blob_pool(True), 20, np.random.default_rng(0), state)
    assert sel.strategies.count(favourite) >= 14  # of 20: 4 random, 1 forced to each side


def test_update_state_rewards_new_classes_and_disagreements():
    sel = Selection(
        ["x1", "x2", "x3", "x4"], ["novelty", "margin", "cluster_coverage", "random"], [0.0] * 4
    )
    given = {"x1": "Anaphase", "x2": "G1", "x3": "G2"}  # x4 was skipped
    guesses = {"x1": "G1", "x2": "G2", "x3": "G2", "x4": "G1"}
    state = update_state("discover", {}, sel, given, guesses, {"G1", "G2"})
    arms = state["arms"]
    assert arms["novelty"]["reward"] == 1.0  # a new class
    assert arms["margin"]["reward"] == 0.25  # the model guessed wrong
    assert arms["cluster_coverage"]["reward"] == 0.0 and arms["cluster_coverage"]["picked"] == 1
    assert "random" not in arms and state["round"] == 1
    before = update_state("discover", {}, Selection([], [], []), {}, {}, set())["arms"]
    assert arms["novelty"]["alpha"] == before["novelty"]["alpha"] + 1.0
    assert arms["cluster_coverage"]["beta"] == before["cluster_coverage"]["beta"] + 1.0


def test_a_new_class_found_twice_in_one_batch_is_one_reward():
    sel = Selection(["x1", "x2"], ["novelty", "novelty"], [0.0, 0.0])
    state = update_state("discover", {}, sel, {"x1": "M", "x2": "M"}, {}, set())
    assert state["arms"]["novelty"]["reward"] == 1.0


def test_bandit_state_round_trips_through_json():
    pool = blob_pool(True)
    sel, state = select("discover", pool, 10, np.random.default_rng(0), {})
    given = {c: "C" for c in sel.cell_ids}
    state = update_state("discover", state, sel, given, dict.fromkeys(sel.cell_ids, "A"), {"A"})
    loaded = json.loads(json.dumps(state))
    assert loaded == state
    a, _ = select("discover", pool, 10, np.random.default_rng(1), state)
    b, _ = select("discover", pool, 10, np.random.default_rng(1), loaded)
    assert a == b


def test_other_strategies_keep_their_state():
    state = {"note": 1}
    sel, new = select("margin", blob_pool(True), 3, np.random.default_rng(0), state)
    assert new == state
    assert update_state("margin", new, sel, {}, {}, set()) == state


def test_uncertainty_strategies_do_not_load_torch():
    code = (
        "import sys, numpy as np\n"
        "from labeling.strategies.measures import uncertainty, ranked_batch\n"
        "p = np.full((3, 2), 0.5, np.float32); uncertainty('margin', p)\n"
        "ranked_batch('margin', np.eye(3, dtype=np.float32), p, np.zeros((1, 3), np.float32), 2)\n"
        "print(','.join(m for m in ('torch', 'skorch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_cli_help_names_every_strategy():
    from labeling.cli.labeling import STRATEGY_NAMES
    from labeling.strategies.registry import STRATEGIES

    assert sorted(STRATEGY_NAMES) == sorted(STRATEGIES)

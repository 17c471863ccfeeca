"""Fair simulation: one held-out split per seed, paired differences, the peer verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labeling.errors import ConfigError
from labeling.simulate import (
    SimConfig,
    SimData,
    format_summary,
    holdout_split,
    make_split,
    round_up,
    run_one,
    summarise,
)
from labeling.simulate.split import folder_truth


def _truth():
    return np.array(["a"] * 400 + ["b"] * 80 + ["c"] * 8 + ["d"] * 1, dtype=object)


def test_holdout_is_a_quarter_of_every_class_and_the_same_per_seed():
    y = _truth()
    test = holdout_split(y, 0.25, seed=3)
    assert {c: int(test[y == c].sum()) for c in "abcd"} == {"a": 100, "b": 20, "c": 2, "d": 0}
    np.testing.assert_array_equal(test, holdout_split(y, 0.25, seed=3))
    assert not np.array_equal(test, holdout_split(y, 0.25, seed=4))


def test_holdout_by_group_never_splits_a_group_nor_takes_a_whole_class():
    rng = np.random.default_rng(0)
    y = np.array(["a"] * 300 + ["b"] * 60 + ["c"] * 12, dtype=object)
    groups = np.array([f"movie{g}" for g in rng.integers(0, 30, len(y))], dtype=object)
    test = holdout_split(y, 0.25, seed=1, groups=groups)
    for g in np.unique(groups):
        assert len(set(test[groups == g].tolist())) == 1, f"group {g} was split"
    for c in "abc":
        share = test[y == c].mean()
        assert 0 < share < 1, (c, share)
    assert 0.15 < test[y == "a"].mean() < 0.35


def _blobs(n_per=(300, 100, 6), seed=0):
    rng = np.random.default_rng(seed)
    names = "abc"
    x = np.vstack(
        [rng.normal(0.0, 1.0, size=(m, 8)) + 4 * np.eye(8)[k] for k, m in enumerate(n_per)]
    )
    y = np.concatenate([[names[k]] * m for k, m in enumerate(n_per)]).astype(object)
    ids = np.array([f"c{i:04d}" for i in range(len(y))])
    return SimData(ids, x.astype(np.float32), y)


def test_every_strategy_of_a_seed_is_scored_on_the_same_held_out_cells():
    data = _blobs((60, 30, 6))
    cfg = SimConfig(strategies=("random", "margin"), budget=80, batch_size=8, seeds=1)
    split = make_split(data, cfg, seed=0)
    assert not set(split.pool) & set(split.test)
    rows = [run_one(data, s, 0, cfg, split)[1] for s in cfg.strategies]
    assert {r["n_test"] for r in rows} == {len(split.test)}
    assert all(r["n_pool"] + r["n_test"] == len(data.truth) for r in rows)
    # every pooled cell gets labeled, the rare class's too: the held-out cells still score it
    assert all(r["budget"] == r["n_pool"] for r in rows)
    assert all(r["macro_f1"] > 0.9 for r in rows), rows


def test_a_pool_of_near_copies_is_labeled_to_the_end_in_shorter_batches():
    """Cells that are copies of each other (cosine 1) cannot share a batch; with a
    budget larger than the pool the run still labels every cell instead of stopping."""
    base = _blobs((10, 6, 4))  # 20 distinct cells, 6 copies of each: under 24 per batch
    x = np.vstack([base.features] * 6)
    y = np.concatenate([base.truth] * 6)
    data = SimData(np.array([f"c{i:04d}" for i in range(len(y))]), x, y)
    for strategy in ("random", "discover"):
        cfg = SimConfig(strategies=(strategy,), budget=1000, batch_size=24, seeds=1)
        split = make_split(data, cfg, seed=0)
        _, summary, _ = run_one(data, strategy, 0, cfg, split)
        assert summary["budget"] == summary["n_pool"] == len(split.pool)


def test_a_run_records_what_found_each_class_and_when():
    data = _blobs((60, 30, 6))
    cfg = SimConfig(strategies=("discover",), budget=40, batch_size=8, seeds=1)
    split = make_split(data, cfg, seed=0)
    curves, summary, found = run_one(data, "discover", 0, cfg, split)
    curve = pd.DataFrame(curves)
    first = curve[curve["n_found"] > 0].groupby("label")["n_labeled"].min().to_dict()
    assert {f["label"]: f["found_at"] for f in found} == first  # as the curves say
    assert [f["found_at"] for f in found] == sorted(f["found_at"] for f in found)
    assert max(first.values()) == summary["labels_to_all_classes"]
    arms = {"random", "cluster_coverage", "typical", "diversity", "novelty", "margin", "entropy",
            "predicted_rare", "more_like_this"}  # fmt: skip
    assert {f["found_by"] for f in found} <= arms
    # the unseen-class estimate rests on at least one random cell per batch (5 batches of 8)
    assert 5 <= summary["random_slice"] < 40 and 0 < summary["unseen_high"] <= 1
    assert "random_slice" not in run_one(data, "margin", 0, cfg, split)[1]


def _summary(need, f1):
    rows = []
    for strategy in need:
        for seed, (n, f) in enumerate(zip(need[strategy], f1[strategy], strict=True)):
            rows.append(dict(strategy=strategy, seed=seed, budget=100, labels_to_all_classes=n,
                             macro_f1=f))  # fmt: skip
    out = pd.DataFrame(rows)
    out["labels_to_all_classes"] = out["labels_to_all_classes"].astype("Int64")
    return out


def test_summarise_pairs_by_seed_and_gives_the_verdict():
    need = {
        "discover": [20, 30, 20, 30],
        "random": [80, None, 90, 70],
        "margin": [40, 50, 30, 40],
        "entropy": [30, 60, 40, 50],
    }
    f1 = {
        "discover": [0.80, 0.70, 0.75, 0.85],
        "random": [0.70, 0.60, 0.65, 0.75],
        "margin": [0.81, 0.69, 0.77, 0.86],
        "entropy": [0.60, 0.60, 0.60, 0.60],
    }
    table, verdict = summarise(_summary(need, f1), np.array([80, 90, 100, 110]), 10)
    rows = table.set_index("strategy")
    assert rows.loc["random", "runs_all"] == 3
    assert rows.loc["random", "labels_to_all"] == 85  # the miss counts as budget + one batch
    assert rows.loc["margin", "d_f1"] == pytest.approx(-0.0075)  # paired mean
    assert rows.loc["margin", "d_f1_ci"] > 0
    assert verdict["random_orderings"] == 100 and verdict["labels_goal"] == 50
    assert verdict["best_other"] == "margin"
    assert verdict["labels_ok"] and verdict["f1_ok"] and verdict["goal_met"]


def test_summarise_says_no_when_discover_is_behind_margin():
    need = {"discover": [50, 50], "random": [90, 90], "margin": [30, 30], "entropy": [60, 60]}
    f1 = {"discover": [0.5, 0.5], "random": [0.5, 0.5], "margin": [0.6, 0.6], "entropy": [0.5, 0.5]}
    _, verdict = summarise(_summary(need, f1), np.array([100]), 10)
    assert not verdict["labels_ok"] and not verdict["f1_ok"] and not verdict["goal_met"]


def test_a_median_run_that_never_found_every_class_reads_more_than_the_budget():
    need = {"discover": [None, None, 30], "margin": [None, None, None], "random": [90, None, 80]}
    f1 = {"discover": [0.5] * 3, "margin": [0.5] * 3, "random": [0.5] * 3}
    table, verdict = summarise(_summary(need, f1), np.array([100]), 10)
    rows = table.set_index("strategy")
    assert rows["labels_censored"].tolist() == [True, True, False]
    assert not verdict["labels_ok"]  # discover did not find them all: not ahead of anyone
    lines = format_summary(table, verdict).splitlines()
    assert lines[1].split()[:4] == ["discover", "3", "1/3", ">100"]
    assert lines[2].split()[:4] == ["margin", "3", "0/3", ">100"]
    assert lines[3].split()[:4] == ["random", "3", "2/3", "90"]
    assert any("never saw every class counts as the budget plus one batch" in x for x in lines)


def test_class_folders_are_the_truth_only_when_every_crop_is_one_folder_deep():
    src = np.array(["G1/a.tif", "G2/b.tif", "G1\\c.tif"], dtype=object)
    assert folder_truth(src).tolist() == ["G1", "G2", "G1"]
    assert folder_truth(np.array(["G1/a.tif", "b.tif"], dtype=object)) is None  # one at the root
    assert folder_truth(np.array(["P1/A01/a.tif", "P1/A02/b.tif"], dtype=object)) is None
    assert folder_truth(np.array(["G1/a.tif", "G1/b.tif"], dtype=object)) is None  # one class


def test_round_up_to_whole_batches():
    assert round_up(85, 10) == 90 and round_up(80, 10) == 80 and round_up(42.5, 10) == 50


def test_config_rejects_a_bad_holdout_and_pattern():
    with pytest.raises(ConfigError, match="held-out"):
        SimConfig(holdout=1.0)
    with pytest.raises(ConfigError, match="group pattern"):
        SimConfig(group_pattern="(")
    with pytest.raises(ConfigError, match="smaller than one batch of 24"):
        SimConfig(budget=10, batch_size=24)


def test_cli_prints_the_peer_table_and_caches_per_ingest_option(
    tmp_path, small_demo, capsys, monkeypatch
):
    from datasets.config import IngestConfig
    from labeling.cli.commands import main
    from labeling.simulate import _cache_key

    monkeypatch.setenv("PHENOSCOUT_CACHE", str(tmp_path / "cache"))
    args = ["simulate", str(small_demo), "--strategy", "discover,random", "--seeds", "2",
            "--budget", "20", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 0
    assert main([*args, "--crop-size", "48"]) == 0
    out = capsys.readouterr().out
    assert "discover - it: labels" in out and "goal for discover" in out
    assert (tmp_path / "out" / "peers.csv").exists()
    assert len(list((tmp_path / "cache" / "sim").iterdir())) == 2, "one cache per ingest option"
    assert _cache_key(small_demo, IngestConfig()) != _cache_key(small_demo, IngestConfig(scale=1))


def test_a_group_pattern_that_matches_no_path_is_refused():
    from labeling.simulate.split import SimData, _groups

    sources = np.array(["movie1/a.tif", "movie2/b.tif"], dtype=object)
    data = SimData(np.array(["a", "b"]), np.zeros((2, 1), np.float32),
                   np.array(["x", "y"], dtype=object), sources=sources)  # fmt: skip
    assert _groups(data, r"(movie\d)/").tolist() == ["movie1", "movie2"]
    with pytest.raises(ConfigError, match=r"group pattern 'zzz\(\.\)' matches no cell's path"):
        _groups(data, "zzz(.)")

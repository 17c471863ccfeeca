"""The quality table: linear probe CV, grouped folds, few labels, project sets, CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from labeling.errors import ConfigError
from labeling.evaluate import ProbeConfig, few_per_class, probe_scores, quality_table


def _blobs(n=300, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(["a", "b", "c"]), n // 3)
    x = rng.normal(size=(n, d))
    x[:, 0] += 6 * (y == "a")
    x[:, 1] += 6 * (y == "b")
    return x, y


def test_probe_separates_signal_from_noise():
    x, y = _blobs()
    good, f1 = probe_scores(x, y, probe=ProbeConfig(repeats=2))
    noise, _ = probe_scores(
        np.random.default_rng(1).normal(size=x.shape), y, probe=ProbeConfig(repeats=2)
    )
    assert good > 0.9 and f1 > 0.9
    assert noise < 0.5


def test_grouped_folds_stop_group_leakage():
    # each group has its own class and its own offset: ungrouped CV learns the groups
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 10)
    y = np.array(["a", "b"])[rng.integers(0, 2, 30)][groups]
    x = rng.normal(size=(30, 20))[groups] * 3 + rng.normal(size=(300, 20)) * 0.1
    leaky, _ = probe_scores(x, y, probe=ProbeConfig(repeats=2))
    grouped, _ = probe_scores(x, y, groups=groups, probe=ProbeConfig(repeats=2))
    assert leaky > grouped + 0.3 and grouped < 0.65


def test_few_per_class_draws_from_each_class():
    y = np.array(["a"] * 50 + ["b"] * 4)
    rows = few_per_class(np.arange(54), y, 10, seed=0)
    assert (y[rows] == "a").sum() == 10 and (y[rows] == "b").sum() == 4
    assert np.array_equal(few_per_class(np.arange(54), y, None, 0), np.arange(54))


def test_quality_table_rows_and_medians_repeatable():
    x, y = _blobs()
    t1 = quality_table({"m": x, "noise": x[:, 2:]}, y, probe=ProbeConfig(repeats=3))
    t2 = quality_table({"m": x, "noise": x[:, 2:]}, y, probe=ProbeConfig(repeats=3))
    pd.testing.assert_frame_equal(t1, t2)
    assert t1[["features", "labels"]].values.tolist() == [
        ["m", "all"],
        ["m", "10 per class"],
        ["noise", "all"],
        ["noise", "10 per class"],
    ]
    assert (t1.loc[t1.features == "m", "balanced_accuracy"] > 0.85).all()


def test_evaluate_project_cli_prints_and_writes_csv(small_project, tmp_path):
    out = tmp_path / "q"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "labeling.cli.commands",
            "evaluate",
            str(small_project),
            "--out",
            str(out),
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "scored against the truth column" in run.stdout and "morphology" in run.stdout
    table = pd.read_csv(out / "quality.csv")
    assert set(table["labels"]) == {"all", "10 per class"}
    assert table["balanced_accuracy"].between(0, 1).all()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "labeling.cli.commands",
            "evaluate",
            str(small_project),
            "--group",
            "nope",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "no column 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_evaluate_rejects_zero_repeats(small_project):
    from labeling.evaluate import evaluate_project

    with pytest.raises(ConfigError, match="repeats=0"):
        evaluate_project(small_project, repeats=0)


def test_a_truth_column_of_one_class_is_named_as_such(small_project, tmp_path):
    import shutil

    from labeling.evaluate import project_truth

    path = shutil.copytree(small_project, tmp_path / "p")
    cells = pd.read_parquet(path / "cells.parquet")
    cells["truth"] = "only"
    cells.to_parquet(path / "cells.parquet", index=False)
    with pytest.raises(ConfigError, match="the truth column has too few labels to evaluate"):
        project_truth(path)


def test_fold_features_are_learned_from_each_training_fold_only():
    from labeling.evaluate import PerFold, fold_feature_rows

    x, y = _blobs()
    noise = np.random.default_rng(3).normal(size=(len(y), 2))
    seen = []

    def learned(train):
        seen.append(train)
        return x  # stands in for an embedding fine-tuned on y[train]

    table = fold_feature_rows(
        PerFold(noise, learned), y, name="noise+learned", probe=ProbeConfig(2)
    )
    assert len(seen) == 2 * 2 * 5  # label settings x repeats x folds
    for train in seen[:10]:  # all labels: each fold trains on 4/5 of the cells
        assert 0.75 < len(train) / len(y) < 0.85
    for train in seen[10:]:  # 10 per class, drawn from the fold
        assert np.bincount(np.unique(y[train], return_inverse=True)[1]).max() == 10
    assert table["features"].tolist() == ["noise+learned"] * 2
    assert (table["balanced_accuracy"] > 0.85).all() and (table["repeats"] == 2).all()
    alone = quality_table({"noise": noise}, y, probe=ProbeConfig(2))
    assert (alone["balanced_accuracy"] < 0.6).all()


def test_evaluate_finetune_needs_a_pretrained_backbone(small_project):
    from labeling.evaluate import FinetuneEval, evaluate_project

    with pytest.raises(
        ConfigError, match=r"backbone\.pt: no pretrained backbone.*phenoscout train"
    ):
        evaluate_project(small_project, repeats=1, finetune=FinetuneEval("cpu"))

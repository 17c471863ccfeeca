"""Simulated labeling: the product's own benchmark.

A crops folder with ground truth (``labels.csv``) acts as the oracle: a strategy picks a batch,
the true labels of just those cells are revealed, the head is refit, and so on until the budget
is spent. Every strategy of a seed is measured the same way:

* one stratified held-out split (:attr:`SimConfig.holdout` of each class, optionally whole
  groups such as movies, see :attr:`SimConfig.group_pattern`) is kept out of the pool; the
  final head's macro-F1 and balanced accuracy are scored on it, so every strategy of a seed is
  scored on the same cells and a strategy that labels every pooled cell of a rare class is not
  charged for it;
* labels to all classes counts the labels spent until every class of the pool was seen,
  rounded to the batch in which the last one came.

:func:`summarise` turns the per-run rows into the peer table: medians per strategy, the paired
differences (discover minus each other strategy, and minus the best other) with 95% t-intervals
over seeds, random sampling's median over many orderings of the pool rounded up to whole batches,
and whether ``discover`` meets the goal of issue 14.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from datasets.progress import Progress
from labeling.errors import ConfigError
from labeling.simulate.finetune import _DeepTracker
from labeling.simulate.split import (
    N_ORDERINGS,
    SimConfig,
    SimData,
    Split,
    load_sim_data,
    make_split,
    random_labels_to_all,
)
from labeling.simulate.summary import format_summary, summarise

if TYPE_CHECKING:
    from models.trainer.simulation import DeepFeatures


logger = logging.getLogger(__name__)


def run_one(
    data: SimData,
    strategy: str,
    seed: int,
    cfg: SimConfig,
    split: Split,
    deep: DeepFeatures | None = None,
) -> tuple[list[dict], dict, list[dict]]:
    """One simulated labeling run on the pool of ``split``, scored on its held-out cells.

    Returns:
        ``(curve rows, summary row, found rows)``; a curve row per class per round
        (``strategy, seed, n_labeled, label, n_found``); a found row per class, in order of
        discovery (``strategy, seed, label, found_at, found_by``: the labels spent by the end
        of the batch that first held one of its cells, and the sub-strategy that picked it).
    """
    from sklearn.metrics import f1_score

    from labeling.feature_sets import balanced_accuracy
    from labeling.strategies import Pool, select, update_state

    rng = np.random.default_rng([seed, 7919])
    ids = data.cell_ids[split.pool]
    feats = data.features[split.pool]  # what strategies see (the index is built on them)
    head_feats = feats  # what the head is fit on (+ fine-tuned embeddings with --finetune)
    truth = data.truth[split.pool]
    n = len(ids)
    labeled = np.zeros(n, dtype=bool)
    labels = np.full(n, None, dtype=object)
    pos = {c: i for i, c in enumerate(ids)}
    classes = sorted(set(truth.tolist()))
    head, proba = None, None
    tracker = _DeepTracker(data, deep, split, seed) if deep is not None else None
    state: dict[str, Any] = {}
    curves: list[dict] = []
    found: list[dict] = []  # per class, in order of discovery
    found_all_at = None
    round_s: list[float] = []
    budget = min(cfg.budget, n)
    while labeled.sum() < budget:
        t0 = time.perf_counter()
        pool = Pool(
            ids,
            feats,
            labeled.copy(),
            labels.copy(),
            proba,
            tuple(head.classes_) if head is not None else (),
            split.index,
        )
        size = min(cfg.batch_size, budget - int(labeled.sum()))
        selection, state = select(strategy, pool, size, rng, state)
        idx = np.array([pos[c] for c in selection.cell_ids])
        guesses = _guesses(head, proba, idx, ids)
        known_before = set(labels[labeled].tolist())
        spent = int(labeled.sum()) + len(idx)
        for i, why in zip(idx, selection.strategies, strict=True):
            if truth[i] not in known_before and all(f["label"] != truth[i] for f in found):
                found.append(dict(strategy=strategy, seed=seed, label=truth[i],
                                  found_at=spent, found_by=why))  # fmt: skip
        labeled[idx] = True
        labels[idx] = truth[idx]
        given = {ids[i]: truth[i] for i in idx}
        state = update_state(strategy, state, selection, given, guesses, known_before)
        if tracker is not None:
            if len(round_s) % cfg.finetune_every == 0:
                tracker.finetune(labels, labeled)
            head_feats = tracker.choose(labels, labeled)
        head, proba = _refit(labels, labeled, head_feats, seed)
        round_s.append(time.perf_counter() - t0)
        n_labeled = int(labeled.sum())
        counts = {c: int(np.sum(labels[labeled] == c)) for c in classes}
        curves += [
            dict(strategy=strategy, seed=seed, n_labeled=n_labeled, label=c, n_found=k)
            for c, k in counts.items()
        ]
        if found_all_at is None and all(counts.values()):
            found_all_at = n_labeled
    test_feats = data.features[split.test] if tracker is None else tracker.test_features()
    y_test = data.truth[split.test]
    scored = sorted(set(y_test.tolist()))
    pred = _predict(head, test_feats, labels[labeled])
    has_test = len(y_test) > 0
    summary = dict(
        strategy=strategy,
        seed=seed,
        budget=budget,
        n_pool=n,
        n_test=len(y_test),
        n_classes=len(classes),
        classes_found=len(set(labels[labeled].tolist())),
        labels_to_all_classes=found_all_at,
        macro_f1=float(f1_score(y_test, pred, average="macro", labels=scored, zero_division=0))
        if has_test
        else float("nan"),
        balanced_accuracy=balanced_accuracy(list(y_test), list(pred)) if has_test else float("nan"),
        mean_round_seconds=float(np.mean(round_s)),
    )
    if "slice" in state:  # discover: what its unseen-class estimate rests on at the end
        from labeling.strategies.discover import unseen_chance

        unseen = unseen_chance(state)
        summary.update(random_slice=unseen.n, unseen_high=unseen.high)
    if tracker is not None:
        summary.update(tracker.summary())
    return curves, summary, found


def _guesses(head, proba, idx, cell_ids) -> dict[str, str | None]:
    if head is None or proba is None:
        return {cell_ids[i]: None for i in idx}
    top = np.asarray(head.classes_, dtype=object)[proba[idx].argmax(axis=1)]
    return {cell_ids[i]: t for i, t in zip(idx, top)}


def _refit(labels, labeled, features, seed):
    from labeling.head import HeadConfig, SklearnHead

    y = labels[labeled]
    if len(set(y.tolist())) < 2:
        return None, None
    head = SklearnHead(HeadConfig(seed=seed)).fit(features[labeled], list(y))
    return head, head.predict_proba(features)


def _predict(head, features, labeled_truth) -> npt.NDArray[np.object_]:
    if head is None:  # fewer than two classes seen: predict the one seen
        only = labeled_truth[0] if len(labeled_truth) else ""
        return np.full(len(features), only, dtype=object)
    proba = head.predict_proba(features)
    return np.asarray(head.classes_, dtype=object)[proba.argmax(axis=1)]


def simulate(
    data_dir: Path | SimData,
    cfg: SimConfig,
    out_dir: Path,
    *,
    progress: Progress | None = None,
    title: str | None = None,
):  # -> pd.DataFrame
    """Run every strategy x seed on ``data_dir`` (or on already loaded data) and write
    curves.csv, summary.csv, found.csv (what found each class), peers.csv, peers.txt and
    discovery.png. A folder is read with
    ``cfg.ingest`` and cached under ``cfg.cache_dir`` (see :func:`load_sim_data`); ``progress``
    counts runs; ``title`` names the screen in the plot (default the folder's name).

    Returns:
        The summary table (one row per strategy and seed); ``summary.attrs`` holds ``peers``
        (the table of :func:`summarise`), ``verdict`` and ``text`` (what the CLI prints).
    """
    import pandas as pd

    from labeling.reports.plots import plot_discovery
    from labeling.strategies import check_strategy

    for name in cfg.strategies:
        check_strategy(name)
    if isinstance(data_dir, SimData):
        data, name = data_dir, title or "screen"
    else:
        data = load_sim_data(Path(data_dir), cfg.cache_dir, ingest=cfg.ingest)
        name = title or Path(data_dir).name
    deep = None
    if cfg.finetune:
        if data.project_dir is None:
            raise ConfigError("--finetune needs a dataset folder, not a subsample")
        from models.trainer.simulation import DeepFeatures

        deep = DeepFeatures(data.project_dir, seed=0)
        logger.info("fine-tuning every %d round(s)", cfg.finetune_every)
    curves, summaries, found, need = [], [], [], []
    runs = [(s, seed) for seed in range(cfg.seeds) for s in cfg.strategies]
    split, split_seed = None, -1
    for i, (strategy, seed) in enumerate(runs):
        if split is None or split_seed != seed:
            t0 = time.perf_counter()
            split, split_seed = make_split(data, cfg, seed), seed
            logger.info("seed %d: split and index in %.1f s", seed, time.perf_counter() - t0)
            need.append(
                random_labels_to_all(data.truth[split.pool], cfg.batch_size, N_ORDERINGS, seed)
            )
        c, summary, f = run_one(data, strategy, seed, cfg, split, deep)
        curves += c
        found += f
        summaries.append(summary)
        if progress:
            progress(i + 1, len(runs))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves_df = pd.DataFrame(curves, columns=["strategy", "seed", "n_labeled", "label", "n_found"])
    summary_df = pd.DataFrame(summaries)
    order = {s: k for k, s in enumerate(cfg.strategies)}
    summary_df = summary_df.sort_values(
        ["strategy", "seed"], key=lambda col: col.map(order) if col.name == "strategy" else col
    ).reset_index(drop=True)
    summary_df["labels_to_all_classes"] = summary_df["labels_to_all_classes"].astype("Int64")
    from labeling.io.export import csv_bytes  # formula-safe CSV, as every export

    (out_dir / "curves.csv").write_bytes(csv_bytes(curves_df))
    (out_dir / "summary.csv").write_bytes(csv_bytes(summary_df))
    found_cols = ["strategy", "seed", "label", "found_at", "found_by"]
    (out_dir / "found.csv").write_bytes(csv_bytes(pd.DataFrame(found, columns=found_cols)))
    target = cfg.strategies[0]
    table, verdict = summarise(summary_df, np.concatenate(need), cfg.batch_size, target)
    text = format_summary(table, verdict, target)
    (out_dir / "peers.csv").write_bytes(csv_bytes(table))
    (out_dir / "peers.txt").write_text(text + "\n")
    prevalence = pd.Series(data.truth).value_counts(normalize=True).to_dict()
    plot_discovery(
        curves_df,
        prevalence,
        out_dir / "discovery.png",
        title=f"{name}: batch {cfg.batch_size}, {cfg.seeds} seeds",
    )
    summary_df.attrs.update(peers=table, verdict=verdict, text=text)
    return summary_df

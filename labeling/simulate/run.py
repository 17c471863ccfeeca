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

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from datasets.config import IngestConfig
from datasets.errors import DataError
from datasets.progress import Progress
from labeling.errors import ConfigError

if TYPE_CHECKING:
    from labeling.strategies.pool import PoolIndex
    from models.simulation import DeepFeatures

logger = logging.getLogger(__name__)


#: The strategies a user would pick instead of ``discover`` (and random, the reference).
PEERS = ("random", "margin", "entropy")
#: ``discover`` meets the goal when its median macro-F1 is at most this below the best peer's.
F1_TOLERANCE = 0.02
#: Random orderings of each seed's pool behind random sampling's reference.
N_ORDERINGS = 400


@dataclass(frozen=True)
class SimConfig:
    """One simulation run over strategies x seeds."""

    strategies: tuple[str, ...] = ("discover", *PEERS)  # strategies to compare
    budget: int = 300  # labels per run
    batch_size: int = 10  # labels per round
    seeds: int = 10  # runs per strategy (seeds 0..seeds-1); decide with >= 10
    finetune: bool = False  # fine-tune the U-Net between rounds; features chosen as loop's auto
    finetune_every: int = 1  # rounds between fine-tunes with --finetune (the trainer's pace)
    holdout: float = 0.25  # share of each class kept out of the pool for scoring
    group_pattern: str | None = None  # regex on the source path; group 1 names a group

    def __post_init__(self) -> None:
        if self.budget < 1 or self.batch_size < 1 or self.seeds < 1 or self.finetune_every < 1:
            raise ConfigError(
                f"budget {self.budget}, batch size {self.batch_size}, seeds {self.seeds} and "
                f"fine-tune pace {self.finetune_every} must all be >= 1"
            )
        if not self.strategies:
            raise ConfigError("give at least one strategy")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"held-out share {self.holdout} must be between 0 and 1")
        if self.group_pattern is not None:
            try:
                re.compile(self.group_pattern)
            except re.error as exc:
                raise ConfigError(f"group pattern {self.group_pattern!r}: {exc}") from None


@dataclass
class SimData:
    """What a simulation needs of a dataset: standardised features and the oracle."""

    cell_ids: npt.NDArray[np.str_]  # (n,)
    features: npt.NDArray[np.float32]  # (n, d) standardised
    truth: npt.NDArray[np.object_]  # (n,) class names
    project_dir: Path | None = None  # the cached project holding the pixels
    keep: npt.NDArray[np.bool_] | None = None  # (n_cells,) cells of the project with truth
    sources: npt.NDArray[np.object_] | None = None  # (n,) source path of each cell

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.truth.tolist()))

    def subset(self, rows: npt.NDArray[np.bool_]) -> SimData:
        """The cells where ``rows`` is True (for rare-class screens built by subsampling).

        The result has no project: ``--finetune`` needs the whole dataset.
        """
        src = None if self.sources is None else self.sources[rows]
        return SimData(self.cell_ids[rows], self.features[rows], self.truth[rows], None, None, src)


def _cache_key(data_dir: Path, ingest: IngestConfig) -> str:
    """Key of a dataset folder's content and of how it is ingested: the path, every file's size
    and mtime, the feature version and the ingest options."""
    from datasets.morphology import FEATURES_VERSION

    options = json.dumps(dataclasses.asdict(ingest), sort_keys=True, default=str)
    h = hashlib.sha1(f"{data_dir.resolve()}:features-v{FEATURES_VERSION}:{options}".encode())
    for root, _, files in sorted(os.walk(data_dir)):
        for name in sorted(files):
            st = os.stat(os.path.join(root, name))
            h.update(f"{root}/{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    """Where simulation feature caches live (``$PHENOSCOUT_CACHE`` or ~/.cache/phenoscout)."""
    return Path(os.environ.get("PHENOSCOUT_CACHE", Path.home() / ".cache" / "phenoscout"))


def load_sim_data(
    data_dir: Path,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    ingest: IngestConfig | None = None,
) -> SimData:
    """Ingest ``data_dir`` once (as ``phenoscout init`` would, with ``ingest``) into a cached
    project and return its features and truth.

    Raises:
        DataError: when the folder has no ground truth (labels.csv) for its cells.
    """
    from datasets.features import read_features
    from labeling.project import create_project, open_project

    data_dir = Path(data_dir)
    ingest = ingest or IngestConfig()
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such folder")
    key = _cache_key(data_dir, ingest)
    path = (cache_dir or default_cache_dir()) / "sim" / f"{data_dir.name}-{key}"
    if not (path / "labels.db").exists():
        logger.info("first simulation on %s: ingesting into %s", data_dir, path)
        if path.exists():
            import shutil

            shutil.rmtree(path)
        project, _ = create_project(path, data_dir, ingest, progress=progress)
    else:
        project = open_project(path)
    cells = project.cells(columns=["cell_id", "source", "truth"]).set_index("cell_id")
    ids, feats, _ = read_features(project.path)
    project.close()
    cells = cells.reindex(ids)
    y = cells["truth"].to_numpy(dtype=object)
    missing = np.array([t is None or t != t for t in y])  # None or NaN
    if missing.all():
        raise DataError(f"{data_dir}: no labels.csv with ground truth; simulation needs one")
    if missing.any():
        logger.warning("%d cells without ground truth are left out", int(missing.sum()))
    keep = ~missing
    sources = cells["source"].to_numpy(dtype=object)[keep]
    return SimData(ids[keep], standardise(feats[keep]), y[keep], path, keep, sources)


def standardise(features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Zero mean, unit variance per column; constant columns become 0."""
    mu = features.mean(axis=0)
    sd = features.std(axis=0)
    sd[sd == 0] = 1.0
    return ((features - mu) / sd).astype(np.float32)


def _groups(data: SimData, pattern: str | None) -> npt.NDArray[np.object_] | None:
    """Group of each cell: group 1 (or the whole match) of ``pattern`` in its source path."""
    if pattern is None:
        return None
    if data.sources is None:
        raise ConfigError("a group pattern needs the cells' source paths")
    rx = re.compile(pattern)
    out = np.empty(len(data.sources), dtype=object)
    for i, src in enumerate(data.sources):
        m = rx.search(str(src))
        out[i] = (m.group(1) if m.groups() else m.group(0)) if m else str(src)
    return out


def holdout_split(
    truth: Sequence[str] | npt.NDArray[Any],
    fraction: float,
    seed: int,
    groups: Sequence[str] | npt.NDArray[Any] | None = None,
) -> npt.NDArray[np.bool_]:
    """The held-out cells of one seed: ``fraction`` of each class, the same for every strategy.

    Without groups, each class with two or more cells gives ``round(fraction * n)`` of them (at
    least 1, at most n - 1); a class of one cell stays in the pool. With groups (e.g. the movie
    a crop came from), whole groups are held out, class by class from the rarest, until each
    class has about ``fraction`` of its cells held out, never all of them.

    Returns:
        (n,) bool, True for held-out cells.
    """
    y = np.asarray(truth, dtype=object)
    rng = np.random.default_rng([seed, 104729])
    test = np.zeros(len(y), dtype=bool)
    classes, counts = np.unique(y.astype(str), return_counts=True)
    if groups is None:
        for cls, n in zip(classes, counts, strict=True):
            if n < 2:
                continue
            k = int(min(n - 1, max(1, round(fraction * n))))
            members = np.flatnonzero(y == cls)
            test[rng.choice(members, size=k, replace=False)] = True
        return test
    g = np.asarray(groups, dtype=object)
    group_names = np.unique(g.astype(str))
    order = {name: r for r, name in enumerate(rng.permutation(group_names))}
    decided: dict[str, bool] = {}
    for cls in classes[np.argsort(counts, kind="stable")]:
        members = y == cls
        n = int(members.sum())
        want = fraction * n
        held = int((members & test).sum())
        for name in sorted(set(g[members].tolist()), key=lambda s: order[s]):
            if name in decided:
                continue
            in_group = members & (g == name)
            k = int(in_group.sum())
            take = held < want and held + k < n and abs(held + k - want) <= abs(held - want)
            decided[name] = take
            if take:
                test |= g == name
                held = int((members & test).sum())
    return test


def random_labels_to_all(
    truth: Sequence[str] | npt.NDArray[Any],
    batch_size: int,
    n_orderings: int = 2000,
    seed: int = 0,
) -> npt.NDArray[np.int64]:
    """Labels random sampling spends until every class is seen, over random orderings.

    Counted like the simulation: the number labeled after the batch in which the last class was
    first found.

    Returns:
        (n_orderings,) labels needed, one per random ordering of the dataset.
    """
    rng = np.random.default_rng(seed)
    _, codes = np.unique(np.asarray(truth, dtype=str), return_inverse=True)
    out = np.empty(n_orderings, dtype=np.int64)
    for i in range(n_orderings):
        first_seen = np.unique(codes[rng.permutation(len(codes))], return_index=True)[1]
        last = int(first_seen.max()) + 1  # position of the first cell of the last class
        out[i] = min(int(np.ceil(last / batch_size)) * batch_size, len(codes))
    return out


def round_up(value: float, step: int) -> int:
    """``value`` rounded up to a whole number of ``step``s."""
    return int(math.ceil(value / step - 1e-9)) * step


@dataclass
class Split:
    """One seed's pool (what strategies may pick) and held-out cells (what the head is scored
    on), with the pool's index."""

    pool: npt.NDArray[np.int64]  # positions into SimData
    test: npt.NDArray[np.int64]
    index: PoolIndex | None = None


def make_split(data: SimData, cfg: SimConfig, seed: int, build: bool = True) -> Split:
    """The held-out split of ``seed`` and the index over its pool."""
    from labeling.strategies import build_index

    test = holdout_split(data.truth, cfg.holdout, seed, _groups(data, cfg.group_pattern))
    pool, held = np.flatnonzero(~test), np.flatnonzero(test)
    index = build_index(data.features[pool], np.random.default_rng(seed)) if build else None
    return Split(pool, held, index)


def run_one(
    data: SimData,
    strategy: str,
    seed: int,
    cfg: SimConfig,
    split: Split,
    deep: DeepFeatures | None = None,
) -> tuple[list[dict], dict]:
    """One simulated labeling run on the pool of ``split``, scored on its held-out cells.

    Returns:
        ``(curve rows, summary row)``; a curve row per class per round
        (``strategy, seed, n_labeled, label, n_found``).
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score

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
    curves, found_all_at = [], None
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
        balanced_accuracy=float(balanced_accuracy_score(y_test, pred))
        if has_test
        else float("nan"),
        mean_round_seconds=float(np.mean(round_s)),
    )
    if tracker is not None:
        summary.update(tracker.summary())
    return curves, summary


class _DeepTracker:
    """``--finetune``: the trainer's versions and the loop's ``auto`` choice, simulated.

    :meth:`finetune` fine-tunes on the labels so far and re-embeds every cell (a new version,
    which remembers the cells it was trained on); :meth:`choose` picks the head's features as
    ``labeling.feature_sets`` does: morphology alone unless morphology + the label-free backbone
    embedding (cross-validated on all labels) or + a fine-tuned embedding (judged only on the
    labels given after it was trained) wins by ``AUTO_MARGIN`` balanced accuracy.
    """

    def __init__(self, data: SimData, deep: DeepFeatures, split: Split, seed: int) -> None:
        self.data, self.deep, self.split, self.seed = data, deep, split, seed
        self.versions: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]] = []
        self.chosen = data.features  # (n, d) of every cell of data: the set the head uses
        self.name = "morphology"
        self.uses: dict[str, int] = {}

    def finetune(self, labels: np.ndarray, labeled: npt.NDArray[np.bool_]) -> None:
        if len(set(labels[labeled].tolist())) < 2:
            return
        t0 = time.perf_counter()
        ids = self.data.cell_ids[self.split.pool]
        given = {ids[i]: labels[i] for i in np.flatnonzero(labeled)}
        emb = standardise(self.deep.features(given)[self.data.keep])
        self.versions = [*self.versions[-3:], (emb, labeled.copy())]  # the trainer keeps 4
        logger.info(
            "seed %d: fine-tuned on %d labels and re-embedded in %.1f s",
            self.seed,
            len(given),
            time.perf_counter() - t0,
        )

    def choose(self, labels: np.ndarray, labeled: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
        from sklearn.model_selection import StratifiedKFold

        from labeling.feature_sets import (
            AUTO_FOLDS,
            AUTO_MARGIN,
            AUTO_MIN_FRESH,
            AUTO_MIN_PER_CLASS,
            cv_balanced_accuracy,
            fresh_balanced_accuracy,
        )

        morph = self.data.features
        self.chosen, self.name = morph, "morphology"
        y_all = labels[labeled]
        counts = {c: int(np.sum(y_all == c)) for c in set(y_all.tolist())}
        big = [c for c, k in counts.items() if k >= AUTO_MIN_PER_CLASS]
        if len(big) >= 2:
            rows = np.flatnonzero(labeled)
            rows = rows[np.isin(labels[rows], big)]
            y = labels[rows]
            pool_rows = self.split.pool[rows]
            tried = []
            backbone = standardise(self.deep.backbone_features()[self.data.keep])
            k = min(AUTO_FOLDS, min(int(np.sum(y == c)) for c in big))
            folds = list(StratifiedKFold(k, shuffle=True, random_state=self.seed).split(rows, y))
            cand = np.hstack([morph, backbone])
            gain = cv_balanced_accuracy(cand[pool_rows], y, folds, self.seed) - (
                cv_balanced_accuracy(morph[pool_rows], y, folds, self.seed)
            )
            tried.append((gain, "morphology+embedding", cand))
            for emb, trained in reversed(self.versions):
                fresh = ~trained[rows]
                if fresh.sum() >= AUTO_MIN_FRESH and len(set(y[fresh].tolist())) >= 2:
                    cand = np.hstack([morph, emb])
                    base, with_emb = fresh_balanced_accuracy(
                        morph[pool_rows], cand[pool_rows], y, fresh, self.seed
                    )
                    tried.append((with_emb - base, "morphology+finetuned", cand))
                    break
            gain, name, cand = max(tried, key=lambda t: t[0])
            if gain >= AUTO_MARGIN:
                self.chosen, self.name = cand, name
        self.uses[self.name] = self.uses.get(self.name, 0) + 1
        return self.chosen[self.split.pool]

    def test_features(self) -> npt.NDArray[np.float32]:
        return self.chosen[self.split.test]

    def summary(self) -> dict[str, Any]:
        """The final round's set and how many rounds used each set."""
        return {
            "features": self.name,
            **{f"rounds_{k.replace('+', '_')}": v for k, v in sorted(self.uses.items())},
        }


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


# ---------------------------------------------------------------- the peer table
def _t_interval(diff: npt.NDArray[np.float64], confidence: float = 0.95) -> tuple[float, float]:
    """Mean of paired differences and the half-width of its t-interval (NaN for < 2 pairs)."""
    from scipy.stats import t

    diff = diff[np.isfinite(diff)]
    if len(diff) == 0:
        return float("nan"), float("nan")
    mean = float(diff.mean())
    if len(diff) < 2:
        return mean, float("nan")
    half = float(t.ppf(0.5 + confidence / 2, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
    return mean, half


def summarise(
    summary,  # pd.DataFrame of run_one summary rows
    random_need: npt.NDArray[np.int64],
    batch_size: int,
    target: str = "discover",
) -> tuple[Any, dict[str, Any]]:
    """The peer table and the verdict.

    Labels to all classes of a run that never saw every class counts as budget + one batch
    (a lower bound) in medians and differences; ``runs_all`` says how many runs found all.

    Args:
        summary: one row per strategy and seed (:func:`run_one`).
        random_need: random sampling's labels to all classes over many orderings of the pools.
        batch_size: labels per round.
        target: the strategy compared with the others.

    Returns:
        ``(table, verdict)``: one row per strategy (``strategy, seeds, runs_all,
        labels_to_all, macro_f1, d_labels, d_labels_ci, d_f1, d_f1_ci``; the ``d_`` columns are
        ``target`` minus the strategy, mean over seeds and 95% half-width), and a dict with
        ``random_orderings`` (median, rounded up to a batch), ``labels_goal``,
        ``best_peer``, ``f1_gap``, ``f1_gap_ci``, ``labels_ok``, ``f1_ok``, ``goal_met``.
    """
    import pandas as pd

    s = summary.copy()
    censored = s["budget"] + batch_size
    need = s["labels_to_all_classes"].astype("Float64").fillna(censored).astype(float)
    s["need"] = need
    wide_need = s.pivot(index="seed", columns="strategy", values="need")
    wide_f1 = s.pivot(index="seed", columns="strategy", values="macro_f1")
    strategies = list(dict.fromkeys(s["strategy"]))
    rows = []
    for name in strategies:
        runs = s[s["strategy"] == name]
        row = dict(
            strategy=name,
            seeds=len(runs),
            runs_all=int(runs["labels_to_all_classes"].notna().sum()),
            labels_to_all=float(runs["need"].median()),
            macro_f1=float(runs["macro_f1"].median()),
        )
        if target in wide_need and name != target:
            row["d_labels"], row["d_labels_ci"] = _t_interval(
                (wide_need[target] - wide_need[name]).to_numpy(float)
            )
            row["d_f1"], row["d_f1_ci"] = _t_interval(
                (wide_f1[target] - wide_f1[name]).to_numpy(float)
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("d_labels", "d_labels_ci", "d_f1", "d_f1_ci"):
        if col not in table:
            table[col] = np.nan
    random_median = round_up(float(np.median(random_need)), batch_size)
    verdict: dict[str, Any] = {
        "random_orderings": random_median,
        "labels_goal": round_up(random_median / 2, batch_size),
    }
    med = table.set_index("strategy")
    others = [x for x in strategies if x != target]
    if target in med.index and others:
        best = max(others, key=lambda x: (med.loc[x, "macro_f1"], x))
        gap, half = _t_interval((wide_f1[target] - wide_f1[best]).to_numpy(float))
        uncertain = [x for x in ("margin", "entropy") if x in med.index]
        t_need = med.loc[target, "labels_to_all"]
        labels_ok = t_need <= verdict["labels_goal"] and (
            not uncertain or t_need <= min(med.loc[x, "labels_to_all"] for x in uncertain)
        )
        peers = [x for x in PEERS if x in med.index] or others
        best_peer_f1 = max(med.loc[x, "macro_f1"] for x in peers)
        f1_ok = bool(med.loc[target, "macro_f1"] >= best_peer_f1 - F1_TOLERANCE)
        verdict.update(
            best_other=best,
            f1_gap=gap,
            f1_gap_ci=half,
            labels_ok=bool(labels_ok),
            f1_ok=f1_ok,
            goal_met=bool(labels_ok and f1_ok),
        )
    return table, verdict


def format_summary(table, verdict: dict[str, Any], target: str = "discover") -> str:
    """The peer table and the verdict as text (what ``phenoscout simulate`` prints)."""
    lines = [
        f"{'strategy':<18}{'seeds':>6}{'found all':>10}{'labels to all':>15}{'macro-F1':>10}"
        f"{f'{target} - it: labels':>26}{'F1':>18}"
    ]
    for r in table.itertuples(index=False):
        d_l = "" if math.isnan(r.d_labels) else f"{r.d_labels:+.1f} +- {r.d_labels_ci:.1f}"
        d_f = "" if math.isnan(r.d_f1) else f"{r.d_f1:+.3f} +- {r.d_f1_ci:.3f}"
        lines.append(
            f"{r.strategy:<18}{r.seeds:>6}{f'{r.runs_all}/{r.seeds}':>10}"
            f"{r.labels_to_all:>15.0f}{r.macro_f1:>10.3f}{d_l:>26}{d_f:>18}"
        )
    lines.append(
        f"random over orderings of the pool: median {verdict['random_orderings']} labels "
        f"(rounded up to a batch); goal for {target}: <= {verdict['labels_goal']}"
    )
    if "goal_met" in verdict:
        lines.append(
            f"F1 gap {target} - {verdict['best_other']} (best other): "
            f"{verdict['f1_gap']:+.3f} +- {verdict['f1_gap_ci']:.3f} (95%, paired by seed)"
        )
        yes = {True: "yes", False: "NO"}
        lines.append(
            f"goal met: labels {yes[verdict['labels_ok']]}, F1 within {F1_TOLERANCE} of the "
            f"best of random/margin/entropy {yes[verdict['f1_ok']]}"
        )
    return "\n".join(lines)


def simulate(
    data_dir: Path | SimData,
    cfg: SimConfig,
    out_dir: Path,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    ingest: IngestConfig | None = None,
    title: str | None = None,
):  # -> pd.DataFrame
    """Run every strategy x seed on ``data_dir`` (or on already loaded data) and write
    curves.csv, summary.csv, peers.csv, peers.txt and discovery.png.

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
        data = load_sim_data(Path(data_dir), cache_dir, ingest=ingest)
        name = title or Path(data_dir).name
    deep = None
    if cfg.finetune:
        if data.project_dir is None:
            raise ConfigError("--finetune needs a dataset folder, not a subsample")
        from models.simulation import DeepFeatures

        deep = DeepFeatures(data.project_dir, seed=0)
        logger.info("fine-tuning every %d round(s)", cfg.finetune_every)
    curves, summaries, need = [], [], []
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
        c, summary = run_one(data, strategy, seed, cfg, split, deep)
        curves += c
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

"""Simulated labeling: the product's own benchmark.

A crops folder with ground truth (``labels.csv``) acts as the oracle: a strategy picks a batch,
the true labels of just those cells are revealed, the head is refit, and so on until the budget
is spent. Per-class discovery curves, labels needed to find every class, and the final model's
quality on the cells never labeled are recorded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from datasets.errors import DataError
from datasets.progress import Progress
from labeling.errors import ConfigError

if TYPE_CHECKING:
    from labeling.strategies.pool import PoolIndex
    from models.simulation import DeepFeatures

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class SimConfig:
    """One simulation run over strategies x seeds."""

    strategies: tuple[str, ...] = ("discover", "random")  # strategies to compare
    budget: int = 300  # labels per run
    batch_size: int = 10  # labels per round
    seeds: int = 5  # runs per strategy (seeds 0..seeds-1)
    finetune: bool = False  # fine-tune the U-Net between rounds; head on morphology + embedding

    def __post_init__(self) -> None:
        if self.budget < 1 or self.batch_size < 1 or self.seeds < 1:
            raise ConfigError(
                f"budget {self.budget}, batch size {self.batch_size} and seeds {self.seeds} "
                "must all be >= 1"
            )
        if not self.strategies:
            raise ConfigError("give at least one strategy")


@dataclass
class SimData:
    """What a simulation needs of a dataset: standardised features and the oracle."""

    cell_ids: npt.NDArray[np.str_]  # (n,)
    features: npt.NDArray[np.float32]  # (n, d) standardised
    truth: npt.NDArray[np.object_]  # (n,) class names
    project_dir: Path | None = None  # the cached project holding the pixels
    keep: npt.NDArray[np.bool_] | None = None  # (n_cells,) cells of the project with truth

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.truth.tolist()))


def _cache_key(data_dir: Path) -> str:
    """Key of a dataset folder's content: its path and every file's size and mtime."""
    from datasets.morphology import FEATURES_VERSION

    h = hashlib.sha1(f"{data_dir.resolve()}:features-v{FEATURES_VERSION}".encode())
    for root, _, files in sorted(os.walk(data_dir)):
        for name in sorted(files):
            st = os.stat(os.path.join(root, name))
            h.update(f"{root}/{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    """Where simulation feature caches live (``$PHENOSCOUT_CACHE`` or ~/.cache/phenoscout)."""
    return Path(os.environ.get("PHENOSCOUT_CACHE", Path.home() / ".cache" / "phenoscout"))


def load_sim_data(
    data_dir: Path, cache_dir: Path | None = None, progress: Progress | None = None
) -> SimData:
    """Ingest ``data_dir`` once into a cached project and return its features and truth.

    Raises:
        DataError: when the folder has no ground truth (labels.csv) for its cells.
    """
    from datasets.features import read_features
    from labeling.project import create_project, open_project

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such folder")
    path = (cache_dir or default_cache_dir()) / "sim" / f"{data_dir.name}-{_cache_key(data_dir)}"
    if not (path / "labels.db").exists():
        logger.info("first simulation on %s: ingesting into %s", data_dir, path)
        if path.exists():
            import shutil

            shutil.rmtree(path)
        project, _ = create_project(path, data_dir, progress=progress)
    else:
        project = open_project(path)
    truth = project.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    ids, feats, _ = read_features(project.path)
    project.close()
    y = truth.reindex(ids).to_numpy(dtype=object)
    missing = np.array([t is None or t != t for t in y])  # None or NaN
    if missing.all():
        raise DataError(f"{data_dir}: no labels.csv with ground truth; simulation needs one")
    if missing.any():
        logger.warning("%d cells without ground truth are left out", int(missing.sum()))
    return SimData(ids[~missing], standardise(feats[~missing]), y[~missing], path, ~missing)


def standardise(features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Zero mean, unit variance per column; constant columns become 0."""
    mu = features.mean(axis=0)
    sd = features.std(axis=0)
    sd[sd == 0] = 1.0
    return ((features - mu) / sd).astype(np.float32)


def random_labels_to_all(
    truth: Sequence[str], batch_size: int, n_orderings: int = 2000, seed: int = 0
) -> npt.NDArray[np.int64]:
    """Labels random sampling spends until every class is seen, over random orderings.

    Counted like the simulation: the number labeled after the batch in which the last class was
    first found.

    Returns:
        (n_orderings,) labels needed, one per random ordering of the dataset.
    """
    rng = np.random.default_rng(seed)
    _, codes = np.unique(np.asarray(truth), return_inverse=True)
    out = np.empty(n_orderings, dtype=np.int64)
    for i in range(n_orderings):
        first_seen = np.unique(codes[rng.permutation(len(codes))], return_index=True)[1]
        last = int(first_seen.max()) + 1  # position of the first cell of the last class
        out[i] = min(int(np.ceil(last / batch_size)) * batch_size, len(codes))
    return out


def run_one(
    data: SimData,
    strategy: str,
    seed: int,
    cfg: SimConfig,
    index: PoolIndex | None,
    deep: DeepFeatures | None = None,
) -> tuple[list[dict], dict]:
    """One simulated labeling run.

    Returns:
        ``(curve rows, summary row)``; a curve row per class per round
        (``strategy, seed, n_labeled, label, n_found``).
    """
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from labeling.strategies import Pool, select, update_state

    rng = np.random.default_rng([seed, 7919])
    n = len(data.cell_ids)
    labeled = np.zeros(n, dtype=bool)
    labels = np.full(n, None, dtype=object)
    pos = {c: i for i, c in enumerate(data.cell_ids)}
    classes = data.classes
    head, proba = None, None
    state: dict[str, Any] = {}
    curves, round_s, found_all_at = [], [], None
    budget = min(cfg.budget, n)
    while labeled.sum() < budget:
        t0 = time.perf_counter()
        pool = Pool(
            data.cell_ids,
            data.features,
            labeled.copy(),
            labels.copy(),
            proba,
            tuple(head.classes_) if head is not None else (),
            index,
        )
        size = min(cfg.batch_size, budget - int(labeled.sum()))
        selection, state = select(strategy, pool, size, rng, state)
        idx = np.array([pos[c] for c in selection.cell_ids])
        guesses = _guesses(head, proba, idx, data.cell_ids)
        known_before = set(labels[labeled].tolist())
        labeled[idx] = True
        labels[idx] = data.truth[idx]
        given = {data.cell_ids[i]: data.truth[i] for i in idx}
        state = update_state(strategy, state, selection, given, guesses, known_before)
        feats = data.features if deep is None else _with_deep(data, deep, labels, labeled)
        head, proba = _refit(labels, labeled, feats, seed)
        round_s.append(time.perf_counter() - t0)
        n_labeled = int(labeled.sum())
        counts = {c: int(np.sum(labels[labeled] == c)) for c in classes}
        curves += [
            dict(strategy=strategy, seed=seed, n_labeled=n_labeled, label=c, n_found=k)
            for c, k in counts.items()
        ]
        if found_all_at is None and all(counts.values()):
            found_all_at = n_labeled
    rest = ~labeled
    pred = _predict(head, proba, data.truth[labeled], n)[rest]
    summary = dict(
        strategy=strategy,
        seed=seed,
        budget=budget,
        n_classes=len(classes),
        classes_found=len(set(labels[labeled].tolist())),
        labels_to_all_classes=found_all_at,
        macro_f1=float(
            f1_score(data.truth[rest], pred, average="macro", labels=classes, zero_division=0)
        )
        if rest.any()
        else float("nan"),
        balanced_accuracy=float(balanced_accuracy_score(data.truth[rest], pred))
        if rest.any()
        else float("nan"),
        mean_round_seconds=float(np.mean(round_s)),
    )
    return curves, summary


def _with_deep(data: SimData, deep, labels, labeled) -> npt.NDArray[np.float32]:
    """Morphology features joined with fresh fine-tuned embeddings (``--finetune``)."""
    given = {data.cell_ids[i]: labels[i] for i in np.flatnonzero(labeled)}
    emb = deep.features(given)[data.keep]
    return np.hstack([data.features, standardise(emb)])


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


def _predict(head, proba, labeled_truth, n: int) -> npt.NDArray[np.object_]:
    if head is None or proba is None:  # fewer than two classes seen: predict the one seen
        only = labeled_truth[0] if len(labeled_truth) else ""
        return np.full(n, only, dtype=object)
    return np.asarray(head.classes_, dtype=object)[proba.argmax(axis=1)]


def simulate(
    data_dir: Path,
    cfg: SimConfig,
    out_dir: Path,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
):  # -> pd.DataFrame
    """Run every strategy x seed on ``data_dir`` and write curves.csv, summary.csv, discovery.png.

    Returns:
        The summary table (one row per strategy and seed).
    """
    import pandas as pd

    from labeling.reports.plots import plot_discovery
    from labeling.strategies import build_index, check_strategy

    for name in cfg.strategies:
        check_strategy(name)
    data = load_sim_data(Path(data_dir), cache_dir)
    t0 = time.perf_counter()
    index = build_index(data.features, np.random.default_rng(0))
    logger.info("index built in %.1f s", time.perf_counter() - t0)
    deep = None
    if cfg.finetune:
        from models.simulation import DeepFeatures

        deep = DeepFeatures(data.project_dir, seed=0)  # type: ignore[arg-type]  # set by load
    curves, summaries = [], []
    runs = [(s, seed) for s in cfg.strategies for seed in range(cfg.seeds)]
    for i, (strategy, seed) in enumerate(runs):
        c, summary = run_one(data, strategy, seed, cfg, index, deep)
        curves += c
        summaries.append(summary)
        if progress:
            progress(i + 1, len(runs))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves_df = pd.DataFrame(curves, columns=["strategy", "seed", "n_labeled", "label", "n_found"])
    summary_df = pd.DataFrame(summaries)
    summary_df["labels_to_all_classes"] = summary_df["labels_to_all_classes"].astype("Int64")
    curves_df.to_csv(out_dir / "curves.csv", index=False)
    summary_df.to_csv(out_dir / "summary.csv", index=False)
    prevalence = pd.Series(data.truth).value_counts(normalize=True).to_dict()
    plot_discovery(
        curves_df,
        prevalence,
        out_dir / "discovery.png",
        title=f"{Path(data_dir).name}: batch {cfg.batch_size}, {cfg.seeds} seeds",
    )
    return summary_df

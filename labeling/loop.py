"""The headless labeling loop: choose the next batch, lease it, take labels back, refit.

One round: fit the head on the labeled cells' features (or reuse the head cached for exactly
these labels), score every cell, let the strategy pick a batch, lease it to the annotator and
record the round. The app and the CLI call these functions; no torch or streamlit here.

The pool (cell ids, standardised morphology features, the k-means/neighbour index the
strategies use) is fixed per feature version. The head's features are chosen per round by
``labeling.feature_sets`` (``loop.features``; ``auto`` adds the backbone embedding of the
newest complete model version when cross-validation says it helps); the round records which
set it used and why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import zipfile
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from datasets.files import replace_file
from labeling.errors import PoolExhaustedError
from labeling.project import Project
from labeling.store.labels import LabelRecord

logger = logging.getLogger(__name__)

_CACHE_DIR = "cache"
# what reading a cache another process is replacing, or a damaged one, can raise
_UNREADABLE = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile)
_POOLS: dict[tuple[str, str], PoolData] = {}
_POOLS_LOCK = threading.Lock()


@dataclass
class PoolData:
    """What stays fixed for one feature version: ids, standardised features, the pool index."""

    version: str  # hash of the feature files
    cell_ids: npt.NDArray[np.str_]  # (n,)
    features: npt.NDArray[np.float32]  # (n, d), standardised
    index: Any  # labeling.strategies.PoolIndex
    position: dict[str, int]  # cell_id -> row
    index_seconds: float  # time spent building (or loading) the index


def feature_version(project: Project) -> str:
    """A hash of the project's feature files: names, sizes and Parquet footers (which hold
    the schema and per-column statistics), so copying a project keeps its caches valid."""
    h = hashlib.sha1()
    for path in sorted((project.path / "features").glob("*.parquet")):
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 4096))
            h.update(f"{path.name}:{size}:".encode() + fh.read())
    return h.hexdigest()[:12]


def pool_data(project: Project) -> PoolData:
    """Features and pool index of ``project``, cached in memory and on disk per feature version."""
    version = feature_version(project)
    key = (str(project.path.resolve()), version)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = _load_pool(project, version)
        return _POOLS[key]


def _load_pool(project: Project, version: str) -> PoolData:
    from datasets.features import read_features
    from labeling.simulate import standardise
    from labeling.strategies import build_index
    from labeling.strategies.pool import PoolIndex

    found = _read_pool_cache(project, version)
    if found is None:
        ids, feats, _ = read_features(project.path)
        feats = standardise(feats)
        _save_pool_cache(project, version, ids, feats)
    else:
        ids, feats = found
    t0 = time.perf_counter()
    cache = project.path / _CACHE_DIR / f"index-{version}.npz"
    index = None
    if cache.exists():
        try:
            with np.load(cache) as z:
                from sklearn.neighbors import NearestNeighbors

                nn = NearestNeighbors(algorithm="brute").fit(feats)
                index = PoolIndex(
                    z["cluster_ids"],
                    z["centroids"],
                    z["sizes"],
                    z["member_order"],
                    z["cluster_start"],
                    nn,
                )
        except _UNREADABLE as exc:
            logger.warning("%s: unreadable index cache (%s); rebuilding", cache, exc)
    if index is None or index.n_cells != len(ids):
        index = build_index(feats, np.random.default_rng(project.config.seed))
        _save_npz(
            cache,
            cluster_ids=index.cluster_ids,
            centroids=index.centroids,
            sizes=index.sizes,
            member_order=index.member_order,
            cluster_start=index.cluster_start,
        )
    seconds = time.perf_counter() - t0
    logger.info("pool of %d cells ready in %.1f s", len(ids), seconds)
    position = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    return PoolData(version, ids, feats, index, position, seconds)


def _pool_cache_paths(project: Project, version: str) -> tuple[Path, Path]:
    folder = project.path / _CACHE_DIR
    return folder / f"pool-{version}-ids.npy", folder / f"pool-{version}-features.npy"


def _read_pool_cache(
    project: Project, version: str
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float32]] | None:
    """The standardised pool features of this feature version as saved by an earlier process
    (a fresh ``phenoscout next`` on a million cells reads them in a fraction of a second
    instead of re-reading and standardising every feature file); None when absent or bad."""
    ids_path, feats_path = _pool_cache_paths(project, version)
    if not (ids_path.exists() and feats_path.exists()):
        return None
    try:
        ids = np.load(ids_path, allow_pickle=False)
        feats = np.load(feats_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("%s: unreadable pool cache (%s); reading the features", feats_path, exc)
        return None
    if feats.ndim != 2 or len(feats) != len(ids) or feats.dtype != np.float32:
        return None
    return ids, feats


def _save_pool_cache(
    project: Project, version: str, ids: npt.NDArray[np.str_], feats: npt.NDArray[np.float32]
) -> None:
    for path, array in zip(_pool_cache_paths(project, version), (ids, feats), strict=True):
        try:
            replace_file(path, partial(np.save, arr=array, allow_pickle=False))
        except OSError as exc:  # a read-only project still works, just without the cache
            logger.warning("%s: cannot write cache (%s)", path, exc)
            return
    keep = {p.name for p in _pool_cache_paths(project, version)}
    for old in (project.path / _CACHE_DIR).glob("pool-*.npy"):  # earlier feature versions
        if old.name not in keep:
            old.unlink(missing_ok=True)


def _save_npz(path: Path, **arrays: Any) -> None:
    try:
        replace_file(path, lambda fh: np.savez(fh, **arrays))
    except OSError as exc:  # a read-only project still works, just without the cache
        logger.warning("%s: cannot write cache (%s)", path, exc)


@dataclass
class HeadState:
    """The head fitted on the current labels and its probabilities for every cell."""

    version: str | None  # None when fewer than two classes have labels
    classes: tuple[str, ...]
    proba: npt.NDArray[np.float32] | None  # (n, k) for every cell of the pool
    fit_seconds: float
    features: str = "morphology"  # the feature set (labeling.feature_sets.FeatureChoice.key)
    features_reason: str = ""  # why that set


def _labels_key(
    store_events: list[LabelRecord], pool: PoolData, seed: int, features: str = "morphology"
) -> str:
    h = hashlib.sha1(f"{pool.version}:{seed}:{features}".encode())
    for e in store_events:
        h.update(f"{e.cell_id}\x1f{e.label}\x1e".encode())
    return h.hexdigest()[:16]


def fit_head(project: Project, pool: PoolData | None = None) -> HeadState:
    """Fit the head on the current (non-pseudo) labels and score every cell.

    The features are those :func:`labeling.feature_sets.choose_features` picks. The result is
    cached in ``PROJECT/cache/head.npz`` for exactly these labels and features, so the next
    batch (or another process) reuses it without refitting.

    Raises:
        ConfigError: a CellProfiler feature set without CellProfiler columns.
    """
    from labeling.feature_sets import choose_features, feature_matrix
    from labeling.head import HeadConfig, SklearnHead

    pool = pool or pool_data(project)
    t0 = time.perf_counter()
    labels = project.store.current_labels(include_pseudo=False)
    choice = choose_features(project, pool, labels)
    key = _labels_key(project.store.label_events(), pool, project.config.seed, choice.key)
    cache = project.path / _CACHE_DIR / "head.npz"
    cached = _read_head_cache(cache, key)
    if cached is not None:
        return replace(cached, features_reason=choice.reason)
    rows = np.array([pool.position[c] for c in labels if c in pool.position], dtype=np.int64)
    y = [labels[c] for c in labels if c in pool.position]
    if len(set(y)) < 2:
        return HeadState(
            None, tuple(sorted(set(y))), None, time.perf_counter() - t0, choice.key, choice.reason
        )
    features = feature_matrix(project, pool, choice.key)
    head = SklearnHead(HeadConfig(seed=project.config.seed)).fit(features[rows], y)
    proba = head.predict_proba(features)
    state = HeadState(
        head.version,
        tuple(head.classes_),
        proba,
        time.perf_counter() - t0,
        choice.key,
        choice.reason,
    )
    _save_npz(
        cache,
        key=np.array(key),
        version=np.array(head.version),
        classes=np.array(json.dumps(state.classes)),
        proba=proba,
        fit_seconds=np.array(state.fit_seconds),
        features=np.array(choice.key),
    )
    return state


def _read_head_cache(path: Path, key: str) -> HeadState | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if str(z["key"]) != key:
                return None
            return HeadState(
                str(z["version"]),
                tuple(json.loads(str(z["classes"]))),
                z["proba"],
                float(z["fit_seconds"]),
                str(z["features"]),
            )
    except _UNREADABLE as exc:
        logger.warning("%s: unreadable head cache (%s); refitting", path, exc)
        return None


def _fold_previous_round(project: Project, strategy: str) -> dict[str, Any]:
    """The strategy's state with the labels of its latest round folded in (bandit rewards)."""
    from labeling.strategies import Selection, update_state

    store = project.store
    rounds = [r for r in store.rounds() if r["strategy"] == strategy and r["state"] is not None]
    if not rounds:
        return {}
    last = rounds[-1]
    state = dict(last["state"])
    events = store.label_events()
    mine = [e for e in events if e.round_id == last["round_id"] and e.sub_strategy]
    if not mine:
        return state
    first = events.index(mine[0])
    known_before = {e.label for e in events[:first]}
    selection = Selection(
        [e.cell_id for e in mine], [str(e.sub_strategy) for e in mine], [0.0] * len(mine)
    )
    given = {e.cell_id: e.label for e in mine}
    guesses = {e.cell_id: e.guess for e in mine}
    return update_state(strategy, state, selection, given, guesses, known_before)


def next_batch(
    project: Project,
    n: int,
    annotator: str = "cli",
    strategy: str | None = None,
    *,
    resume: bool = True,
    _retry: int = 0,
) -> list[dict[str, Any]]:
    """Choose the next ``n`` cells for ``annotator`` with the newest head, lease and describe them.

    Another labeler may lease or label some of the chosen cells between the choice and the
    lease; the lease leaves those out and the batch is chosen again (up to 5 times, then the
    cells actually leased are returned), so no cell is ever handed to two labelers.

    Args:
        project: the open project.
        n: batch size.
        annotator: who labels this batch; cells leased to others are never handed out.
        strategy: query strategy name (``phenoscout next --help`` lists them); the project's
            default when None.
        resume: return this annotator's still-open batch instead, when there is one.

    Returns:
        One dict per cell: ``cell_id, path, strategy, guess, confidence``.

    Raises:
        ConfigError: for an unknown strategy.
        PoolExhaustedError: when no unlabeled, unleased cell is left.
    """
    from labeling.feature_sets import model_version_of
    from labeling.strategies import Pool, check_strategy, select

    strategy = strategy or project.config.loop.strategy
    check_strategy(strategy)
    store = project.store
    if resume:
        open_items = store.open_lease(annotator)
        if open_items:
            return _describe(project, open_items)
    store.release(annotator)
    t0 = time.perf_counter()
    pool = pool_data(project)
    head = fit_head(project, pool)
    t_fit = time.perf_counter()
    labeled_map = store.current_labels(include_pseudo=True)
    blocked = np.zeros(len(pool.cell_ids), dtype=bool)
    labels = np.full(len(pool.cell_ids), None, dtype=object)
    for cell_id, label in labeled_map.items():
        if cell_id in pool.position:
            blocked[pool.position[cell_id]] = True
            labels[pool.position[cell_id]] = label
    for cell_id in store.leased_ids(exclude_annotator=annotator):
        if cell_id in pool.position:
            blocked[pool.position[cell_id]] = True
    n_free = int((~blocked).sum())
    if n_free == 0:
        raise PoolExhaustedError("pool exhausted: every cell is labeled or leased to someone")
    state = _fold_previous_round(project, strategy)
    rng = np.random.default_rng([project.config.seed, len(store.rounds())])
    the_pool = Pool(
        pool.cell_ids, pool.features, blocked, labels, head.proba, head.classes, pool.index
    )
    selection, state = select(strategy, the_pool, min(n, n_free), rng, state)
    t_sel = time.perf_counter()
    items = _items(selection, pool, head)
    round_id = store.start_round(annotator, strategy, head.version, len(items), state)
    n_leased = store.lease(items, annotator, round_id,
                           ttl_s=project.config.loop.lease_minutes * 60)  # fmt: skip
    store.finish_round(round_id, {
        "fit_s": round(t_fit - t0, 4), "select_s": round(t_sel - t_fit, 4),
        "total_s": round(time.perf_counter() - t0, 4), "index_s": round(pool.index_seconds, 3),
        "features": head.features, "features_why": head.features_reason,
        "embedding_version": model_version_of(head.features),
        "chosen_by": _chosen_by(project, head),
        "cells": [it["cell_id"] for it in items],  # the batch's order: a reload keeps it
        # and what each tile said (why chosen, the guess and its confidence): a reload shows
        # it on labeled and skipped tiles too, whose leases are gone
        "shown": {it["cell_id"]: [it.get("sub_strategy"), it.get("guess"),
                                  None if it.get("confidence") is None
                                  else round(float(it["confidence"]), 4)]
                  for it in items},
    })  # fmt: skip
    if n_leased < len(items):  # another labeler took some of these cells meanwhile
        if _retry < 5:
            # labelers that collided would choose again in lock step (same rounds, same scores)
            # and collide again: each waits a different while, fixed by its name, first
            time.sleep(0.02 * (_retry + 1) * (1 + zlib.crc32(annotator.encode()) % 5))
            return next_batch(project, n, annotator, strategy, resume=False, _retry=_retry + 1)
        held = {lease["cell_id"] for lease in store.open_lease(annotator)}
        items = [it for it in items if it["cell_id"] in held]
    return _describe(project, items)


def _chosen_by(project: Project, head: HeadState) -> str:
    """Plain words for what chose a batch (the round record keeps them for the status line)."""
    from labeling.feature_sets import describe_features

    if head.version is None:
        return "the screen's spread, before a classifier existed (fewer than 2 classes labeled)"
    return f"the classifier on {describe_features(project, head.features)}"


def _items(selection: Any, pool: PoolData, head: HeadState) -> list[dict[str, Any]]:
    items = []
    for cell_id, sub in zip(selection.cell_ids, selection.strategies):
        guess, confidence = None, None
        if head.proba is not None:
            row = head.proba[pool.position[cell_id]]
            guess, confidence = head.classes[int(row.argmax())], round(float(row.max()), 4)
        items.append(
            {"cell_id": cell_id, "sub_strategy": sub, "guess": guess, "confidence": confidence}
        )
    return items


def _describe(project: Project, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from datasets.cells import read_cells_of

    ids = [it["cell_id"] for it in items]
    rows = read_cells_of(project.path, ids, ["source"]) if ids else None
    sources = {} if rows is None else dict(zip(rows["cell_id"], rows["source"], strict=True))
    return [
        {
            "cell_id": it["cell_id"],
            "path": str(sources.get(it["cell_id"], "")),
            "strategy": it.get("sub_strategy"),
            "guess": it.get("guess"),
            "confidence": it.get("confidence"),
        }
        for it in items
    ]


def submit_labels(
    project: Project,
    labels: Mapping[str, str],
    annotator: str = "cli",
    source: str = "batch",
) -> int:
    """Commit ``labels`` (cell_id -> class name, or ``SKIP``) in one transaction.

    Returns:
        The number of labels committed. Nothing slow runs before the commit.
    """
    return project.store.submit(dict(labels), annotator=annotator, source=source)


def current_batch(project: Project, annotator: str) -> list[dict[str, Any]]:
    """The annotator's batch as it stands in the store: what a reload of the app shows.

    The cells of the open round(s) in the order they were handed out: the ones the annotator
    already labeled, the still-open leased ones, and the ones skipped (``"skipped": True``:
    no label, no lease). Rounds from before the order was kept: the labeled cells first (in
    labeling order), then the open ones (in batch order), skipped ones left out. When nothing
    is open, the annotator's newest batch if they finished it (every cell labeled or skipped:
    a reload shows it done, and the page's "next batch" goes on), else a new batch (as
    :func:`next_batch` with ``resume=True``).

    Returns:
        One dict per cell, as :func:`next_batch`: ``cell_id, path, strategy, guess,
        confidence`` (as the round recorded them when it handed the cell out; rounds from
        before that was kept: ``confidence`` None for the already-labeled cells).
    """
    store = project.store
    done_round = _done_round(project, annotator)
    if done_round is not None:  # every tile labeled or skipped: shown done, n goes on
        open_items: list[dict[str, Any]] = []
        rounds = {done_round}
    else:
        open_items = next_batch(project, project.config.loop.batch_size, annotator, resume=True)
        rounds = {lease["round_id"] for lease in store.open_lease(annotator)}
    open_ids = {it["cell_id"] for it in open_items}
    done: dict[str, dict[str, Any]] = {}
    for event in store.label_events():
        mine = event.round_id in rounds and event.annotator == annotator
        if mine and event.cell_id not in open_ids:
            done[event.cell_id] = {"cell_id": event.cell_id, "sub_strategy": event.sub_strategy,
                                   "guess": event.guess}  # fmt: skip
    timings = [r["timings"] or {} for r in store.rounds() if r["round_id"] in rounds]
    order = [c for t in timings for c in t.get("cells", [])]
    labeled = store.current_labels(include_pseudo=True)
    taken = store.leased_ids(exclude_annotator=annotator)  # skipped, then handed to another
    skipped = [{"cell_id": c} for c in dict.fromkeys(order)
               if c not in done and c not in open_ids and c not in labeled
               and c not in taken]  # fmt: skip
    items = [*_describe(project, list(done.values())), *open_items]
    items += [{**it, "skipped": True} for it in _describe(project, skipped)]
    shown = {c: v for t in timings for c, v in (t.get("shown") or {}).items()}
    for it in items:  # what the tile said when handed out, where the store has lost it
        strategy, guess, confidence = shown.get(it["cell_id"], (None, None, None))
        it["strategy"] = it.get("strategy") or strategy
        it["guess"] = it.get("guess") or guess
        it["confidence"] = it["confidence"] if it.get("confidence") is not None else confidence
    at = {c: i for i, c in enumerate(dict.fromkeys(order))}
    return sorted(items, key=lambda it: at.get(it["cell_id"], len(at)))  # stable: old rounds


def _done_round(project: Project, annotator: str) -> int | None:
    """The annotator's newest round when they hold no open lease, labeled a cell in it, and its
    leases cannot have run out yet (so every cell not labeled was skipped): a reload then shows
    that batch done, as it was left, rather than a new one. Else None."""
    from datetime import datetime

    store = project.store
    if store.open_lease(annotator):
        return None
    mine = [r for r in store.rounds() if r["annotator"] == annotator]
    if not mine or not (mine[-1]["timings"] or {}).get("cells"):
        return None
    started = datetime.fromisoformat(str(mine[-1]["started_at"]).replace("Z", "+00:00"))
    if time.time() - started.timestamp() >= project.config.loop.lease_minutes * 60:
        return None  # its open cells may have run out rather than been skipped: a new batch
    round_id = int(mine[-1]["round_id"])
    return round_id if store.labeled_in_round(round_id, annotator) else None


def shown_round(project: Project, annotator: str) -> int | None:
    """The round of the batch a reload shows: the open one (:func:`open_round`), else a done
    one (see :func:`current_batch`)."""
    return open_round(project, annotator) or _done_round(project, annotator)


def open_round(project: Project, annotator: str) -> int | None:
    """The round of the annotator's open batch (the newest one with an open lease), or None."""
    return max((lease["round_id"] for lease in project.store.open_lease(annotator)), default=None)


def relet(project: Project, annotator: str, item: Mapping[str, Any], round_id: int) -> int:
    """Lease one cell of a batch back to ``annotator`` (after an undone label or skip), so a
    reload shows it open again. ``item``: ``cell_id`` and optionally ``strategy`` (or
    ``sub_strategy``), ``guess``, ``confidence``. Returns 1, or 0 when another annotator now
    holds the cell."""
    lease = {
        "cell_id": item["cell_id"],
        "sub_strategy": item.get("sub_strategy", item.get("strategy")),
        "guess": item.get("guess"),
        "confidence": item.get("confidence"),
    }
    ttl_s = project.config.loop.lease_minutes * 60
    return project.store.lease([lease], annotator, round_id, ttl_s=ttl_s)


def undo_last(
    project: Project, annotator: str, within: Collection[str] | None = None
) -> LabelRecord | None:
    """Undo ``annotator``'s latest label in force; a cell left without a label that was labeled
    in a round goes back under the annotator's lease (with the strategy and guess it was handed
    out with), so it shows up open in the batch again.

    Args:
        within: the cells the undo may touch (the batch on screen); when the latest label is of
            another cell, nothing is undone.

    Returns:
        The undone record (``undone=True``, with ``sub_strategy`` and ``guess``); the latest
        label as it stands (``undone=False``) when it is not ``within``; None when the
        annotator has nothing to undo.
    """
    store = project.store
    mine = [e for e in store.label_events() if e.annotator == annotator]
    if within is not None and mine and mine[-1].cell_id not in within:
        return mine[-1]
    record = store.undo_last(annotator)
    if record is None:
        return None
    before = mine[-1] if mine and mine[-1].cell_id == record.cell_id else None
    if before is not None:
        record = replace(record, sub_strategy=before.sub_strategy, guess=before.guess)
    if record.round_id is not None and record.cell_id not in store.current_labels(True):
        relet(project, annotator, {"cell_id": record.cell_id, "sub_strategy": record.sub_strategy,
                                   "guess": record.guess}, record.round_id)  # fmt: skip
    return record

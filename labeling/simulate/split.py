"""The held-out split per seed and the simulated data (loading, caching, standardising).

Each seed keeps one stratified held-out split (:attr:`SimConfig.holdout` of each class,
optionally whole groups such as movies, see :attr:`SimConfig.group_pattern`) out of the pool;
every strategy of that seed is scored on the same cells.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from datasets.config import IngestConfig
from datasets.errors import DataError
from datasets.progress import Progress
from labeling.errors import ConfigError

if TYPE_CHECKING:
    from labeling.strategies.pool import PoolIndex


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
    #: how a dataset folder's crops are read (as ``phenoscout init``); IngestConfig() when None
    ingest: IngestConfig | None = None
    #: where a dataset folder's ingest is cached; default_cache_dir() when None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.batch_size > self.budget >= 1:
            raise ConfigError(
                f"budget {self.budget} is smaller than one batch of {self.batch_size}; give a "
                "budget of at least one batch"
            )
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
    and mtime, the feature and ingest versions and the ingest options."""
    from datasets.crops.ingest import INGEST_VERSION
    from datasets.morphology import FEATURES_VERSION

    options = json.dumps(dataclasses.asdict(ingest), sort_keys=True, default=str)
    versions = f"features-v{FEATURES_VERSION}:ingest-v{INGEST_VERSION}"
    h = hashlib.sha1(f"{data_dir.resolve()}:{versions}:{options}".encode())
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
    from labeling.project import IngestRun, create_project, open_project

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
        project, _ = create_project(path, data_dir, ingest, run=IngestRun(progress=progress))
    else:
        project = open_project(path)
    cells = project.cells(columns=["cell_id", "source", "truth"]).set_index("cell_id")
    ids, feats, _ = read_features(project.path)
    project.close()
    cells = cells.reindex(ids)
    y = cells["truth"].to_numpy(dtype=object)
    missing = np.array([t is None or t != t for t in y])  # None or NaN
    if missing.all():
        y = folder_truth(cells["source"].to_numpy(dtype=object))
        if y is None:
            raise DataError(
                f"{data_dir}: no ground truth; simulation needs a labels.csv (path,label) or "
                "the crops in one folder per class (CLASS/crop.tif)"
            )
        logger.warning("ground truth: the class folders (%d classes)", len(set(y.tolist())))
        missing = np.zeros(len(y), dtype=bool)
    if missing.any():
        logger.warning("%d cells without ground truth are left out", int(missing.sum()))
    keep = ~missing
    sources = cells["source"].to_numpy(dtype=object)[keep]
    return SimData(ids[keep], standardise(feats[keep]), y[keep], path, keep, sources)


def folder_truth(sources: npt.NDArray[np.object_]) -> npt.NDArray[np.object_] | None:
    """Each cell's class from a folder laid out as ``CLASS/crop`` (every crop exactly one folder
    deep, at least two folders), else None."""
    parts = [PurePosixPath(str(s).replace("\\", "/")).parts for s in sources]
    if not parts or any(len(p) != 2 for p in parts):
        return None
    y = np.array([p[0] for p in parts], dtype=object)
    return y if len(set(y.tolist())) >= 2 else None


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
    n_matched = 0
    for i, src in enumerate(data.sources):
        m = rx.search(str(src))
        out[i] = (m.group(1) if m.groups() else m.group(0)) if m else str(src)
        n_matched += m is not None
    if n_matched == 0:
        raise ConfigError(
            f"group pattern {pattern!r} matches no cell's path (e.g. {data.sources[0]!r}); "
            "fix it or leave it out"
        )
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

"""What a query strategy sees (:class:`Pool`, :class:`PoolIndex`) and returns (:class:`Selection`).

Everything here works on plain arrays; cells are named by ``cell_id`` at the boundary and by
their position in the pool (``*_idx``) only inside this package.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sklearn.cluster import MiniBatchKMeans
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from labeling.errors import DataError

logger = logging.getLogger(__name__)

#: Cells whose feature vectors have at least this cosine similarity never share a batch.
NEAR_DUPLICATE_COSINE = 0.98
#: Most clusters :func:`build_index` makes by default.
MAX_CLUSTERS = 500
#: Cells per cluster aimed at by default (Jurkat simulation: 30 found all classes sooner than
#: 5, 10, 20 or 100).
CELLS_PER_CLUSTER = 30


@dataclass(eq=False)
class PoolIndex:
    """Per-feature-version structure over the whole pool, built once by :func:`build_index`.

    Attributes:
        cluster_ids: (n,) int64 k-means cluster of each cell.
        centroids: (k, d) float32 cluster centres.
        sizes: (k,) int64 cells per cluster.
        member_order: (n,) int64 cell positions sorted by cluster, then by distance to the
            cluster's centre (closest first).
        cluster_start: (k + 1,) int64 offsets into ``member_order``: cluster ``c`` owns
            ``member_order[cluster_start[c]:cluster_start[c + 1]]``.
        neighbours: exact (brute-force) Euclidean nearest-neighbour search over all cells.
    """

    cluster_ids: npt.NDArray[np.int64]
    centroids: npt.NDArray[np.float32]
    sizes: npt.NDArray[np.int64]
    member_order: npt.NDArray[np.int64]
    cluster_start: npt.NDArray[np.int64]
    neighbours: NearestNeighbors

    @property
    def n_cells(self) -> int:
        """Number of cells the index was built on."""
        return len(self.cluster_ids)

    @property
    def n_clusters(self) -> int:
        """Number of k-means clusters."""
        return len(self.centroids)


def default_n_clusters(n_cells: int) -> int:
    """About :data:`CELLS_PER_CLUSTER` cells per cluster, at most :data:`MAX_CLUSTERS`: rare
    phenotypes form small tight clusters, and many small clusters keep them apart from the
    common ones."""
    return int(min(MAX_CLUSTERS, max(1, n_cells // CELLS_PER_CLUSTER)))


def build_index(
    features: npt.NDArray[np.float32],
    rng: np.random.Generator,
    n_clusters: int | None = None,
) -> PoolIndex:
    """Cluster the pool and prepare neighbour search; run once per feature version.

    Takes about 2 s for 100,000 x 100 features and 500 clusters (single-threaded).

    Args:
        features: (n, d) float32 standardised features of every cell of the pool.
        rng: seeds the k-means initialisation.
        n_clusters: number of k-means clusters; :func:`default_n_clusters` when None.

    Returns:
        The index; pass it as ``Pool.index`` as long as the features stay the same.

    Raises:
        DataError: when ``features`` is not a non-empty 2-D array.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) == 0:
        raise DataError(f"features of shape {features.shape}; expected (n_cells, n_features)")
    k = default_n_clusters(len(features)) if n_clusters is None else n_clusters
    k = int(min(max(1, k), len(features)))
    t0 = time.perf_counter()
    # Single-threaded: on a busy 2-core machine threaded k-means spins (2 s vs 15-25 s).
    with threadpool_limits(limits=1):
        km = MiniBatchKMeans(
            n_clusters=k, n_init=1, batch_size=2048, random_state=int(rng.integers(2**31 - 1))
        ).fit(features)
    ids = km.labels_.astype(np.int64)
    centroids = km.cluster_centers_.astype(np.float32)
    dist = np.linalg.norm(features - centroids[ids], axis=1)
    order = np.lexsort((np.arange(len(ids)), dist, ids)).astype(np.int64)
    sizes = np.bincount(ids, minlength=k).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    nn = NearestNeighbors(algorithm="brute").fit(features)
    logger.info(
        "pool index: %d cells, %d clusters in %.1f s", len(ids), k, time.perf_counter() - t0
    )
    return PoolIndex(ids, centroids, sizes, order, start, nn)


@dataclass
class Pool:
    """Every cell a strategy may choose from, with what is known about it.

    Attributes:
        cell_ids: (n,) str stable cell ids (unique).
        features: (n, d) float32 standardised features.
        labeled: (n,) bool, True for cells that must not be chosen (labeled, or leased).
        labels: (n,) object current class name of a labeled cell, None otherwise.
        proba: (n, k) float32 class probabilities from the head, None when there is no model.
        classes: the class of each column of ``proba``.
        index: clusters and neighbour search from :func:`build_index` for these features;
            built on the fly (slow for big pools) when None.
    """

    cell_ids: npt.NDArray[np.str_]
    features: npt.NDArray[np.float32]
    labeled: npt.NDArray[np.bool_]
    labels: npt.NDArray[np.object_]
    proba: npt.NDArray[np.float32] | None = None
    classes: tuple[str, ...] = ()
    index: PoolIndex | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.cell_ids = np.asarray(self.cell_ids)
        if self.cell_ids.dtype.kind != "U":
            self.cell_ids = self.cell_ids.astype(str)
        self.labeled = np.asarray(self.labeled, dtype=bool)
        self.labels = np.asarray(self.labels, dtype=object)
        self.classes = tuple(self.classes)
        n = len(self.cell_ids)
        f = self.features
        if f.ndim != 2 or len(f) != n:
            raise DataError(f"pool features of shape {f.shape}; expected ({n}, n_features)")
        if self.labeled.shape != (n,) or self.labels.shape != (n,):
            raise DataError(
                f"pool of {n} cells but labeled {self.labeled.shape} and labels "
                f"{self.labels.shape}; give one entry per cell"
            )
        if self.proba is not None and self.proba.shape != (n, len(self.classes)):
            raise DataError(
                f"pool proba of shape {self.proba.shape}; expected ({n}, {len(self.classes)}) "
                f"for classes {self.classes}"
            )
        if self.index is not None and self.index.n_cells != n:
            raise DataError(
                f"pool index built on {self.index.n_cells} cells but the pool has {n}; "
                "rebuild it with build_index(features, rng)"
            )

    @property
    def class_counts(self) -> dict[str, int]:
        """Labels per class among the labeled cells (cells labeled None are not counted)."""
        given = self.labels[self.labeled]
        return dict(sorted(Counter(str(c) for c in given if c is not None).items()))

    @property
    def n_unlabeled(self) -> int:
        """Cells still available for a batch."""
        return int(len(self.labeled) - np.count_nonzero(self.labeled))


@dataclass
class Selection:
    """A batch: cell ids, the sub-strategy that chose each, and its score (higher = preferred).

    Sub-strategy names are the keys of ``STRATEGIES`` (minus ``discover``), ``more_like_this``,
    or ``fill`` (a random cell taken because a sub-strategy ran out of distinct candidates).
    ``random`` marks the unbiased random slice. Scores are comparable only within one
    sub-strategy.
    """

    cell_ids: list[str]
    strategies: list[str]
    scores: list[float]

    def __len__(self) -> int:
        return len(self.cell_ids)


def rank_desc(
    scores: npt.NDArray[np.floating],
    idx: npt.NDArray[np.int64],
    cell_ids: npt.NDArray[np.str_],
    m: int | None = None,
) -> npt.NDArray[np.int64]:
    """Positions ``idx`` ordered by descending score, ties by ascending cell id (stable).

    Args:
        scores: (len(idx),) scores of the cells at ``idx``.
        idx: (len(idx),) pool positions.
        cell_ids: (n,) all cell ids of the pool.
        m: keep only the best ``m`` (all when None).

    Returns:
        (min(m, len(idx)),) int64 pool positions, best first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if m is not None and m < len(idx):
        cut = np.partition(scores, len(scores) - m)[len(scores) - m]
        keep = np.flatnonzero(scores >= cut)
        scores, idx = scores[keep], idx[keep]
    order = np.lexsort((cell_ids[idx], -scores))
    return idx[order][:m]


def nearest(
    a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], chunk: int = 2048
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Euclidean distance from every row of ``a`` to its nearest row of ``b``, and which row.

    Args:
        a: (p, d) points.
        b: (q, d) reference points.

    Returns:
        ``(dist, arg)``: (p,) float64 distances (+inf when ``b`` is empty) and (p,) int64
        positions into ``b`` (-1 when ``b`` is empty).
    """
    if len(b) == 0:
        return np.full(len(a), np.inf), np.full(len(a), -1, dtype=np.int64)
    b = np.asarray(b, dtype=np.float32)
    b_sq = np.einsum("ij,ij->i", b, b)
    dist = np.empty(len(a))
    arg = np.empty(len(a), dtype=np.int64)
    for s in range(0, len(a), chunk):
        part = np.asarray(a[s : s + chunk], dtype=np.float32)
        sq = np.einsum("ij,ij->i", part, part)[:, None] + b_sq[None, :] - 2.0 * (part @ b.T)
        arg[s : s + chunk] = sq.argmin(axis=1)
        dist[s : s + chunk] = np.sqrt(np.maximum(sq[np.arange(len(part)), arg[s : s + chunk]], 0))
    return dist, arg

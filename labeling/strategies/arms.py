"""The sub-strategies: each ranks unlabeled cells, best first, by one idea of "worth labeling".

Every sub-strategy is a function ``(ctx, k) -> Ranked``: ``k`` is the number of batch slots it
fills, and it returns a few more candidates than that so the batch builder can skip
near-duplicates. A sub-strategy that cannot run (no model yet, no labels yet) hands over to one
that can, and the returned :class:`Ranked` names the one that actually chose.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from labeling.strategies.measures import ranked_batch, uncertainty
from labeling.strategies.pool import Pool, PoolIndex, build_index, nearest, rank_desc

logger = logging.getLogger(__name__)

#: Candidates handed to modAL's ranked batch mode (its cost is quadratic in this).
UNCERTAIN_CANDIDATES = 300
#: Random sample of the pool that k-means++ seeding draws from.
DIVERSITY_SAMPLE = 2000
#: Unlabeled cells (from the clusters farthest from any label) that novelty examines.
NOVELTY_CANDIDATES = 3000
#: Most cells that predicted-rare takes from one cluster per batch.
RARE_PER_CLUSTER = 2


@dataclass(frozen=True)
class Ranked:
    """A sub-strategy's answer: pool positions best first, their scores, and who chose them
    (``name``, or per cell in ``names`` when a sub-strategy continued with another)."""

    name: str
    idx: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    names: tuple[str, ...] = ()

    def name_of(self, j: int) -> str:
        """Who chose the ``j``-th cell."""
        return self.names[j] if self.names else self.name


def _n_wanted(ctx: RoundContext, k: int) -> int:
    return int(min(len(ctx.unl), max(3 * k, k + 20)))


class RoundContext:
    """What several sub-strategies need in one round, each computed at most once."""

    def __init__(self, pool: Pool, rng: np.random.Generator) -> None:
        self.pool = pool
        self.rng = rng
        self.features = pool.features
        self.ids = pool.cell_ids

    @cached_property
    def unl(self) -> npt.NDArray[np.int64]:
        """(u,) positions of the cells that may be chosen, ascending."""
        return np.flatnonzero(~self.pool.labeled)

    @cached_property
    def lab(self) -> npt.NDArray[np.int64]:
        """(L,) positions of labeled (or otherwise blocked) cells, ascending."""
        return np.flatnonzero(self.pool.labeled)

    @cached_property
    def has_model(self) -> bool:
        """True when there are probabilities over at least two classes."""
        return self.pool.proba is not None and len(self.pool.classes) >= 2

    @cached_property
    def index(self) -> PoolIndex:
        """The pool's index, built now (and logged, since it is slow) when the pool has none."""
        if self.pool.index is None:
            logger.warning("no pool index given; building one for %d cells", len(self.ids))
            return build_index(self.features, self.rng)
        return self.pool.index

    @cached_property
    def centroid_dist(self) -> npt.NDArray[np.float64]:
        """(k,) distance from each cluster centre to the nearest labeled cell (+inf if none)."""
        return nearest(self.index.centroids, self.features[self.lab])[0]

    @cached_property
    def free_per_cluster(self) -> npt.NDArray[np.int64]:
        """(k,) unlabeled cells per cluster."""
        return np.bincount(self.index.cluster_ids[self.unl], minlength=self.index.n_clusters)

    @cached_property
    def covered(self) -> npt.NDArray[np.bool_]:
        """(k,) True for clusters holding at least one labeled cell."""
        return np.bincount(self.index.cluster_ids[self.lab], minlength=self.index.n_clusters) > 0

    def free_members(self, clusters: npt.NDArray[np.int64]) -> list[npt.NDArray[np.int64]]:
        """Unlabeled members of each cluster, closest to its centre first."""
        ix = self.index
        out = []
        for c in clusters:
            seg = ix.member_order[ix.cluster_start[c] : ix.cluster_start[c + 1]]
            out.append(seg[~self.pool.labeled[seg]])
        return out

    def best(self, scores: npt.NDArray[np.float64], idx: npt.NDArray[np.int64]) -> int:
        """Position in ``idx`` of the highest score, ties to the smallest cell id."""
        top = np.flatnonzero(scores == scores.max())
        if len(top) == 1:
            return int(top[0])
        return int(top[np.argmin(self.ids[idx[top]])])


def rank_random(ctx: RoundContext, k: int) -> Ranked:
    """Uniformly random unlabeled cells (score 0)."""
    m = _n_wanted(ctx, k)
    idx = ctx.rng.choice(ctx.unl, size=m, replace=False).astype(np.int64)
    return Ranked("random", idx, np.zeros(m))


def make_uncertain(name: str) -> Callable[[RoundContext, int], Ranked]:
    """Least-confidence, margin or entropy sampling via modAL, diversified by ranked batch mode.

    The modAL measure scores every unlabeled cell from the cached probabilities; the top
    :data:`UNCERTAIN_CANDIDATES` are ordered by modAL's ranked batch mode, the rest follow by
    score. Without a model over two or more classes it hands over to diversity.
    """

    def rank_uncertain(ctx: RoundContext, k: int) -> Ranked:
        if not ctx.has_model:
            return rank_diversity(ctx, k)
        proba = ctx.pool.proba
        assert proba is not None  # has_model
        unl = ctx.unl
        cand = rank_desc(
            uncertainty(name, proba[unl]),
            unl,
            ctx.ids,
            max(UNCERTAIN_CANDIDATES, _n_wanted(ctx, k)),
        )
        if len(ctx.lab) > 0:
            _, arg = nearest(ctx.features[cand], ctx.features[ctx.lab])
            ref = ctx.features[ctx.lab[np.unique(arg)]]
            first = ranked_batch(name, ctx.features[cand], proba[cand], ref, k)
            rest = np.ones(len(cand), dtype=bool)
            rest[first] = False
            cand = np.concatenate([cand[first], cand[rest]])
        cand = cand[: _n_wanted(ctx, k)]
        return Ranked(name, cand, uncertainty(name, proba[cand]))

    rank_uncertain.__name__ = f"rank_{name}"
    return rank_uncertain


def class_need(counts: dict[str, int], classes: tuple[str, ...]) -> npt.NDArray[np.float64]:
    """(k,) weight of each class by how few labels it has: ``sqrt(max count / count)``, scaled
    so the best-labeled class weighs 1 (a class with no label counts as having one)."""
    n = np.asarray([max(counts.get(c, 0), 1) for c in classes], dtype=np.float64)
    need: npt.NDArray[np.float64] = np.sqrt(n.max() / n)
    return need


def rank_balanced_margin(ctx: RoundContext, k: int) -> Ranked:
    """Class-balanced margin sampling: margin uncertainty weighted toward classes with few
    labels (the mean :func:`class_need` of the two top classes), so labels after discovery go to
    the boundaries of the rare classes as much as to the common ones' (in the spirit of GALAXY,
    Zhang et al. 2022); ordered by ranked batch mode like margin. Without a model it hands over
    to diversity."""
    if not ctx.has_model:
        return rank_diversity(ctx, k)
    proba = ctx.pool.proba
    assert proba is not None  # has_model
    unl = ctx.unl
    need = class_need(ctx.pool.class_counts, ctx.pool.classes)
    p = proba[unl]
    top2 = np.argpartition(-p, 1, axis=1)[:, :2] if p.shape[1] > 1 else np.zeros((len(p), 2), int)
    weight = need[top2].mean(axis=1) / need.max()
    scores = uncertainty("margin", p) * weight
    cand = rank_desc(scores, unl, ctx.ids, max(UNCERTAIN_CANDIDATES, _n_wanted(ctx, k)))
    cand_scores = scores[np.searchsorted(unl, cand)]
    if len(ctx.lab) > 0:
        _, arg = nearest(ctx.features[cand], ctx.features[ctx.lab])
        ref = ctx.features[ctx.lab[np.unique(arg)]]
        first = ranked_batch("margin", ctx.features[cand], proba[cand], ref, k, cand_scores)
        rest = np.ones(len(cand), dtype=bool)
        rest[first] = False
        order = np.concatenate([first, np.flatnonzero(rest)])
        cand, cand_scores = cand[order], cand_scores[order]
    m = _n_wanted(ctx, k)
    return Ranked("balanced_margin", cand[:m], cand_scores[:m])


def rank_diversity(ctx: RoundContext, k: int) -> Ranked:
    """k-means++ seeding: draw cells with probability growing with the squared distance to the
    nearest labeled (or already drawn) cell, from a random sample of the pool."""
    rng, unl = ctx.rng, ctx.unl
    sample = np.sort(rng.choice(unl, size=min(len(unl), DIVERSITY_SAMPLE), replace=False))
    x = ctx.features[sample]
    dist = nearest(x, ctx.features[ctx.lab])[0]
    picks: list[int] = []
    scores: list[float] = []
    for _ in range(min(_n_wanted(ctx, k), len(sample))):
        if np.isinf(dist).all():
            j = int(rng.integers(len(sample)))
        else:
            w = dist**2
            if w.sum() <= 0:
                break
            j = int(rng.choice(len(sample), p=w / w.sum()))
        picks.append(j)
        scores.append(float(dist[j]) if np.isfinite(dist[j]) else 0.0)
        dist = np.minimum(dist, np.linalg.norm(x - x[j], axis=1))
    return Ranked("diversity", sample[picks].astype(np.int64), np.asarray(scores))


def _far_candidates(ctx: RoundContext, n_wanted: int) -> npt.NDArray[np.int64]:
    """Unlabeled cells of the clusters whose centres lie farthest from any labeled cell."""
    ix = ctx.index
    order = np.lexsort((np.arange(ix.n_clusters), -ctx.centroid_dist))
    order = order[ctx.free_per_cluster[order] > 0]
    upto = int(np.searchsorted(np.cumsum(ctx.free_per_cluster[order]), n_wanted)) + 1
    chosen = np.zeros(ix.n_clusters, dtype=bool)
    chosen[order[:upto]] = True
    members = ix.member_order
    keep = chosen[ix.cluster_ids[members]] & ~ctx.pool.labeled[members]
    return np.sort(members[keep])


def _farthest_first(
    ctx: RoundContext,
    x: npt.NDArray[np.float32],
    dist: npt.NDArray[np.float64],
    idx: npt.NDArray[np.int64],
    m: int,
    first: int | None = None,
) -> tuple[list[int], list[float]]:
    """Greedy k-centre: repeatedly take the row of ``x`` farthest from everything taken so far.

    ``dist`` is each row's distance to what is already labeled; ``first`` forces the first pick
    (needed when ``dist`` is all +inf); ties go to the smallest cell id of ``idx``.
    """
    dist = dist.copy()
    picks: list[int] = []
    scores: list[float] = []
    for _ in range(min(m, len(x))):
        j = first if first is not None and not picks else ctx.best(dist, idx)
        picks.append(j)
        scores.append(float(dist[j]) if np.isfinite(dist[j]) else 0.0)
        dist = np.minimum(dist, np.linalg.norm(x - x[j], axis=1))
        dist[picks] = -1.0
    return picks, scores


def rank_novelty(ctx: RoundContext, k: int) -> Ranked:
    """Cells far from every labeled cell (greedy k-centre / core-set over the cells of the
    clusters farthest from the labels). Without labels it hands over to diversity."""
    if len(ctx.lab) == 0:
        return rank_diversity(ctx, k)
    cand = _far_candidates(ctx, NOVELTY_CANDIDATES)
    x = ctx.features[cand]
    dist = nearest(x, ctx.features[ctx.lab])[0]
    picks, scores = _farthest_first(ctx, x, dist, cand, _n_wanted(ctx, k))
    return Ranked("novelty", cand[picks], np.asarray(scores))


def rank_coverage(ctx: RoundContext, k: int) -> Ranked:
    """One cell (the one closest to the centre) from each cluster that has no label yet, the
    clusters taken farthest-first from the labeled cells and from each other; then the open
    clusters' other cells, then (when that is still too few) novelty's cells.

    Without labels the first cluster is drawn with probability proportional to its size.
    """
    open_ = np.flatnonzero(~ctx.covered & (ctx.free_per_cluster > 0))
    if len(open_) == 0:
        return rank_novelty(ctx, k)
    dist = ctx.centroid_dist[open_]
    first = None
    if np.isinf(dist).all():
        sizes = ctx.free_per_cluster[open_].astype(float)
        first = int(ctx.rng.choice(len(open_), p=sizes / sizes.sum()))
    picks, scores = _farthest_first(
        ctx,
        ctx.index.centroids[open_],
        dist,
        _representatives(ctx, open_),
        _n_wanted(ctx, k),
        first,
    )
    return _coverage_ranked(ctx, k, open_, picks, scores)


def _coverage_ranked(
    ctx: RoundContext,
    k: int,
    open_: npt.NDArray[np.int64],
    picks: list[int],
    scores: list[float],
) -> Ranked:
    """Cluster coverage's ranking from the chosen order of the open clusters."""
    members = ctx.free_members(open_[picks])
    depth = max(len(m) for m in members)
    idx = [m[r] for r in range(depth) for m in members if r < len(m)]
    score = [s for r in range(depth) for m, s in zip(members, scores, strict=True) if r < len(m)]
    m = _n_wanted(ctx, k)
    if len(idx) >= m:
        return Ranked("cluster_coverage", np.asarray(idx[:m], np.int64), np.asarray(score[:m]))
    more = rank_novelty(ctx, k)  # few open clusters left: go on with the cells far from labels
    extra = ~np.isin(more.idx, idx)
    names = ("cluster_coverage",) * len(idx) + (more.name,) * int(extra.sum())
    return Ranked(
        "cluster_coverage",
        np.concatenate([np.asarray(idx, np.int64), more.idx[extra]]),
        np.concatenate([score, more.scores[extra]]),
        names,
    )


def rank_typical(ctx: RoundContext, k: int) -> Ranked:
    """Typical cells first (TypiClust, Hacohen et al. 2022): the cell closest to the centre of
    the largest cluster that has no label yet, then of the next largest, and so on (ties by
    cluster number); then the open clusters' other cells, then novelty's cells."""
    open_ = np.flatnonzero(~ctx.covered & (ctx.free_per_cluster > 0))
    if len(open_) == 0:
        return rank_novelty(ctx, k)
    size = ctx.free_per_cluster[open_].astype(np.float64)
    picks = [int(j) for j in np.lexsort((open_, -size))][: _n_wanted(ctx, k)]
    ranked = _coverage_ranked(ctx, k, open_, picks, size[picks].tolist())
    return Ranked(
        "typical",
        ranked.idx,
        ranked.scores,
        tuple("typical" if n == "cluster_coverage" else n for n in ranked.names),
    )


def _representatives(ctx: RoundContext, clusters: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.asarray([m[0] for m in ctx.free_members(clusters)], dtype=np.int64)


def rank_predicted_rare(ctx: RoundContext, k: int) -> Ranked:
    """Cells the model gives to classes with few labels: score ``max_c p_c * w_c`` with class
    weight ``w_c`` proportional to 1 / labels of ``c``; :data:`RARE_PER_CLUSTER` per cluster
    come first, then the rest by score. Without a model it hands over to diversity."""
    if not ctx.has_model:
        return rank_diversity(ctx, k)
    proba = ctx.pool.proba
    assert proba is not None  # has_model
    counts = ctx.pool.class_counts
    w = np.asarray([1.0 / max(counts.get(c, 0), 1) for c in ctx.pool.classes])
    w /= w.max()
    scores = (proba[ctx.unl] * w).max(axis=1)
    m = _n_wanted(ctx, k)
    cand = rank_desc(scores, ctx.unl, ctx.ids, 10 * m)
    taken: dict[int, int] = {}
    spread = np.zeros(len(cand), dtype=bool)
    for j, c in enumerate(ctx.index.cluster_ids[cand].tolist()):
        taken[c] = taken.get(c, 0) + 1
        spread[j] = taken[c] <= RARE_PER_CLUSTER
    idx = np.concatenate([cand[spread], cand[~spread]])[:m]
    return Ranked("predicted_rare", idx, (proba[idx] * w).max(axis=1).astype(np.float64))


def neighbours(ctx: RoundContext, query: npt.NDArray[np.int64], m: int) -> Ranked:
    """Unlabeled cells nearest to any of the ``query`` positions, closest first (score is minus
    the distance), searched among the query cells' nearest neighbours only; the query cells
    themselves are never returned."""
    nn, n_cells = ctx.index.neighbours, len(ctx.ids)
    blocked = ctx.pool.labeled.copy()
    blocked[query] = True
    n_nb = min(n_cells, 2 * m + len(query) + 10)
    while True:
        dist, ind = nn.kneighbors(ctx.features[query], n_neighbors=n_nb)
        dist, ind = dist.ravel(), ind.ravel()
        free = ~blocked[ind]
        best = np.full(n_cells, np.inf)
        np.minimum.at(best, ind[free], dist[free])
        found = np.flatnonzero(np.isfinite(best))
        if len(found) >= m or n_nb == n_cells:
            break
        n_nb = min(n_cells, 2 * n_nb)
    idx = rank_desc(-best[found], found, ctx.ids, m)
    return Ranked("more_like_this", idx, -best[idx])


def rank_rare_neighbours(ctx: RoundContext, k: int) -> Ranked:
    """More like this for the labeled class with the fewest labels (ties by name)."""
    counts = ctx.pool.class_counts
    if not counts:
        return rank_diversity(ctx, k)
    rarest = min(counts, key=lambda c: (counts[c], c))
    query = ctx.lab[ctx.pool.labels[ctx.lab] == rarest]
    return neighbours(ctx, query.astype(np.int64), _n_wanted(ctx, k))

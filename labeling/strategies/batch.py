"""Turn the sub-strategies' rankings into one batch: no labeled cell, no duplicate, and no two
cells whose features are near-identical (cosine similarity >= :data:`NEAR_DUPLICATE_COSINE`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from labeling.strategies.arms import Ranked, RoundContext
from labeling.strategies.pool import NEAR_DUPLICATE_COSINE, Selection

logger = logging.getLogger(__name__)

#: Strategy name of a cell drawn at random because its sub-strategy ran out of candidates.
FILL = "fill"


class _Batch:
    """The cells chosen so far, with their unit feature vectors for the near-duplicate test."""

    def __init__(self, ctx: RoundContext, n: int) -> None:
        self.ctx = ctx
        self.units = np.zeros((n, ctx.features.shape[1]), dtype=np.float32)
        self.zero = np.zeros(n, dtype=bool)
        self.idx: list[int] = []
        self.names: list[str] = []
        self.scores: list[float] = []
        self.taken: set[int] = set()

    def accepts(self, i: int) -> bool:
        """True when cell ``i`` is unlabeled, not yet taken, and not near-identical to one."""
        if i in self.taken or self.ctx.pool.labeled[i]:
            return False
        k = len(self.idx)
        if k == 0:
            return True
        v = self.ctx.features[i].astype(np.float32)
        norm = float(np.linalg.norm(v))
        if norm == 0.0:
            return not self.zero[:k].any()
        return float((self.units[:k] @ (v / norm)).max()) < NEAR_DUPLICATE_COSINE

    def add(self, i: int, name: str, score: float) -> None:
        v = self.ctx.features[i].astype(np.float32)
        norm = float(np.linalg.norm(v))
        k = len(self.idx)
        self.zero[k] = norm == 0.0
        if norm > 0.0:
            self.units[k] = v / norm
        self.idx.append(i)
        self.names.append(name)
        self.scores.append(score)
        self.taken.add(i)


def assemble(ctx: RoundContext, plan: Sequence[str], ranked: Mapping[str, Ranked]) -> Selection:
    """Fill one slot per entry of ``plan`` from that sub-strategy's ranking, in plan order.

    A candidate that is labeled, taken, or near-identical to a taken cell is skipped; when a
    ranking runs out, the slot takes a random acceptable cell, named :data:`FILL`. When fewer
    than ``len(plan)`` mutually distinct unlabeled cells are left (the end of a pool of
    near-copies), the batch is shorter: the copies left out come in the next batch, once their
    twins are labeled.

    Args:
        ctx: the round.
        plan: (n,) the sub-strategy (key of ``ranked``) that fills each slot.
        ranked: each sub-strategy's ranking.

    Returns:
        The batch in plan order (the slots that found a cell).
    """
    batch = _Batch(ctx, len(plan))
    cursor = dict.fromkeys(ranked, 0)
    spare: npt.NDArray[np.int64] | None = None
    spare_at = 0
    for key in plan:
        r = ranked[key]
        while cursor[key] < len(r.idx):
            j = cursor[key]
            cursor[key] += 1
            if batch.accepts(int(r.idx[j])):
                batch.add(int(r.idx[j]), r.name_of(j), float(r.scores[j]))
                break
        else:
            if spare is None:
                spare = ctx.rng.permutation(ctx.unl)
            while spare_at < len(spare) and not batch.accepts(int(spare[spare_at])):
                spare_at += 1
            if spare_at == len(spare):
                logger.info(
                    "only %d unlabeled cells are not near-copies (cosine >= %s) of each other; "
                    "a batch of %d instead of %d",
                    len(batch.idx), NEAR_DUPLICATE_COSINE, len(batch.idx), len(plan),
                )  # fmt: skip
                break
            batch.add(int(spare[spare_at]), FILL, 0.0)
    return Selection(
        [str(ctx.ids[i]) for i in batch.idx], batch.names, [float(s) for s in batch.scores]
    )

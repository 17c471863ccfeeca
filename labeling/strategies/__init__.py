"""Query strategies: which unlabeled cells to show next. Pure functions on arrays.

The loop builds a :class:`Pool` each round (features, labels, the head's probabilities and a
:class:`PoolIndex` built once per feature version by :func:`build_index`) and calls
:func:`select`; after the labels come back it calls :func:`update_state`, whose result the store
keeps for the next round.
"""

from labeling.strategies.pool import (
    NEAR_DUPLICATE_COSINE,
    Pool,
    PoolIndex,
    Selection,
    build_index,
    default_n_clusters,
)
from labeling.strategies.registry import (
    STRATEGIES,
    Strategy,
    check_strategy,
    more_like_this,
    select,
    update_state,
)

__all__ = [
    "NEAR_DUPLICATE_COSINE",
    "STRATEGIES",
    "Pool",
    "PoolIndex",
    "Selection",
    "Strategy",
    "build_index",
    "check_strategy",
    "default_n_clusters",
    "more_like_this",
    "select",
    "update_state",
]

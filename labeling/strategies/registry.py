"""The named strategies and the three calls the loop makes: select, more_like_this, update_state."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from labeling.errors import ConfigError, DataError, PoolExhaustedError
from labeling.strategies.arms import (
    Ranked,
    RoundContext,
    make_uncertain,
    neighbours,
    rank_balanced_margin,
    rank_coverage,
    rank_diversity,
    rank_novelty,
    rank_predicted_rare,
    rank_random,
    rank_typical,
)
from labeling.strategies.batch import assemble
from labeling.strategies.discover import reward_discover, run_discover
from labeling.strategies.pool import Pool, Selection


@dataclass(frozen=True)
class Strategy:
    """A strategy usable by name (CLI ``--strategy``, ``project.toml``)."""

    help: str  # one line for --help
    rank: Callable[[RoundContext, int], Ranked] | None  # a single sub-strategy; None: discover


STRATEGIES: dict[str, Strategy] = {
    "discover": Strategy(
        "default: finds new classes, then hands over to entropy; a random slice", None
    ),
    "random": Strategy("uniformly random unlabeled cells", rank_random),
    "least_confidence": Strategy(
        "lowest top-class probability (modAL)", make_uncertain("least_confidence")
    ),
    "margin": Strategy(
        "smallest gap between the two top classes (modAL)", make_uncertain("margin")
    ),
    "entropy": Strategy(
        "highest entropy of the class probabilities (modAL)", make_uncertain("entropy")
    ),
    "diversity": Strategy("k-means++ seeding on features", rank_diversity),
    "novelty": Strategy("farthest from every labeled cell", rank_novelty),
    "cluster_coverage": Strategy("one cell per cluster that has no label yet", rank_coverage),
    "typical": Strategy(
        "most typical cell of the largest cluster without a label (TypiClust)", rank_typical
    ),
    "balanced_margin": Strategy(
        "margin weighted toward classes with few labels", rank_balanced_margin
    ),
    "predicted_rare": Strategy(
        "cells the model gives to classes with few labels", rank_predicted_rare
    ),
}


def check_strategy(name: str) -> None:
    """Raise ConfigError, with a "did you mean", when ``name`` is not a known strategy."""
    if name not in STRATEGIES:
        hint = difflib.get_close_matches(name, list(STRATEGIES), n=1)
        suggestion = f"did you mean {hint[0]!r}?" if hint else f"choose from {sorted(STRATEGIES)}"
        raise ConfigError(f"unknown strategy {name!r}; {suggestion}")


def _check_size(pool: Pool, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"batch size {n!r} is invalid; ask for 1 or more cells")
    if n > pool.n_unlabeled:
        raise PoolExhaustedError(
            f"pool exhausted: {pool.n_unlabeled} unlabeled cells available, {n} requested"
        )


def select(
    name: str, pool: Pool, n: int, rng: np.random.Generator, state: Mapping[str, Any]
) -> tuple[Selection, dict[str, Any]]:
    """Choose the next ``n`` cells to label.

    Args:
        name: a key of :data:`STRATEGIES`.
        pool: the cells, what is known about them, and their index.
        n: batch size.
        rng: every random choice (and so the whole result) follows from it.
        state: what this strategy kept from earlier rounds ({} at first).

    Returns:
        ``(selection, new_state)``: ``n`` distinct unlabeled cells, no two near-identical
        (feature cosine >= 0.98), with the sub-strategy that chose each; single sub-strategies
        list their cells best first, ``discover`` in random order.

    Raises:
        ConfigError: unknown strategy name or ``n < 1``.
        PoolExhaustedError: fewer than ``n`` (distinct) unlabeled cells are left.
    """
    check_strategy(name)
    _check_size(pool, n)
    ctx = RoundContext(pool, rng)
    rank = STRATEGIES[name].rank
    # Single-threaded BLAS/OpenMP: the matrices are small, and on a 2-core machine shared with
    # the app and the trainer, threaded BLAS spins (a simulated run: 5.5 s vs 1.0 s).
    with threadpool_limits(limits=1):
        if rank is None:
            return run_discover(ctx, int(n), state)
        return assemble(ctx, [name] * n, {name: rank(ctx, int(n))}), dict(state)


def more_like_this(pool: Pool, query_cell_ids: Sequence[str], n: int) -> Selection:
    """The ``n`` unlabeled cells nearest (Euclidean, in feature space) to any query cell.

    Args:
        pool: the cells; ``pool.index`` supplies the neighbour search.
        query_cell_ids: cells to find more of (labeled or not; they are never returned).
        n: how many.

    Returns:
        Closest first; score is minus the distance to the nearest query cell; near-identical
        cells are skipped as in every batch.

    Raises:
        ConfigError: no query cell, or ``n < 1``.
        DataError: a query cell id is not in the pool.
        PoolExhaustedError: fewer than ``n`` unlabeled cells are left.
    """
    query = [str(c) for c in query_cell_ids]
    if not query:
        raise ConfigError("more like this needs at least one query cell id")
    _check_size(pool, n)
    pos = np.flatnonzero(np.isin(pool.cell_ids, query))
    missing = sorted(set(query) - set(pool.cell_ids[pos].tolist()))
    if missing:
        raise DataError(f"cell ids not in the pool: {missing[:5]}; use ids from the cell table")
    ctx = RoundContext(pool, np.random.default_rng(0))
    with threadpool_limits(limits=1):  # as in select()
        ranked = neighbours(ctx, pos.astype(np.int64), 3 * int(n))
        return assemble(ctx, ["more_like_this"] * n, {"more_like_this": ranked})


def update_state(
    name: str,
    state: Mapping[str, Any],
    selection: Selection,
    given: Mapping[str, str],
    guesses: Mapping[str, str | None],
    known_classes_before: set[str],
) -> dict[str, Any]:
    """Fold the labels of a batch into the strategy's state (``discover`` rewards its arms).

    Args:
        name: the strategy that chose ``selection``.
        state: its state when it chose.
        selection: the batch.
        given: cell id -> class name for the cells that were labeled (skipped cells absent).
        guesses: cell id -> the model's top class when the batch was chosen (None: no model).
        known_classes_before: classes that had labels before this batch.

    Returns:
        The new state (a new dict; ``state`` is not modified); JSON-serialisable.
    """
    check_strategy(name)
    if STRATEGIES[name].rank is None:
        return reward_discover(state, selection, given, guesses, known_classes_before)
    return dict(state)

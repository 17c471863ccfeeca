"""The headless labeling loop: choose the next batch, lease it, take labels back.

The app and the CLI call these functions; nothing here imports torch or streamlit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from labeling.errors import PoolExhaustedError
from labeling.project import Project

logger = logging.getLogger(__name__)


def next_batch(
    project: Project,
    n: int,
    annotator: str = "cli",
    strategy: str | None = None,
    *,
    resume: bool = True,
) -> list[dict[str, Any]]:
    """Choose the next ``n`` cells for ``annotator``, lease them, and describe them.

    Args:
        project: the open project.
        n: batch size.
        annotator: who labels this batch; cells leased to others are never handed out.
        strategy: query strategy name; the project's default when None.
        resume: return this annotator's still-open batch instead, when there is one.

    Returns:
        One dict per cell: ``cell_id, path, strategy, guess, confidence``.

    Raises:
        PoolExhaustedError: when no unlabeled, unleased cell is left.
    """
    store = project.store
    if resume:
        open_items = store.open_lease(annotator)
        if open_items:
            return _describe(project, open_items)
    store.release(annotator)
    strategy = strategy or project.config.loop.strategy
    t0 = time.perf_counter()
    cells = project.cells(columns=["cell_id"])["cell_id"].to_numpy()
    blocked = set(store.current_labels(include_pseudo=True)) | store.leased_ids()
    free = np.array([c for c in cells if c not in blocked])
    if len(free) == 0:
        raise PoolExhaustedError("pool exhausted: every cell is labeled or leased")
    n_rounds = len(store.rounds())
    rng = np.random.default_rng([project.config.seed, n_rounds])
    chosen = rng.choice(free, size=min(n, len(free)), replace=False)
    round_id = store.start_round(annotator, "random", None, len(chosen))
    items = [
        {"cell_id": str(c), "sub_strategy": "random", "guess": None, "confidence": None}
        for c in chosen
    ]
    store.lease(items, annotator, round_id, ttl_s=project.config.loop.lease_minutes * 60)
    store.finish_round(round_id, {"select_s": time.perf_counter() - t0})
    return _describe(project, items)


def _describe(project: Project, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells = project.cells(columns=["cell_id", "source"]).set_index("cell_id")["source"]
    return [
        {
            "cell_id": it["cell_id"],
            "path": str(cells.get(it["cell_id"], "")),
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
    """Commit ``labels`` (cell_id -> class name) in one transaction; returns the count committed."""
    return project.store.submit(dict(labels), annotator=annotator, source=source)

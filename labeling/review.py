"""Reviewing labels: cells of a class, label/model disagreements and "more like this".

What the app's Review page shows, reachable headless. The model is the loop's head
(:func:`labeling.loop.fit_head`, cached on disk for the current labels), so these functions cost
an argmax or a neighbour search over cached arrays. No torch or streamlit here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from labeling.errors import ConfigError, NotTrainedError, PoolExhaustedError

if TYPE_CHECKING:
    from labeling.project import Project

logger = logging.getLogger(__name__)

__all__ = [
    "cells_of_class",
    "confident_unlabeled",
    "disagreements",
    "inconsistent_labels",
    "similar_cells",
]
NEIGHBOURS = 5  # labeled neighbours that vote in inconsistent_labels


def cells_of_class(project: Project, cls: str) -> list[str]:
    """Cell ids whose current label is ``cls`` (pseudo-classes too), in labeling order."""
    frame = project.store.current_labels_frame(include_pseudo=True)
    return frame.loc[frame["label"] == cls, "cell_id"].astype(str).tolist()


def disagreements(project: Project) -> pd.DataFrame:
    """Labeled cells whose label is not the class the head predicts for them when trained
    without them (stratified k-fold over the current non-pseudo labels, as in
    :func:`inconsistent_labels`): a likely mislabel, or a class boundary worth a second look. A
    head fit on a cell's own label would mostly echo it back.

    Returns:
        ``cell_id, label, predicted, confidence`` (confidence: the out-of-fold probability of
        ``predicted``, float), most confident disagreement first; empty (same columns) while
        fewer than two classes have two labels. Cells of a class with one label are not checked.
    """
    from labeling.reports.report import _cv_proba

    columns = ["cell_id", "label", "predicted", "confidence"]
    cv = _cross_validation_set(project)
    if cv is None:
        return pd.DataFrame(columns=columns)
    keep, x, y, folds = cv
    classes, proba = _cv_proba(x, y, folds, int(project.config.seed))
    frame = pd.DataFrame({
        "cell_id": keep,
        "label": y,
        "predicted": np.asarray(classes, dtype=object)[proba.argmax(axis=1)],
        "confidence": proba.max(axis=1).astype(float),
    })  # fmt: skip
    out = frame[frame["label"] != frame["predicted"]]
    return out.sort_values(["confidence", "cell_id"], ascending=[False, True], ignore_index=True)[
        columns
    ]


def _cross_validation_set(
    project: Project,
) -> tuple[list[str], np.ndarray, np.ndarray, int] | None:
    """The labeled cells cross-validation can check (their class has >= 2 labels), with the
    loop's features, labels and number of folds; None while fewer than 2 such classes."""
    from collections import Counter

    from labeling.loop import pool_data
    from labeling.reports.report import MAX_FOLDS

    labels = project.store.current_labels(include_pseudo=False)
    pool = pool_data(project)
    counts = Counter(lab for c, lab in labels.items() if c in pool.position)
    keep = sorted(c for c, lab in labels.items() if c in pool.position and counts[lab] >= 2)
    y = np.array([labels[c] for c in keep], dtype=object)
    if len(set(y.tolist())) < 2:
        return None
    x = np.asarray(pool.features[[pool.position[c] for c in keep]], dtype=np.float32)
    folds = max(2, min(MAX_FOLDS, min(Counter(y.tolist()).values())))
    return keep, x, y, folds


def inconsistent_labels(project: Project, k: int = NEIGHBOURS) -> pd.DataFrame:
    """Labeled cells worth a second look: both their cross-validated prediction (the loop's head
    trained on the other folds, never on the cell itself) and the majority of their ``k``
    nearest labeled neighbours (feature space) give another class than their label.

    Returns:
        ``cell_id, label, cv_predicted, neighbours`` (the neighbours' majority class),
        ``agree`` (share of the ``k`` neighbours with that class), most agreeing first; empty
        (same columns) while cross-validation is not possible (fewer than 2 classes with 2
        labels).
    """
    from collections import Counter

    from labeling.reports.report import _cv_predict

    columns = ["cell_id", "label", "cv_predicted", "neighbours", "agree"]
    cv = _cross_validation_set(project)
    if cv is None:
        return pd.DataFrame(columns=columns)
    keep, x, y, folds = cv
    cv_pred = _cv_predict(x, y, folds, int(project.config.seed))
    sq = (x * x).sum(axis=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(dist, np.inf)
    near = np.argsort(dist, axis=1)[:, : min(k, len(keep) - 1)]
    rows = []
    for i, cell in enumerate(keep):
        votes = Counter(y[near[i]].tolist()).most_common(1)
        major, n_major = votes[0] if votes else (None, 0)
        if cv_pred[i] != y[i] and major is not None and major != y[i]:
            rows.append((cell, y[i], cv_pred[i], major, n_major / max(near.shape[1], 1)))
    out = pd.DataFrame(rows, columns=columns)
    return out.sort_values(["agree", "cell_id"], ascending=[False, True], ignore_index=True)


def confident_unlabeled(project: Project, cls: str, n: int) -> pd.DataFrame:
    """The ``n`` unlabeled cells the head finds most likely to be ``cls``.

    Returns:
        ``cell_id, probability`` (the head's probability of ``cls``), highest first; fewer
        rows when fewer unlabeled cells are left.

    Raises:
        ConfigError: ``n < 1``, or ``cls`` has no labels yet (the head does not know it).
        NotTrainedError: fewer than two classes have labels.
    """
    from labeling.loop import fit_head, pool_data

    if n < 1:
        raise ConfigError(f"asked for {n} cells; ask for 1 or more")
    pool = pool_data(project)
    head = fit_head(project, pool)
    if head.proba is None:
        raise NotTrainedError(
            f"{project.path.name}: 'more like this' needs labels of at least 2 classes; "
            "label a few cells of a second class first"
        )
    if cls not in head.classes:
        raise ConfigError(
            f"class {cls!r} has no labels the model learned from (known: "
            f"{', '.join(head.classes)}); label a few cells of it first"
        )
    p = np.asarray(head.proba)[:, head.classes.index(cls)].astype(float)
    blocked = _labeled_mask(project, pool)
    free = np.flatnonzero(~blocked)
    top = free[np.argsort(-p[free], kind="stable")[: int(n)]]
    return pd.DataFrame({"cell_id": pool.cell_ids[top].astype(str), "probability": p[top]})


def similar_cells(project: Project, cell_id: str, n: int) -> list[str]:
    """The ``n`` unlabeled cells nearest to ``cell_id`` in feature space, closest first.

    A wrapper of :func:`labeling.strategies.more_like_this` on the pool of
    :func:`labeling.loop.pool_data` with the current labels (pseudo-labels included) blocked.

    Returns:
        Up to ``n`` cell ids (fewer when fewer unlabeled cells are left); never ``cell_id``.

    Raises:
        ConfigError: ``n < 1``.
        DataError: ``cell_id`` is not in the project's pool.
        PoolExhaustedError: every cell is labeled.
    """
    from labeling.loop import pool_data
    from labeling.strategies import Pool, more_like_this

    if n < 1:
        raise ConfigError(f"asked for {n} cells; ask for 1 or more")
    pool = pool_data(project)
    blocked = _labeled_mask(project, pool)
    blocked_query = blocked.copy()
    if cell_id in pool.position:
        blocked_query[pool.position[cell_id]] = True  # never return the query itself
    n_free = int((~blocked_query).sum())
    if n_free == 0:
        raise PoolExhaustedError("pool exhausted: every other cell is labeled")
    labels = np.full(len(pool.cell_ids), None, dtype=object)
    the_pool = Pool(pool.cell_ids, pool.features, blocked_query, labels, index=pool.index)
    selection = more_like_this(the_pool, [cell_id], min(int(n), n_free))
    return [str(c) for c in selection.cell_ids]


def _labeled_mask(project: Project, pool) -> np.ndarray:  # pool: labeling.loop.PoolData
    """(n,) bool: True for pool cells with a current label (pseudo included)."""
    mask = np.zeros(len(pool.cell_ids), dtype=bool)
    for cell_id in project.store.current_labels(include_pseudo=True):
        if cell_id in pool.position:
            mask[pool.position[cell_id]] = True
    return mask

"""Uncertainty measures and ranked batch mode from modAL, on cached class probabilities.

modAL's functions take a fitted classifier and call its ``predict_proba``; :class:`CachedProba`
is a stand-in that returns probabilities computed once per round, so 100,000 cells are never
re-scored. modAL's learners (``ActiveLearner``) are not used: they break on scikit-learn >= 1.8.

``import modAL`` runs ``import torch`` (inside a bare ``try``) in ``modAL.utils.data``; that would
load torch into the labeling layer and cost seconds. :func:`_modal` imports modAL lazily with
torch and skorch hidden from the import system, unless torch is already loaded anyway.
"""

from __future__ import annotations

import importlib.abc
import sys
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

#: The uncertainty measures, by strategy name: (modAL function name, is it "higher = surer").
MEASURES = {
    "least_confidence": ("classifier_uncertainty", False),
    "margin": ("classifier_margin", True),
    "entropy": ("classifier_entropy", False),
}


class _HideTorch(importlib.abc.MetaPathFinder):
    """Makes ``import torch``/``import skorch`` fail while modAL is being imported."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in ("torch", "skorch"):
            raise ModuleNotFoundError(f"{name} is hidden while modAL is imported")
        return None


def _modal() -> tuple[ModuleType, ModuleType]:
    """Import and return ``(modAL.uncertainty, modAL.batch)`` without pulling in torch."""
    if "modAL.batch" not in sys.modules and "torch" not in sys.modules:
        finder = _HideTorch()
        sys.meta_path.insert(0, finder)
        try:
            import modAL.batch  # noqa: F401
            import modAL.uncertainty  # noqa: F401
        finally:
            sys.meta_path.remove(finder)
    import modAL.batch
    import modAL.uncertainty

    return modAL.uncertainty, modAL.batch


class CachedProba:
    """A fitted-classifier stand-in for modAL whose ``predict_proba`` returns cached rows.

    ``X`` passed to :meth:`predict_proba` must have one row per cached row, in the same order;
    its values are not read (pass the candidates' features, or their positions).

    Attributes:
        X_training: (L, d) labeled features used by modAL's ranked batch mode, or None.
        on_transformed: always False (modAL reads it in ranked batch mode).
    """

    on_transformed = False

    def __init__(
        self, proba: npt.NDArray[np.float32], x_training: npt.NDArray[np.float32] | None = None
    ) -> None:
        self._proba = proba
        self.X_training = x_training

    def predict_proba(self, X: Any) -> npt.NDArray[np.float32]:
        """Cached (len(X), k) probabilities; raises ValueError when the row counts differ."""
        if len(X) != len(self._proba):
            raise ValueError(f"CachedProba holds {len(self._proba)} rows, asked for {len(X)}")
        return self._proba


def uncertainty(name: str, proba: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Uncertainty of each row by modAL's measure ``name``, scaled to [0, 1], higher = less sure.

    Args:
        name: ``least_confidence``, ``margin`` or ``entropy``.
        proba: (m, k) class probabilities, rows summing to 1.

    Returns:
        (m,) float64: ``1 - max p`` for least confidence, ``1 - (p1 - p2)`` for margin,
        entropy divided by ``log k`` for entropy.
    """
    unc_mod, _ = _modal()
    func_name, surer = MEASURES[name]
    raw = getattr(unc_mod, func_name)(CachedProba(proba), np.empty((len(proba), 0)))
    values: npt.NDArray[np.float64] = np.asarray(raw, dtype=np.float64)
    if surer:
        return 1.0 - values
    if name == "entropy" and proba.shape[1] > 1:
        scaled: npt.NDArray[np.float64] = values / np.log(proba.shape[1])
        return scaled
    return values


def ranked_batch(
    name: str,
    candidates: npt.NDArray[np.float32],
    proba: npt.NDArray[np.float32],
    labeled: npt.NDArray[np.float32],
    n: int,
    scores: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.int64]:
    """Order candidates by modAL's ranked batch mode (Cardoso et al. 2017).

    Each pick balances uncertainty (by measure ``name``) against distance to the labeled cells
    and to earlier picks. Least confidence goes through ``modAL.batch.uncertainty_batch_sampling``;
    margin and entropy pass their own scores to ``modAL.batch.ranked_batch``. The cost grows with
    ``len(candidates) * len(labeled) * n``: give a few hundred candidates and only the labeled
    cells nearest to one of them (which leaves the result exact).

    Args:
        name: ``least_confidence``, ``margin`` or ``entropy``.
        candidates: (m, d) features of the candidate cells.
        proba: (m, k) their class probabilities.
        labeled: (L, d) features of labeled cells, L >= 1.
        n: how many to rank.
        scores: (m,) uncertainty scores to use instead of measure ``name`` (margin/entropy).

    Returns:
        (min(n, m),) int64 positions into ``candidates``, best first.
    """
    _, batch_mod = _modal()
    adapter = CachedProba(proba, labeled)
    n = min(n, len(candidates))
    if name == "least_confidence":
        picked, _ = batch_mod.uncertainty_batch_sampling(adapter, candidates, n_instances=n)
    else:
        picked, _ = batch_mod.ranked_batch(
            adapter,
            unlabeled=candidates,
            uncertainty_scores=uncertainty(name, proba) if scores is None else scores,
            n_instances=n,
            metric="euclidean",
            n_jobs=None,
        )
    return np.asarray(picked, dtype=np.int64)

"""``--finetune`` in simulation: the trainer's versions and the loop's ``auto`` choice."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from labeling.simulate.split import SimData, Split, standardise

if TYPE_CHECKING:
    from models.trainer.simulation import DeepFeatures

logger = logging.getLogger(__name__)


class _DeepTracker:
    """``--finetune``: the trainer's versions and the loop's ``auto`` choice, simulated.

    :meth:`finetune` fine-tunes on the labels so far and re-embeds every cell (a new version,
    which remembers the cells it was trained on); :meth:`choose` picks the head's features as
    ``labeling.feature_sets`` does: morphology alone unless morphology + the label-free backbone
    embedding (cross-validated on all labels) or + a fine-tuned embedding (judged only on the
    labels given after it was trained) wins by ``AUTO_MARGIN`` balanced accuracy.
    """

    def __init__(self, data: SimData, deep: DeepFeatures, split: Split, seed: int) -> None:
        self.data, self.deep, self.split, self.seed = data, deep, split, seed
        self.versions: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]] = []
        self.chosen = data.features  # (n, d) of every cell of data: the set the head uses
        self.name = "morphology"
        self.uses: dict[str, int] = {}

    def finetune(self, labels: np.ndarray, labeled: npt.NDArray[np.bool_]) -> None:
        if len(set(labels[labeled].tolist())) < 2:
            return
        t0 = time.perf_counter()
        ids = self.data.cell_ids[self.split.pool]
        given = {ids[i]: labels[i] for i in np.flatnonzero(labeled)}
        emb = standardise(self.deep.features(given)[self.data.keep])
        self.versions = [*self.versions[-3:], (emb, labeled.copy())]  # the trainer keeps 4
        logger.info(
            "seed %d: fine-tuned on %d labels and re-embedded in %.1f s",
            self.seed,
            len(given),
            time.perf_counter() - t0,
        )

    def choose(self, labels: np.ndarray, labeled: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
        from labeling.feature_sets import (
            AUTO_MARGIN,
            AUTO_MIN_FRESH,
            AUTO_MIN_PER_CLASS,
            judge_backbone,
            judge_finetuned,
        )

        morph = self.data.features
        self.chosen, self.name = morph, "morphology"
        y_all = labels[labeled]
        counts = {c: int(np.sum(y_all == c)) for c in set(y_all.tolist())}
        big = [c for c, k in counts.items() if k >= AUTO_MIN_PER_CLASS]
        if len(big) >= 2:
            rows = np.flatnonzero(labeled)
            rows = rows[np.isin(labels[rows], big)]
            y = labels[rows]
            pool_rows = self.split.pool[rows]
            tried = []
            backbone = standardise(self.deep.backbone_features()[self.data.keep])
            cand = np.hstack([morph, backbone])
            base, with_emb = judge_backbone(morph[pool_rows], cand[pool_rows], y, self.seed)
            tried.append((with_emb - base, "morphology+embedding", cand))
            for emb, trained in reversed(self.versions):
                fresh = ~trained[rows]
                if fresh.sum() >= AUTO_MIN_FRESH and len(set(y[fresh].tolist())) >= 2:
                    cand = np.hstack([morph, emb])
                    base, with_emb = judge_finetuned(
                        morph[pool_rows], cand[pool_rows], y, fresh, self.seed
                    )
                    tried.append((with_emb - base, "morphology+finetuned", cand))
                    break
            gain, name, cand = max(tried, key=lambda t: t[0])
            if gain >= AUTO_MARGIN:
                self.chosen, self.name = cand, name
        self.uses[self.name] = self.uses.get(self.name, 0) + 1
        return self.chosen[self.split.pool]

    def test_features(self) -> npt.NDArray[np.float32]:
        return self.chosen[self.split.test]

    def summary(self) -> dict[str, Any]:
        """The final round's set and how many rounds used each set."""
        return {
            "features": self.name,
            **{f"rounds_{k.replace('+', '_')}": v for k, v in sorted(self.uses.items())},
        }

"""Why a cell was put in the batch, in plain words: a short reason on each tile, the detail (the
sub-strategy's name and what it does) in a tooltip and the zoom."""

from __future__ import annotations

from typing import NamedTuple


class Reason(NamedTuple):
    short: str  # on the tile: a few plain words
    detail: str  # in the tooltip: what the strategy did, and its name


_UNLIKE = "unlike anything labeled"
_UNSURE = "model unsure"
_RARE = "looks like a rare class"
_RANDOM = "random check"

REASONS: dict[str, Reason] = {
    "random": Reason(_RANDOM, "picked at random (strategy random): these cells estimate how "
                     "common each class is"),
    "cluster_coverage": Reason(_UNLIKE, "from a group of similar cells with no label yet "
                               "(strategy cluster_coverage)"),
    "novelty": Reason(_UNLIKE, "far from every labeled cell (strategy novelty)"),
    "diversity": Reason(_UNLIKE, "spread over the screen's variety (strategy diversity)"),
    "typical": Reason(_UNLIKE, "the most typical cell of the largest group with no label "
                      "(strategy typical)"),
    "margin": Reason(_UNSURE, "the model's two top classes are close (strategy margin)"),
    "least_confidence": Reason(_UNSURE, "the model's top class is weak (strategy "
                               "least_confidence)"),
    "entropy": Reason(_UNSURE, "the model spreads its guess over classes (strategy entropy)"),
    "balanced_margin": Reason(_UNSURE, "the model is unsure, weighted toward classes with few "
                              "labels (strategy balanced_margin)"),
    "predicted_rare": Reason(_RARE, "the model gives it to a class with few labels "
                             "(strategy predicted_rare)"),
    "more_like_this": Reason(_RARE, "close to the labeled cells of a rare class "
                             "(strategy more_like_this)"),
}  # fmt: skip


def chosen_reason(strategy: str | None) -> Reason:
    """The plain reason for a cell chosen by sub-strategy ``strategy``."""
    if not strategy:
        return Reason("chosen earlier", "no strategy recorded for this cell")
    return REASONS.get(strategy, Reason(strategy.replace("_", " "), f"strategy {strategy}"))

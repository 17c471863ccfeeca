"""``discover``: find every class first, then spend labels where they teach the classifier.

Each batch holds

1. a uniformly random slice (:attr:`DiscoverConfig.random_fraction` of the batch, at least one
   cell when the batch has two or more: one cell of a batch of 10 or 24), so class prevalence
   and the chance of an unseen class can be estimated without bias; while that chance is larger
   than the fraction, the slice is that share of the batch (at most
   :attr:`DiscoverConfig.explore_full`): when one random cell in three is of a class nobody has
   labeled, random cells are themselves good finders, and they give the head an unbiased sample
   of the screen. Once the chance is small, a class at 0.1% is all but never in the slice, so
   every further random cell is a label not spent on finding it: the slice shrinks back to one
   cell a batch (a 20% slice, the earlier default, needed 31 +- 24 more labels to find every
   class on demo-rare and 115 +- 116 more on MitoCheck-rare at batch 24, 20 seeds; at batch 10,
   40 seeds, no screen moved significantly);
2. exploration slots, as many as the chance of an unseen class asks for (see below), each given
   to the arm with the highest draw from its Beta posterior: a Thompson-sampling bandit over
   cluster coverage, typical cells (TypiClust), novelty, diversity, margin, predicted-rare and
   more-like-this, with at least one exploration arm and (once a model exists) one margin slot
   among them;
3. the other slots to entropy sampling (modAL's entropy over the head's class-balanced
   probabilities, diversified by ranked batch mode).

The hand-over: the share of exploration slots is ``min(1, p / explore_full)``, ``p`` the
Good-Turing chance that the next random cell is of a class not seen yet
(:func:`labeling.strategies.unseen.unseen_class_chance`, on the random slice's labels, which the
state keeps; the whole batch explores while the slice is empty), never fewer than one slot. As
the slice grows without singletons the batch moves to uncertainty, as TypiClust -> margin
suggests, while one exploration cell per batch keeps looking for classes the model cannot yet
be uncertain about. (Handing over by the upper end of the estimate's interval instead explored
too long on screens with many classes: lower macro-F1.)

Why entropy: the head is class-balanced, so its entropy is high both on the boundaries of rare
classes and on cells that fit no labeled class, which keeps finding classes after the hand-over.
Measured with ``benchmarks/bench_simulate.py`` on 7 screens (10 seeds each, batch 24 and
budget 1,000 with the cut classes at 0.1%, or batch 10 and budget 300), entropy as the hand-over
found every class sooner than class-balanced margin on MitoCheck (165 -> 85 labels) and its
0.1% subsample (876 -> 468) and on the demo (40 -> 30), as soon on Jurkat and MP-IDB, later on
Jurkat's 0.1% subsample (228 -> 240); macro-F1 moved by -0.031 to +0.005. Class-balanced
entropy and a half-and-half mix of balanced margin and entropy were measured too, and found
classes later (MitoCheck 105 and 110 labels).

An arm is rewarded per labeled cell it chose: :attr:`DiscoverConfig.new_class_reward` when the
label is a class nobody had labeled before the batch (shared among the batch's cells of that
class, so an arm earns it per class found, not per cell), :attr:`DiscoverConfig.disagree_reward`
when it differs from the model's guess, 0 otherwise. Old evidence fades by
:attr:`DiscoverConfig.discount` per round, so the mix follows the screen as labeling goes on.
Cold start (no model over two classes) uses the exploration arms only, so the first batch is a
diverse one. The bandit's state is a JSON-able dict kept by the store between rounds.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labeling.strategies.arms import (
    RoundContext,
    make_uncertain,
    rank_coverage,
    rank_diversity,
    rank_novelty,
    rank_predicted_rare,
    rank_random,
    rank_rare_neighbours,
    rank_typical,
)
from labeling.strategies.batch import assemble
from labeling.strategies.pool import Selection
from labeling.strategies.unseen import UnseenClass, unseen_class_chance

logger = logging.getLogger(__name__)

STATE_VERSION = 2
#: The sub-strategy whose picks form the random slice.
RANDOM = "random"
#: The sub-strategy of the slots handed over from exploration.
HANDOVER = "entropy"
EXPLORE = {
    "cluster_coverage": rank_coverage,
    "typical": rank_typical,
    "novelty": rank_novelty,
    "diversity": rank_diversity,
}
EXPLOIT = {
    "margin": make_uncertain("margin"),
    "predicted_rare": rank_predicted_rare,
    "more_like_this": rank_rare_neighbours,
}
ARMS = {**EXPLORE, **EXPLOIT}


#: Beta prior (alpha, beta) of each arm: what was measured before on other screens (margin found
#: classes fastest on Jurkat, MitoCheck and MP-IDB, cluster coverage next; novelty kept picking
#: odd cells of one common class) for the bandit to correct.
PRIORS = {
    "cluster_coverage": (2.0, 1.0),
    "typical": (2.0, 1.0),
    "margin": (8.0, 1.0),
    "novelty": (0.5, 2.0),
    "diversity": (1.0, 2.0),
    "predicted_rare": (1.0, 2.0),
    "more_like_this": (1.0, 3.0),
}


@dataclass(frozen=True)
class DiscoverConfig:
    """Knobs of discover (defaults measured with ``benchmarks/bench_simulate.py`` on Jurkat,
    MitoCheck, MP-IDB and rare-class subsamples of them, one default for all)."""

    random_fraction: float = 0.05  # least share of each batch drawn uniformly at random
    discount: float = 0.8  # weight of an arm's past evidence after each round
    new_class_reward: float = 1.0  # reward for a label of a class not seen before the batch
    disagree_reward: float = 0.25  # reward for a label that differs from the model's guess
    rare_ratio: float = 0.25  # a class is rare below this share of the largest class's labels
    explore_full: float = 0.5  # unseen-class chance at which the whole batch explores
    handover_on_upper: bool = False  # hand over by the interval's upper end, not the estimate
    priors: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(PRIORS))


DEFAULT = DiscoverConfig()


def new_state(cfg: DiscoverConfig = DEFAULT) -> dict[str, Any]:
    """A fresh bandit state: every arm at its prior."""
    arms = {
        a: {"alpha": cfg.priors[a][0], "beta": cfg.priors[a][1], "picked": 0, "reward": 0.0}
        for a in ARMS
    }
    return {
        "strategy": "discover",
        "version": STATE_VERSION,
        "round": 0,
        "arms": arms,
        "slice": {},
    }


def _checked(state: Mapping[str, Any], cfg: DiscoverConfig = DEFAULT) -> dict[str, Any]:
    """``state`` as a discover state (a deep copy), fresh when it is empty or foreign; a state
    of version 1 (before the random slice was kept) keeps its arms and starts an empty slice."""
    if state.get("strategy") != "discover" or state.get("version") not in (1, STATE_VERSION):
        if state:
            logger.warning("discover: ignoring a state of another strategy or version")
        return new_state(cfg)
    out = copy.deepcopy(dict(state))
    out["version"] = STATE_VERSION
    for arm, stats in new_state(cfg)["arms"].items():
        out["arms"].setdefault(arm, stats)
    out.setdefault("slice", {})
    return out


def unseen_chance(state: Mapping[str, Any]) -> UnseenClass:
    """The chance of an unseen class from the random slice's labels a discover state keeps."""
    from labeling.store.classes import BAD_SEGMENTATION, UNSURE

    return unseen_class_chance(state.get("slice") or {}, pseudo=(UNSURE, BAD_SEGMENTATION))


def n_explore(n_slots: int, unseen: UnseenClass, cfg: DiscoverConfig = DEFAULT) -> int:
    """Exploration slots of a batch with ``n_slots`` non-random slots (see the module doc)."""
    if n_slots <= 0:
        return 0
    chance = unseen.high if cfg.handover_on_upper or unseen.p is None else unseen.p
    share = min(1.0, chance / cfg.explore_full)
    return int(min(n_slots, max(1, round(share * n_slots))))


def _n_random(n: int, unseen: UnseenClass, rng: np.random.Generator, cfg: DiscoverConfig) -> int:
    """Random-slice size: ``random_fraction`` of the batch, or the chance of an unseen class when
    that is larger (at most ``explore_full``), at least 1 for n >= 2; for n == 1 the cell is
    random with probability ``random_fraction``."""
    if n == 1:
        return int(rng.random() < cfg.random_fraction)
    share = cfg.random_fraction
    if unseen.p is not None:
        share = max(share, min(unseen.p, cfg.explore_full))
    return max(1, int(round(share * n)))


def _available(ctx: RoundContext, cfg: DiscoverConfig) -> tuple[list[str], list[str]]:
    """(exploration arms, model-driven arms) that can run this round."""
    explore = ["cluster_coverage", "typical", "diversity"] + (["novelty"] if len(ctx.lab) else [])
    counts = ctx.pool.class_counts
    if not ctx.has_model or len(counts) < 2:
        return explore, []
    exploit = ["margin"]
    if min(counts.values()) < cfg.rare_ratio * max(counts.values()):
        exploit += ["predicted_rare", "more_like_this"]
    return explore, exploit


def _allocate(
    explore: list[str],
    exploit: list[str],
    n_slots: int,
    state: Mapping[str, Any],
    rng: np.random.Generator,
) -> list[str]:
    """One arm per slot by Thompson sampling; slot 0 goes to an exploration arm and slot 1 to
    margin (when a model exists)."""
    arms = explore + exploit
    alpha = np.asarray([state["arms"][a]["alpha"] for a in arms])
    beta = np.asarray([state["arms"][a]["beta"] for a in arms])
    out = []
    for slot in range(n_slots):
        draw = rng.beta(alpha, beta)
        if slot == 0:
            draw[len(explore) :] = -1.0
        elif slot == 1 and exploit:
            draw[[a != "margin" for a in arms]] = -1.0
        out.append(arms[int(np.argmax(draw))])
    return out


def _interleave(allocation: list[str]) -> list[str]:
    """Round-robin over arms (most slots first, then by name) so each arm's best candidates
    come before any arm's second best."""
    counts: dict[str, int] = {}
    for a in allocation:
        counts[a] = counts.get(a, 0) + 1
    order = sorted(counts, key=lambda a: (-counts[a], a))
    out = []
    for r in range(max(counts.values(), default=0)):
        out += [a for a in order if counts[a] > r]
    return out


def run_discover(
    ctx: RoundContext, n: int, state: Mapping[str, Any], cfg: DiscoverConfig = DEFAULT
) -> tuple[Selection, dict[str, Any]]:
    """Choose a batch of ``n`` cells (see the module docstring); the batch order is shuffled.

    Returns:
        ``(selection, state)``; the state is returned unchanged (rewards come with labels,
        through :func:`reward_discover`) apart from the round's plan and unseen-class chance.
    """
    state = _checked(state, cfg)
    explore, exploit = _available(ctx, cfg)
    unseen = unseen_chance(state)
    n_random = _n_random(n, unseen, ctx.rng, cfg)
    n_slots = n - n_random
    k = n_explore(n_slots, unseen, cfg) if exploit else n_slots
    plan = _interleave(_allocate(explore, exploit, k, state, ctx.rng))
    plan = [RANDOM] * n_random + plan + [HANDOVER] * (n_slots - k)
    wanted: dict[str, int] = {}
    for a in plan:
        wanted[a] = wanted.get(a, 0) + 1
    arms = {**ARMS, RANDOM: rank_random, HANDOVER: make_uncertain(HANDOVER)}
    ranked = {a: arms[a](ctx, k) for a, k in sorted(wanted.items())}
    sel = assemble(ctx, plan, ranked)
    order = ctx.rng.permutation(len(sel.cell_ids))
    sel = Selection(
        *([lst[i] for i in order] for lst in (sel.cell_ids, sel.strategies, sel.scores))
    )
    state["last_plan"] = dict(sorted(wanted.items()))
    state["unseen"] = unseen.as_dict()
    logger.debug("discover round %d: %s", state["round"], state["last_plan"])
    return sel, state


def reward_discover(
    state: Mapping[str, Any],
    selection: Selection,
    given: Mapping[str, str],
    guesses: Mapping[str, str | None],
    known_classes_before: set[str],
    cfg: DiscoverConfig = DEFAULT,
) -> dict[str, Any]:
    """Fade every arm's evidence by ``cfg.discount``, then reward the arms that chose the
    labeled cells of ``selection`` (cells without a label in ``given`` are skipped)."""
    out = _checked(state, cfg)
    for arm, stats in out["arms"].items():
        a0, b0 = cfg.priors.get(arm, (1.0, 1.0))
        stats["alpha"] = a0 + cfg.discount * (stats["alpha"] - a0)
        stats["beta"] = b0 + cfg.discount * (stats["beta"] - b0)
    new_cells = Counter(
        given[c]
        for c in selection.cell_ids
        if given.get(c) is not None and given[c] not in known_classes_before
    )
    for cell_id, arm in zip(selection.cell_ids, selection.strategies, strict=True):
        label = given.get(cell_id)
        if label is None:
            continue
        if arm == RANDOM:
            out["slice"][label] = out["slice"].get(label, 0) + 1
            continue
        if arm == HANDOVER or arm not in out["arms"]:
            continue
        guess = guesses.get(cell_id)
        if label in new_cells:
            r = cfg.new_class_reward / new_cells[label]
        elif guess is not None and label != guess:
            r = cfg.disagree_reward
        else:
            r = 0.0
        stats = out["arms"].setdefault(arm, {"alpha": 1.0, "beta": 1.0, "picked": 0, "reward": 0.0})
        stats["alpha"] += r
        stats["beta"] += 1.0 - r
        stats["picked"] += 1
        stats["reward"] += r
    out["round"] += 1
    return out

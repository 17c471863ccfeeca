"""The chance that the next cell belongs to a class nobody has labeled yet: one estimate, used by
``discover`` (to hand over from exploration to class-balanced uncertainty), by ``report`` and by
the Discover page.

It is the Good-Turing estimate of the unseen probability mass, ``n1 / n``, on a sample for which
it is valid: the RANDOM SLICE (the cells the "random" sub-strategy picked, a uniform sample of
the screen), never on the labels other strategies chose. ``n1`` counts real classes seen exactly
once in the slice and ``n`` the slice's size (pseudo-labels such as "unsure" included: they are
cells of the screen too). The interval is a normal one with Esty's (1983) variance
``(n1 (1 - n1/n) + 2 n2) / n^2`` (``n2``: classes seen exactly twice), widened where it is
too narrow to the one-sided exact (Clopper-Pearson) bounds of the share ``n1`` of ``n``: the
upper end is at least ``1 - alpha^(1/n)`` when no class is rare in the slice (a class of that
share would be missed by all ``n`` cells with chance ``alpha``), and the lower end at most
``alpha^(1/n)`` when every cell is of a class seen once (Esty's variance is 0 there too: one
random cell used to read "100% (100%-100%)").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from statistics import NormalDist

#: Random cells under which the estimate (and prevalence, and the curve of labeling at random)
#: is a rough guide: ``report`` and the Discover page then lead with the interval's upper end.
FEW_RANDOM = 30


@dataclass(frozen=True)
class UnseenClass:
    """The estimate and what it rests on.

    Attributes:
        p: n1 / n, or None when the slice is empty.
        low: lower end of the interval (0 for an empty slice).
        high: upper end (1 for an empty slice).
        n: cells in the random slice.
        n1: real classes seen exactly once in it.
        n2: real classes seen exactly twice.
    """

    p: float | None
    low: float
    high: float
    n: int
    n1: int
    n2: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def unseen_class_chance(
    slice_labels: Mapping[str, int] | Iterable[str],
    pseudo: Iterable[str] = (),
    confidence: float = 0.95,
) -> UnseenClass:
    """Good-Turing chance that the next random cell is of a class not in the random slice.

    Args:
        slice_labels: the random slice's labels, one per cell, or class -> count.
        pseudo: labels that are not classes (they count as cells, never as classes).
        confidence: of the interval.

    Returns:
        The estimate with its interval.
    """
    if isinstance(slice_labels, Mapping):
        counts = {str(k): int(v) for k, v in slice_labels.items() if int(v) > 0}
    else:
        counts = {}
        for lab in slice_labels:
            counts[str(lab)] = counts.get(str(lab), 0) + 1
    n = sum(counts.values())
    if n == 0:
        return UnseenClass(None, 0.0, 1.0, 0, 0, 0)
    skip = set(pseudo)
    real = [k for name, k in counts.items() if name not in skip]
    n1 = sum(1 for k in real if k == 1)
    n2 = sum(1 for k in real if k == 2)
    p = n1 / n
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    se = math.sqrt(max(n1 * (1 - p) + 2 * n2, 0.0)) / n
    low, high = _exact_bounds(n1, n, 1 - confidence)
    low, high = min(p - z * se, low), max(p + z * se, high)
    return UnseenClass(p, max(0.0, low), min(1.0, high), n, n1, n2)


def _exact_bounds(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds (each at level ``alpha``) of a share seen ``k`` times
    in ``n``."""
    from scipy.special import betaincinv

    low = float(betaincinv(k, n - k + 1, alpha)) if k > 0 else 0.0
    high = float(betaincinv(k + 1, n - k, 1 - alpha)) if k < n else 1.0
    return low, high

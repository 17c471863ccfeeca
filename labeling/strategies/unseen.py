"""The chance that the next cell belongs to a class nobody has labeled yet: one estimate, used by
``discover`` (to hand over from exploration to class-balanced uncertainty), by ``report`` and by
the Discover page.

It is the Good-Turing estimate of the unseen probability mass, ``n1 / n``, on a sample for which
it is valid: the RANDOM SLICE (the cells the "random" sub-strategy picked, a uniform sample of
the screen), never on the labels other strategies chose. ``n1`` counts real classes seen exactly
once in the slice and ``n`` the slice's size (pseudo-labels such as "unsure" included: they are
cells of the screen too). The interval is a normal one with Esty's (1983) variance
``(n1 (1 - n1/n) + 2 n2) / n^2`` (``n2``: classes seen exactly twice); its upper end is at least
``1 - alpha^(1/n)``, the exact upper bound when no class is rare in the slice (a class of that
share would be missed by all ``n`` cells with chance ``alpha``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from statistics import NormalDist


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
    alpha = 1 - confidence
    high = max(p + z * se, 1 - alpha ** (1 / n))
    return UnseenClass(p, max(0.0, p - z * se), min(1.0, high), n, n1, n2)

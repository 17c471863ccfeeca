"""Counts in words for messages: ``count(1, "field")`` is "1 field", ``count(3, "field")``
"3 fields"."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 cell"``, ``"2 cells"``; ``plural`` where adding an s is wrong (``"classes"``)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"

"""Validation of free-text class names (unicode, spaces, `=`, quotes and emoji are all fine)."""

from __future__ import annotations

from collections.abc import Iterable

from datasets.names import MAX_NAME_LEN as MAX_NAME_LEN
from datasets.names import SKIP as SKIP
from datasets.names import class_name_problem
from labeling.errors import StoreError


def normalise_class_name(name: str) -> str:
    """Return ``name`` NFC-normalised with surrounding whitespace stripped.

    The rule is :func:`datasets.names.class_name_problem`, the same for ground truth and
    imported labels.

    Raises:
        StoreError: when the name is not a string, empty, longer than 200 characters, contains
            a newline or control character, or is the reserved SKIP sentinel.
    """
    clean, problem = class_name_problem(name)
    if problem:
        raise StoreError(problem)
    return clean


def did_you_mean(name: str, names: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(names), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def class_list(text: str) -> list[str]:
    """Class names typed comma-separated (``init --classes``, the app's Project page): each
    checked as :func:`normalise_class_name` checks a name, empty items dropped, order kept.

    Raises:
        StoreError: a bad name, or a name given twice (also differing only by case).
    """
    names = [normalise_class_name(n) for n in str(text).split(",") if n.strip()]
    seen: dict[str, str] = {}
    for name in names:
        if name.casefold() in seen:
            raise StoreError(f"class {name!r} is given twice (as {seen[name.casefold()]!r})")
        seen[name.casefold()] = name
    return names

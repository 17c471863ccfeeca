"""Validation of free-text class names (unicode, spaces, `=`, quotes and emoji are all fine)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from labeling.errors import StoreError

SKIP = "__skip__"  # label sentinel: "seen, not labeled"; closes the lease, records no label
MAX_NAME_LEN = 200
_BAD_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}  # control chars, surrogates, line/para separators


def normalise_class_name(name: str) -> str:
    """Return ``name`` NFC-normalised with surrounding whitespace stripped.

    Raises:
        StoreError: when the name is not a string, empty, longer than 200 characters, contains
            a newline or control character, or is the reserved SKIP sentinel.
    """
    if not isinstance(name, str):
        raise StoreError(f"class name {name!r} is not text; give class names as strings")
    clean = unicodedata.normalize("NFC", name).strip()
    if not clean:
        raise StoreError(f"class name {name!r} is empty; type a name such as 'mitotic'")
    if len(clean) > MAX_NAME_LEN:
        raise StoreError(
            f"class name {clean[:40]!r}... has {len(clean)} characters; use at most {MAX_NAME_LEN}"
        )
    bad = [ch for ch in clean if unicodedata.category(ch) in _BAD_CATEGORIES]
    if bad:
        raise StoreError(
            f"class name {clean!r} contains a newline or control character {bad[0]!r}; "
            "use a single line of printable text"
        )
    if clean == SKIP:
        raise StoreError(f"class name {SKIP!r} is reserved for skipping a cell; pick another")
    return clean


def did_you_mean(name: str, names: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(names), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""

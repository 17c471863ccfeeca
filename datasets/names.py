"""The one rule for class names, shared by ground truth (``labels.csv``), imported labels and
the label store (:func:`labeling.store.names.normalise_class_name`)."""

from __future__ import annotations

import unicodedata

SKIP = "__skip__"  # label sentinel: "seen, not labeled"; closes the lease, records no label
MAX_NAME_LEN = 200
_BAD_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}  # control chars, surrogates, line/para separators


def class_name_problem(name: object) -> tuple[str, str | None]:
    """``name`` NFC-normalised with surrounding whitespace stripped, and what is wrong with it.

    Returns:
        ``(clean, problem)``: problem is None for a valid name, else one line saying why not:
        not a string, empty, longer than 200 characters, a newline or control character, or
        the reserved SKIP sentinel.
    """
    if not isinstance(name, str):
        return "", f"class name {name!r} is not text; give class names as strings"
    clean = unicodedata.normalize("NFC", name).strip()
    if not clean:
        return clean, f"class name {name!r} is empty; type a name such as 'mitotic'"
    if len(clean) > MAX_NAME_LEN:
        return clean, (
            f"class name {clean[:40]!r}... has {len(clean)} characters; use at most {MAX_NAME_LEN}"
        )
    bad = [ch for ch in clean if unicodedata.category(ch) in _BAD_CATEGORIES]
    if bad:
        return clean, (
            f"class name {clean!r} contains a newline or control character {bad[0]!r}; "
            "use a single line of printable text"
        )
    if clean == SKIP:
        return clean, f"class name {SKIP!r} is reserved for skipping a cell; pick another"
    return clean, None

"""What ``phenoscout report`` prints: the report's numbers in a few lines, read back from the
files :func:`labeling.reports.report.write_report` wrote (so nothing is computed twice).

::

    192 labels, 7 classes found; the last new one (mitotic) at label 14, 178 labels ago
    Chance that the next cell is of a class not seen yet: 0.0% (95% interval 0.0%-14.6%), from
    19 random cells   (one line)
    class           labels  found at  found by          CV F1
    interphase          53         2  typical           0.743
    ...
    cross-validation: 5 folds, macro F1 0.690, balanced accuracy 0.687
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from datasets.words import count
from labeling.strategies.unseen import FEW_RANDOM


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _headline(stop: dict[str, Any]) -> list[str]:
    n, k = stop["n_labels"], stop["n_classes"]
    if n == 0:
        return ["No labels yet: label a batch (phenoscout next / label, or the app) first"]
    head = f"{n} labels, {k} class{'' if k == 1 else 'es'} found"
    if stop["last_new_class"] is not None:
        head += (
            f"; the last new one ({stop['last_new_class']}) at label "
            f"{stop['last_new_class_at']}, {stop['labels_since_new_class']} labels ago"
        )
    n_random = int(stop["n_random"])
    if stop["p_new_class"] is None:
        chance = "Chance of a class not seen yet: no random cells labeled yet to estimate it"
    elif n_random < FEW_RANDOM:  # lead with what so few cells can say: an upper bound
        chance = (
            "Chance that the next cell is of a class not seen yet: at most "
            f"{_pct(stop['p_new_class_high'])} (the upper end of its 95% interval; the "
            f"estimate, {_pct(stop['p_new_class'])}, rests on only {n_random} random "
            f"cell{'' if n_random == 1 else 's'})"
        )
    else:
        chance = (
            f"Chance that the next cell is of a class not seen yet: {_pct(stop['p_new_class'])} "
            f"(95% interval {_pct(stop['p_new_class_low'])}-{_pct(stop['p_new_class_high'])}), "
            f"from {count(int(stop['n_random']), 'random cell')}"
        )
    return [head, chance]


def _class_table(out: Path) -> list[str]:
    counts = pd.read_csv(out / "counts.csv")
    counts = counts[~counts["pseudo"] | (counts["n_labeled"] > 0)]
    if counts.empty:
        return []
    f1: dict[str, float] = {}
    if (out / "per_class.csv").exists():
        per_class = pd.read_csv(out / "per_class.csv")
        f1 = dict(zip(per_class["label"].astype(str), per_class["f1"], strict=True))
    width = max(len("class"), *(len(str(c)) for c in counts["label"]))
    lines = [f"{'class':<{width}}  labels  found at  found by          CV F1"]
    for row in counts.itertuples(index=False):
        found = "-" if pd.isna(row.first_found_at) else str(int(row.first_found_at))
        by = "-" if pd.isna(row.first_found_by) else str(row.first_found_by)
        score = f1.get(str(row.label))
        cv = "-" if score is None or pd.isna(score) else f"{score:.3f}"
        lines.append(f"{row.label!s:<{width}}  {row.n_labeled:>6}  {found:>8}  {by:<16}  {cv:>5}")
    return lines


def summary_text(out_dir: Path) -> str:
    """A few lines on the report written to ``out_dir``: labels and classes found, the chance of
    an unseen class, a row per class (labels, first found, cross-validated F1) and the notes."""
    out = Path(out_dir)
    stop = json.loads((out / "stopping.json").read_text(encoding="utf-8"))
    notes = (out / "notes.txt").read_text(encoding="utf-8").splitlines()
    return "\n".join(_headline(stop) + _class_table(out) + notes)

"""The peer table: paired differences, random's median over orderings and the verdict."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from labeling.simulate.split import F1_TOLERANCE, PEERS, round_up

if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------- the peer table
def _t_interval(diff: npt.NDArray[np.float64], confidence: float = 0.95) -> tuple[float, float]:
    """Mean of paired differences and the half-width of its t-interval (NaN for < 2 pairs)."""
    from scipy.stats import t

    diff = diff[np.isfinite(diff)]
    if len(diff) == 0:
        return float("nan"), float("nan")
    mean = float(diff.mean())
    if len(diff) < 2:
        return mean, float("nan")
    half = float(t.ppf(0.5 + confidence / 2, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
    return mean, half


def summarise(
    summary,  # pd.DataFrame of run_one summary rows
    random_need: npt.NDArray[np.int64],
    batch_size: int,
    target: str = "discover",
) -> tuple[Any, dict[str, Any]]:
    """The peer table and the verdict.

    Labels to all classes of a run that never saw every class counts as budget + one batch
    (a lower bound) in medians and differences; ``runs_all`` says how many runs found all.

    Args:
        summary: one row per strategy and seed (:func:`run_one`).
        random_need: random sampling's labels to all classes over many orderings of the pools.
        batch_size: labels per round.
        target: the strategy compared with the others.

    Returns:
        ``(table, verdict)``: one row per strategy (``strategy, seeds, runs_all,
        labels_to_all, macro_f1, d_labels, d_labels_ci, d_f1, d_f1_ci``; the ``d_`` columns are
        ``target`` minus the strategy, mean over seeds and 95% half-width), and a dict with
        ``random_orderings`` (median, rounded up to a batch), ``labels_goal``,
        ``best_peer``, ``f1_gap``, ``f1_gap_ci``, ``labels_ok``, ``f1_ok``, ``goal_met``.
    """
    import pandas as pd

    s = summary.copy()
    censored = s["budget"] + batch_size
    need = s["labels_to_all_classes"].astype("Float64").fillna(censored).astype(float)
    s["need"] = need
    wide_need = s.pivot(index="seed", columns="strategy", values="need")
    wide_f1 = s.pivot(index="seed", columns="strategy", values="macro_f1")
    strategies = list(dict.fromkeys(s["strategy"]))
    rows = []
    for name in strategies:
        runs = s[s["strategy"] == name]
        row = dict(
            strategy=name,
            seeds=len(runs),
            runs_all=int(runs["labels_to_all_classes"].notna().sum()),
            labels_to_all=float(runs["need"].median()),
            macro_f1=float(runs["macro_f1"].median()),
            # most runs never saw every class: the median is only "more than the budget"
            labels_censored=bool(float(runs["need"].median()) > float(runs["budget"].max())),
        )
        if target in wide_need and name != target:
            row["d_labels"], row["d_labels_ci"] = _t_interval(
                (wide_need[target] - wide_need[name]).to_numpy(float)
            )
            row["d_f1"], row["d_f1_ci"] = _t_interval(
                (wide_f1[target] - wide_f1[name]).to_numpy(float)
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("d_labels", "d_labels_ci", "d_f1", "d_f1_ci"):
        if col not in table:
            table[col] = np.nan
    random_median = round_up(float(np.median(random_need)), batch_size)
    verdict: dict[str, Any] = {
        "budget": int(s["budget"].max()),
        "random_orderings": random_median,
        "labels_goal": round_up(random_median / 2, batch_size),
    }
    med = table.set_index("strategy")
    others = [x for x in strategies if x != target]
    if target in med.index and others:
        best = max(others, key=lambda x: (med.loc[x, "macro_f1"], x))
        gap, half = _t_interval((wide_f1[target] - wide_f1[best]).to_numpy(float))
        uncertain = [x for x in ("margin", "entropy") if x in med.index]
        t_need = med.loc[target, "labels_to_all"]
        labels_ok = (
            not med.loc[target, "labels_censored"]  # it did not find them all: never "yes"
            and t_need <= verdict["labels_goal"]
            and (not uncertain or t_need <= min(med.loc[x, "labels_to_all"] for x in uncertain))
        )
        peers = [x for x in PEERS if x in med.index] or others
        best_peer_f1 = max(med.loc[x, "macro_f1"] for x in peers)
        f1_ok = bool(med.loc[target, "macro_f1"] >= best_peer_f1 - F1_TOLERANCE)
        verdict.update(
            best_other=best,
            f1_gap=gap,
            f1_gap_ci=half,
            labels_ok=bool(labels_ok),
            f1_ok=f1_ok,
            goal_met=bool(labels_ok and f1_ok),
        )
    return table, verdict


def format_summary(table, verdict: dict[str, Any], target: str = "discover") -> str:
    """The peer table and the verdict as text (what ``phenoscout simulate`` prints)."""
    lines = [
        f"{'strategy':<18}{'seeds':>6}{'found all':>10}{'labels to all':>15}{'macro-F1':>10}"
        f"{f'{target} - it: labels':>26}{'F1':>18}"
    ]
    censored = False
    for r in table.itertuples(index=False):
        d_l = "" if math.isnan(r.d_labels) else f"{r.d_labels:+.1f} +- {r.d_labels_ci:.1f}"
        d_f = "" if math.isnan(r.d_f1) else f"{r.d_f1:+.3f} +- {r.d_f1_ci:.3f}"
        need = f"{r.labels_to_all:.0f}"
        if getattr(r, "labels_censored", False):
            need = f">{verdict.get('budget', r.labels_to_all):.0f}"
        censored |= r.runs_all < r.seeds
        lines.append(
            f"{r.strategy:<18}{r.seeds:>6}{f'{r.runs_all}/{r.seeds}':>10}"
            f"{need:>15}{r.macro_f1:>10.3f}{d_l:>26}{d_f:>18}"
        )
    if censored:
        lines.append(
            "a run that never saw every class counts as the budget plus one batch in medians "
            "and differences (a lower bound); '>N': most runs did not find them all in N labels"
        )
    lines.append(
        f"random over orderings of the pool: median {verdict['random_orderings']} labels "
        f"(rounded up to a batch); goal for {target}: <= {verdict['labels_goal']}"
    )
    if "goal_met" in verdict:
        lines.append(
            f"F1 gap {target} - {verdict['best_other']} (best other): "
            f"{verdict['f1_gap']:+.3f} +- {verdict['f1_gap_ci']:.3f} (95%, paired by seed)"
        )
        yes = {True: "yes", False: "NO"}
        lines.append(
            f"goal met: labels {yes[verdict['labels_ok']]}, F1 within {F1_TOLERANCE} of the "
            f"best of random/margin/entropy {yes[verdict['f1_ok']]}"
        )
    return "\n".join(lines)

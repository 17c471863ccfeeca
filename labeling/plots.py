"""Matplotlib figures written to files (CLI reports and the simulation benchmark)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

#: One colour per strategy, stable across figures.
_COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]


def plot_discovery(
    curves: pd.DataFrame,
    prevalence: Mapping[str, float],
    out: Path,
    title: str = "",
) -> Path:
    """Per-class discovery curves: one panel per class, strategies overlaid.

    Each strategy's median over seeds is drawn thick, single seeds thin; the dashed grey line is
    the expected curve of random sampling (labels spent x the class's prevalence).

    Args:
        curves: rows ``strategy, seed, n_labeled, label, n_found``.
        prevalence: class -> fraction of the dataset.
        out: the PNG to write.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted(prevalence, key=lambda c: prevalence[c])  # rarest first
    n_cols = min(4, len(classes))
    n_rows = math.ceil(len(classes) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 2.9 * n_rows), squeeze=False)
    strategies = list(dict.fromkeys(curves["strategy"]))
    x_max = int(curves["n_labeled"].max()) if len(curves) else 1
    for ax, cls in zip(axes.flat, classes):
        sub = curves[curves["label"] == cls]
        for k, strategy in enumerate(strategies):
            colour = _COLOURS[k % len(_COLOURS)]
            s = sub[sub["strategy"] == strategy]
            for _, run in s.groupby("seed"):
                ax.plot(run["n_labeled"], run["n_found"], color=colour, lw=0.6, alpha=0.35)
            med = s.groupby("n_labeled")["n_found"].median()
            ax.plot(med.index, med.to_numpy(), color=colour, lw=2, label=strategy)
        ax.plot([0, x_max], [0, x_max * prevalence[cls]], "--", color="#9ca3af", lw=1.2,
                label="random (expected)")
        ax.set_title(f"{cls} ({100 * prevalence[cls]:.2g}%)", fontsize=10)
        ax.set_xlabel("labels spent", fontsize=8)
        ax.set_ylabel("cells found", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(classes):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

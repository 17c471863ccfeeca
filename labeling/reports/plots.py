"""Matplotlib figures written to files (CLI reports and the simulation benchmark)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

#: One colour per strategy, stable across figures.
_COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]


def pyplot():  # -> the matplotlib.pyplot module, on the file-only Agg backend
    """matplotlib.pyplot, imported lazily with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Characters of a class name shown in a figure (panel titles, tick labels); the rest is "…".
NAME_CHARS = 28


def short(name: object, n: int = NAME_CHARS) -> str:
    """``name`` cut to ``n`` characters with "…", so that a long class name (up to 200 are
    allowed) cannot crowd a figure's panels or shrink a heatmap to a corner."""
    text = str(name)
    return text if len(text) <= n else text[: n - 1] + "…"


def class_panels(n_panels: int) -> tuple[Any, Any]:
    """A grid of up to four panels per row, one per class: ``(figure, axes (rows, cols))``."""
    plt = pyplot()
    n_cols = min(4, max(1, n_panels))
    n_rows = math.ceil(max(1, n_panels) / n_cols)
    return plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 2.9 * n_rows), squeeze=False)


def style_panel(ax: Any, title: str) -> None:
    """Title, axis labels and grid of one discovery panel."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("labels spent", fontsize=8)
    ax.set_ylabel("cells found", fontsize=8)
    ax.tick_params(labelsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # cells are counted whole
    ax.grid(alpha=0.3)


def finish_panels(fig: Any, axes: Any, n_used: int, out: Path, title: str = "") -> Path:
    """Hide unused panels, add a shared legend and the title, and save the PNG."""
    for ax in list(axes.flat)[n_used:]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, out, rect=(0, 0.06, 1, 0.96))


def save_figure(fig: Any, out: Path, rect: tuple[float, ...] = (0, 0, 1, 1)) -> Path:
    """Lay out, write (110 dpi) and close ``fig``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # a class name with an emoji draws a box, nothing worse
        warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
        fig.tight_layout(rect=rect)
        fig.savefig(out, dpi=110)
    pyplot().close(fig)
    return out


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
    classes = sorted(prevalence, key=lambda c: prevalence[c])  # rarest first
    fig, axes = class_panels(len(classes))
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
        ax.plot(
            [0, x_max],
            [0, x_max * prevalence[cls]],
            "--",
            color="#9ca3af",
            lw=1.2,
            label="random (expected)",
        )
        style_panel(ax, f"{short(cls)} ({100 * prevalence[cls]:.2g}%)")
    return finish_panels(fig, axes, len(classes), out, title)

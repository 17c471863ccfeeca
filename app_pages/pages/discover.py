"""The Discover page: what has been found at what cost, how common each class is, whether to stop,
what the head predicts over the whole screen (and per well), and how good it is.

Everything is computed by ``labeling.reports``; the slow parts (cross-validation, predictions)
are cached per label state (``common.labels_key``), so reruns are instant.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app_pages.server.common import cached, labels_key, run_page
from app_pages.widgets.reasons import REASONS
from app_pages.widgets.text import md
from app_pages.widgets.tiles import WIDE_PAGE_CSS
from labeling.errors import DataError, NotTrainedError
from labeling.project import Project
from labeling.reports.report import (
    class_counts,
    discovery_curves,
    expected_random_curve,
    labels_per_round,
    prevalence,
    stopping_signal,
)
from labeling.strategies.unseen import FEW_RANDOM

_MAX_POINTS = 400  # x positions per class drawn in the discovery chart


#: Random cells from which the expected curve, its band and prevalence are drawn, and the
#: chance of a new class leads with its estimate (before: with its upper bound)
MIN_SLICE = FEW_RANDOM


def render_discover_page(project: Project) -> None:
    """Draw the whole Discover page for ``project``."""
    store = project.store
    events = store.label_events()
    st.header("Discover")
    st.html(f"<style>{WIDE_PAGE_CSS}</style>")
    if not events:
        st.info("No labels yet: label a batch on the Label page, then come back here.")
        return
    classes = [c.name for c in store.classes(include_pseudo=False)]
    prev = prevalence(events, classes)
    _stopping(project, events)
    st.subheader("Discovery curves")
    _discovery_chart(events, classes, prev)
    st.subheader("Classes: counts and prevalence")
    _counts(project, events, prev)
    st.subheader("Labels per round")
    _rounds(project, events)
    key = labels_key(project)
    st.subheader("Predicted classes over the whole screen")
    _predicted(project, key)
    st.subheader("Cross-validated quality")
    _quality(project, key)


def _pct(p: float) -> str:
    return f"{p:.0%}" if p >= 0.1 or p == 0 else f"{p:.1%}"


def _stopping(project: Project, events: list) -> None:
    """Labels and cells, classes found, labels since the last new class, and the chance of an
    unseen class: ``labeling.strategies.unseen.unseen_class_chance`` on the random slice (the
    estimate ``discover`` hands over by), with what it rests on, in words."""
    stop = stopping_signal(events)
    p_new, n_random, n1 = stop["p_new_class"], int(stop["n_random"]), int(stop["n_singletons"])
    n_cells = len(project.store.current_labels(include_pseudo=True))
    cols = st.columns(4)
    cols[0].metric("Labels", stop["n_labels"], help=f"on {n_cells} cells (relabels count)")
    cols[1].metric("Classes found", stop["n_classes"])
    last = stop["last_new_class"]
    cols[2].metric(
        "Labels since last new class",
        stop["labels_since_new_class"],
        help=None if last is None else f"{md(last)}, found at label {stop['last_new_class_at']}",
    )
    high = None if p_new is None else float(stop["p_new_class_high"])
    if p_new is None:
        chance = "-"
    elif n_random < MIN_SLICE:  # "0%" from 7 random cells reads as "no new class": it is not
        chance = f"≤ {_pct(float(high or 1.0))}"
    else:
        chance = _pct(float(p_new)) + (f" (≤ {_pct(high)})" if high else "")
    cols[3].metric(
        "Chance of a new class",
        chance,
        help="Good-Turing estimate on the random slice: classes seen exactly once there, "
        "divided by its cells; in brackets the upper end of its 95% interval (a 0% from 14 "
        f"random cells may still be 19%). Under {MIN_SLICE} random cells only that upper end "
        "is shown. discover explores less as it falls.",
    )
    with st.container(key="stop-words"):
        if p_new is None:
            st.caption(
                "No random cells labeled yet: the chance of a class not seen yet is estimated "
                "from the random slice (the cells shown as **random check**)."
            )
            return
        rests = (
            f"Rests on the **{n_random}** random cells labeled (the **random check** tiles) of "
            f"{stop['n_labels']} labels: {n1} class{'es' if n1 != 1 else ''} seen exactly once "
            f"among them. The next random cell has a **{_pct(float(p_new))}** chance of being "
            f"of a class the random cells have not shown yet (95%: "
            f"{_pct(float(stop['p_new_class_low']))} to {_pct(float(stop['p_new_class_high']))})."
        )
        if n_random < MIN_SLICE:
            rests += (
                f" With fewer than {MIN_SLICE} random cells this is a rough guide only; classes "
                "found by the other strategies but not yet among the random cells count as "
                "unseen here."
            )
        elif p_new <= 0.01 and stop["labels_since_new_class"] >= 100:
            rests += " Few new classes remain likely: labeling more mostly sharpens the model."
        st.caption(rests)


def _discovery_chart(events: list, classes: list[str], prev: pd.DataFrame) -> None:
    curves = discovery_curves(events, classes)
    seen = curves.groupby("label", sort=False)["n_found"].max()
    unseen = seen.index[seen == 0].tolist()  # a flat line at zero per class says less than a list
    curves = curves[~curves["label"].isin(unseen)]
    if curves.empty:  # only pseudo-labels (unsure, bad segmentation) so far
        st.caption("No class found yet: the curves start with the first cell of a class.")
        return
    n = len(events)
    step = max(1, n // _MAX_POINTS)
    keep = (curves["n_labeled"] % step == 0) | (curves["n_labeled"] == n)
    curves = curves[keep]
    n_slice = int(prev["n_slice"].max()) if len(prev) else 0
    has_slice = n_slice >= MIN_SLICE
    if has_slice:  # one table for every layer: a faceted chart splits only its own data
        exp = expected_random_curve(curves["n_labeled"].unique(), prev)
        curves = curves.merge(exp, on=["n_labeled", "label"], how="left")
        exp_note = (
            f"dashed: what labeling at random would have found, from the {n_slice} random cells "
            "(grey: its 95% interval)"
        )
    else:
        exp_note = (
            f"the curve of labeling at random is drawn from {MIN_SLICE} random cells on; "
            f"{n_slice} so far"
        )
    base = alt.Chart().encode(x=alt.X("n_labeled:Q", title="labels spent"))
    tips = ["label", "n_labeled", "n_found"] + (["expected", "low", "high"] if has_slice else [])
    found = base.mark_line(interpolate="step-after", color="#2563eb").encode(
        y=alt.Y(
            "n_found:Q",
            title="cells found",
            scale=alt.Scale(nice=True),
            axis=alt.Axis(tickMinStep=1, format="d"),
        ),  # whole cells, the top labeled
        tooltip=tips,
    )
    layers = [found]
    if has_slice:
        band = base.mark_area(opacity=0.25, color="#9ca3af").encode(y="low:Q", y2="high:Q")
        line = base.mark_line(strokeDash=[5, 4], color="#6b7280").encode(y="expected:Q")
        layers = [band, line, found]
    chart = (
        alt.layer(*layers, data=curves)
        .properties(width=150, height=120)  # 3 panels a row fit a 1280 px window
        .facet(facet=alt.Facet("label:N", title=None, sort=list(dict.fromkeys(curves["label"]))),
               columns=3)
        .resolve_scale(y="independent")
        .resolve_axis(x="independent")  # an axis under each panel, none under empty cells
        .interactive()
    )  # fmt: skip
    st.altair_chart(chart, key="discovery-chart")
    st.caption(f"Blue: cells of each class found against labels spent; {exp_note}.")
    if unseen:
        shown = ", ".join(unseen[:12]) + (
            f" and {len(unseen) - 12} more" if len(unseen) > 12 else ""
        )
        st.caption(f"Not found yet (no panel): {shown}.")


def _found_by(strategy: str) -> str:
    """A sub-strategy in the Label page's plain words, and its name; a label source as it is."""
    if strategy not in REASONS:
        return strategy.replace("_", " ")
    short = REASONS[strategy].short
    return short if strategy == "random" else f"{short} ({strategy.replace('_', ' ')})"


def _counts(project: Project, events: list, prev: pd.DataFrame) -> None:
    counts = class_counts(project.store, events)
    n_slice = int(prev["n_slice"].max()) if len(prev) else 0
    counts["first_found_by"] = (
        counts["first_found_by"].map(_found_by, na_action="ignore").fillna("not found yet")
    )  # a class added by hand and never given: said, not a bare "None"
    table = counts[["label", "n_labeled", "n_given", "first_found_at", "first_found_by",
                    "pseudo"]].merge(
        prev[["label", "n_random", "estimate", "low", "high"]], on="label", how="left"
    )  # fmt: skip
    if n_slice < MIN_SLICE:  # an interval of 0-33% says nothing: leave it out
        table = table.drop(columns=["estimate", "low", "high"])
    for column in ("first_found_at", "n_random"):  # never found, or a pseudo-class: "-"
        table[column] = table[column].astype("Int64").astype("string").fillna("-")
    for column in ("estimate", "low", "high"):  # a pseudo-class has no prevalence: "-"
        if column in table:
            table[column] = table[column].map(lambda v: "-" if pd.isna(v) else f"{v:.1%}")
    st.dataframe(
        table,
        hide_index=True,
        key="class-table",
        width="stretch",
        column_config={
            "label": "class",
            "n_labeled": "cells",
            "n_given": "labels",
            "first_found_at": "found at label",
            "first_found_by": st.column_config.TextColumn(
                "found by",
                help="why the first cell of the class was in its batch (as on the "
                "Label page's tiles), or how it was labeled outside a batch",
            ),
            "pseudo": "not a class",
            "n_random": st.column_config.TextColumn(  # a count, or "-": text
                "random cells", help=f"cells of the class among the {n_slice} random cells"
            ),
            "estimate": "prevalence",
            "low": "95% low",
            "high": "95% high",
        },
    )
    if n_slice < MIN_SLICE:
        st.caption(
            f"Prevalence (the share of the screen in each class) is estimated from the random "
            f"cells once there are {MIN_SLICE}; there are {n_slice}. Until then, see the "
            "model's prediction over the whole screen below (not corrected for its errors)."
        )
        return
    base = alt.Chart(prev).encode(y=alt.Y("label:N", sort="-x", title=None))
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("low:Q", title="prevalence (95% interval)", axis=alt.Axis(format="%")), x2="high:Q"
    )
    dots = base.mark_point(filled=True, size=60).encode(
        x="estimate:Q", tooltip=["label", "n_random", "n_slice", "estimate", "low", "high"]
    )
    st.altair_chart((bars + dots).properties(height=alt.Step(22)), key="prevalence-chart")
    st.caption(f"Estimated from the {n_slice} random cells (Wilson intervals).")


def _rounds(project: Project, events: list) -> None:
    rounds = labels_per_round(project.store, events)
    rounds = rounds.assign(round=rounds["round_id"].astype("string").fillna("outside rounds"))
    given = rounds[rounds["n_labels"] > 0]  # a batch left unlabeled (another annotator's, a
    # reload's) is no bar; the table below lists every round
    chart = (
        alt.Chart(given)
        .mark_bar()
        .encode(
            x=alt.X("round:N", title="round", sort=None, axis=alt.Axis(labelAngle=0)),
            y=alt.Y(
                "n_labels:Q",
                title="labels",
                scale=alt.Scale(nice=True, zero=True),
                axis=alt.Axis(tickMinStep=1),
            ),
            color=alt.Color("new_classes:Q", title="new classes", scale=alt.Scale(scheme="blues")),
            tooltip=["round", "strategy", "annotator", "n_labels", "new_class_names", "seconds"],
        )
        .properties(height=240)
    )
    st.altair_chart(chart, key="rounds-chart")
    if len(given) < len(rounds):
        empty = rounds.loc[rounds["n_labels"] == 0, "round"].astype(str).tolist()
        which = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        one = len(empty) == 1
        st.caption(
            f"Round{'' if one else 's'} {which} {'has' if one else 'have'} no labels (a batch "
            "left for later or to another annotator): in the table only."
        )
    with st.expander("Rounds table"):
        st.dataframe(
            rounds.drop(columns="round"), hide_index=True, key="rounds-table", width="stretch"
        )


def _predicted(project: Project, key: tuple) -> None:
    path = str(project.path)
    try:
        dist = cached("labeling.reports.predicted_distribution", path, key)
    except NotTrainedError as exc:
        st.info(md(exc))
        return
    chart = (
        alt.Chart(dist)
        .mark_bar()
        .encode(
            x=alt.X("n_cells:Q", title="cells predicted"),
            y=alt.Y("label:N", sort="-x", title=None),
            tooltip=["label", "n_cells", alt.Tooltip("fraction:Q", format=".2%")],
        )
        .properties(height=alt.Step(22))
    )
    st.altair_chart(chart, key="predicted-chart")
    st.caption(f"The current head's most likely class for each of {dist['n_cells'].sum()} cells.")
    try:
        wells = cached("labeling.reports.well_fractions", path, key)
    except DataError as exc:
        st.caption(f"No plate heatmap: {md(exc)}")
        return
    _plate_heatmap(wells, list(dist["label"]))


#: Control wells per plate below which the Per-well z caption warns that z is rough.
MIN_CONTROLS = 5


def _plate_heatmap(wells: pd.DataFrame, labels: list[str]) -> None:
    st.markdown("**Per well**")
    left, right = st.columns([2, 1])
    cls = left.selectbox("Class", labels, key="heat-class")
    values = ["fraction", "z"] if "z" in wells.columns else ["fraction"]
    value = right.radio("Colour", values, horizontal=True, key="heat-value",
                        help="z: against the negative-control wells")  # fmt: skip
    data = wells[wells["label"] == cls]
    parts = data["well"].str.extract(r"^([A-Za-z]+)0*(\d+)$")
    if parts.notna().all().all():
        data = data.assign(well_row=parts[0], well_col=parts[1].astype(int))
        x, y = alt.X("well_col:O", title="column"), alt.Y("well_row:O", title="row")
    else:
        x, y = alt.X("well:N", title="well"), alt.Y("plate:N", title=None)
    scale = alt.Scale(scheme="redblue", domainMid=0, reverse=True) if value == "z" else alt.Scale(
        scheme="viridis")  # fmt: skip
    tips = ["plate", "well", "n_cells", "n_well", alt.Tooltip("fraction:Q", format=".1%")]
    tips += [alt.Tooltip("z:Q", format=".2f")] if "z" in data.columns else []
    chart = (
        alt.Chart(data)
        .mark_rect()
        .encode(x=x, y=y, color=alt.Color(f"{value}:Q", scale=scale, title=value), tooltip=tips)
        .properties(width=alt.Step(28), height=alt.Step(28))
        .facet(column=alt.Column("plate:N", title=None))
    )
    st.altair_chart(chart, key="plate-heatmap")
    note = "."
    if value == "z":
        few = int(data["n_controls"].min()) if "n_controls" in data else 0
        note = f"; z-score against the negative-control wells ({few} on the fewest plate)."
        if few == 0:
            note = ("; no z: no well is marked as a negative control (a control value starting "
                    "with 'neg', e.g. negative, in metadata.csv).")  # fmt: skip
        elif few < MIN_CONTROLS:
            note += (f" With fewer than {MIN_CONTROLS} control wells their spread is a rough "
                     "guess: read large z with care.")  # fmt: skip
    st.caption(f"Share of each well's cells predicted as {md(cls)}{note}")


def _quality(project: Project, key: tuple) -> None:
    try:
        confusion, per_class = cached("labeling.reports.cross_validated", str(project.path), key)
    except NotTrainedError as exc:
        st.info(f"Cross-validation is not possible yet: {md(exc)}")
        return
    a = per_class.attrs
    st.caption(
        f"{a.get('n_splits')}-fold cross-validation of the loop's head on the current labels: "
        f"macro F1 {a.get('macro_f1', float('nan')):.3f}, balanced accuracy "
        f"{a.get('balanced_accuracy', float('nan')):.3f}"
        + (f"; left out (fewer than 2 labels): {md(', '.join(a['left_out']))}" if a.get("left_out")
           else "")
    )  # fmt: skip
    left, right = st.columns([3, 2])
    long = confusion.stack().rename("n").reset_index()
    long["share"] = long["n"] / long.groupby("true")["n"].transform("sum").clip(lower=1)
    base = alt.Chart(long).encode(
        x=alt.X("predicted:N", title="predicted"), y=alt.Y("true:N", title="true label")
    )
    rect = base.mark_rect().encode(
        color=alt.Color("share:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]),
                        title="share of row"),
        tooltip=["true", "predicted", "n", alt.Tooltip("share:Q", format=".0%")],
    )  # fmt: skip
    text = base.mark_text().encode(
        text="n:Q",
        color=alt.condition("datum.share > 0.5", alt.value("white"), alt.value("black")),
    )
    with left:
        st.altair_chart((rect + text).properties(width=alt.Step(48), height=alt.Step(32)),
                        key="confusion-chart")  # fmt: skip
    with right:
        scores = ("precision", "recall", "f1")  # none for a class left out: "-", not "None"
        shown = per_class.assign(**{
            c: per_class[c].map(lambda v: "-" if pd.isna(v) else f"{v:.2f}")
            for c in scores if c in per_class
        })  # fmt: skip
        st.dataframe(shown, hide_index=True, key="per-class-table")


if __name__ == "__main__":  # run by Streamlit as a page of app.py
    run_page(render_discover_page)

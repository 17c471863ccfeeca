"""The Discover page: what has been found at what cost, how common each class is, whether to stop,
what the head predicts over the whole screen (and per well), and how good it is.

Everything is computed by ``labeling.reports``; the slow parts (cross-validation, predictions)
are cached per label state (``common.labels_key``), so reruns are instant.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from app_pages.common import cached, labels_key, run_page
from app_pages.text import md
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

_MAX_POINTS = 400  # x positions per class drawn in the discovery chart


def render_discover_page(project: Project) -> None:
    """Draw the whole Discover page for ``project``."""
    store = project.store
    events = store.label_events()
    st.header("Discover")
    if not events:
        st.info("No labels yet: label a batch on the Label page, then come back here.")
        return
    classes = [c.name for c in store.classes(include_pseudo=False)]
    prev = prevalence(events, classes)
    _stopping(events)
    st.subheader("Discovery curves")
    _discovery_chart(events, classes, prev)
    left, right = st.columns(2)
    with left:
        st.subheader("Classes: counts and prevalence")
        _counts(project, events, prev)
    with right:
        st.subheader("Labels per round")
        _rounds(project, events)
    key = labels_key(project)
    st.subheader("Predicted classes over the whole screen")
    _predicted(project, key)
    st.subheader("Cross-validated quality")
    _quality(project, key)


def _stopping(events: list) -> None:
    stop = stopping_signal(events)
    p_new = stop["p_new_class"]
    cols = st.columns(4)
    cols[0].metric("Labels given", stop["n_labels"])
    cols[1].metric("Classes found", stop["n_classes"])
    cols[2].metric(
        "Labels since last new class",
        stop["labels_since_new_class"],
        help=f"last new class: {md(stop['last_new_class'])} at label {stop['last_new_class_at']}",
    )
    cols[3].metric(
        "Chance of an unseen class",
        "-" if p_new is None else f"{p_new:.1%}",
        help="That the next random cell is of a class not seen yet: Good-Turing estimate "
        "(classes seen once / cells) on the random slice "
        f"({stop['n_random']} cells, {stop['n_singletons']} classes seen once); 95% interval "
        f"{stop['p_new_class_low']:.1%} to {stop['p_new_class_high']:.1%}. discover hands "
        "its exploration over to class-balanced margin as it falls",
    )


def _discovery_chart(events: list, classes: list[str], prev: pd.DataFrame) -> None:
    curves = discovery_curves(events, classes)
    n = len(events)
    step = max(1, n // _MAX_POINTS)
    keep = (curves["n_labeled"] % step == 0) | (curves["n_labeled"] == n)
    curves = curves[keep]
    exp_note = "the expected random curve needs labels of the random slice"
    has_slice = prev["n_slice"].max() > 0
    if has_slice:  # one table for every layer: a faceted chart splits only its own data
        exp = expected_random_curve(curves["n_labeled"].unique(), prev)
        curves = curves.merge(exp, on=["n_labeled", "label"], how="left")
        exp_note = "dashed: expected of random labeling (grey: 95% interval)"
    base = alt.Chart().encode(x=alt.X("n_labeled:Q", title="labels spent"))
    tips = ["label", "n_labeled", "n_found"] + (["expected", "low", "high"] if has_slice else [])
    found = base.mark_line(interpolate="step-after", color="#2563eb").encode(
        y=alt.Y("n_found:Q", title="cells found"), tooltip=tips
    )
    layers = [found]
    if has_slice:
        band = base.mark_area(opacity=0.25, color="#9ca3af").encode(y="low:Q", y2="high:Q")
        line = base.mark_line(strokeDash=[5, 4], color="#6b7280").encode(y="expected:Q")
        layers = [band, line, found]
    chart = (
        alt.layer(*layers, data=curves)
        .properties(width=170, height=130)
        .facet(facet=alt.Facet("label:N", title=None, sort=list(dict.fromkeys(curves["label"]))),
               columns=4)
        .resolve_scale(y="independent")
        .resolve_axis(x="independent")  # an axis under each panel, none under empty cells
        .interactive()
    )  # fmt: skip
    st.altair_chart(chart, key="discovery-chart")
    st.caption(f"Blue: cells of each class found against labels spent; {exp_note}.")


def _counts(project: Project, events: list, prev: pd.DataFrame) -> None:
    counts = class_counts(project.store, events)
    table = counts[["label", "n_labeled", "n_given", "first_found_at", "pseudo"]].merge(
        prev[["label", "n_random", "estimate", "low", "high"]], on="label", how="left"
    )
    st.dataframe(
        table,
        hide_index=True,
        key="class-table",
        column_config={
            "n_labeled": "cells",
            "n_given": "labels given",
            "first_found_at": "found at label",
            "n_random": "in random slice",
            "estimate": st.column_config.NumberColumn("prevalence", format="percent"),
            "low": st.column_config.NumberColumn("95% low", format="percent"),
            "high": st.column_config.NumberColumn("95% high", format="percent"),
        },
    )
    n_slice = int(prev["n_slice"].max()) if len(prev) else 0
    if n_slice == 0:
        st.caption("Prevalence needs labels of the random slice (cells chosen at random).")
        return
    base = alt.Chart(prev).encode(y=alt.Y("label:N", sort="-x", title=None))
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("low:Q", title="prevalence (95% interval)", axis=alt.Axis(format="%")), x2="high:Q"
    )
    dots = base.mark_point(filled=True, size=60).encode(
        x="estimate:Q", tooltip=["label", "n_random", "n_slice", "estimate", "low", "high"]
    )
    st.altair_chart((bars + dots).properties(height=alt.Step(22)), key="prevalence-chart")
    st.caption(f"Estimated from the {n_slice} cells of the random slice (Wilson intervals).")


def _rounds(project: Project, events: list) -> None:
    rounds = labels_per_round(project.store, events)
    rounds = rounds.assign(round=rounds["round_id"].astype("string").fillna("outside rounds"))
    chart = (
        alt.Chart(rounds)
        .mark_bar()
        .encode(
            x=alt.X("round:N", title="round", sort=None),
            y=alt.Y("n_labels:Q", title="labels"),
            color=alt.Color("new_classes:Q", title="new classes", scale=alt.Scale(scheme="blues")),
            tooltip=["round", "strategy", "annotator", "n_labels", "new_class_names", "seconds"],
        )
        .properties(height=240)
    )
    st.altair_chart(chart, key="rounds-chart")
    with st.expander("Rounds table"):
        st.dataframe(rounds.drop(columns="round"), hide_index=True, key="rounds-table")


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
    st.caption(f"Share of each well's cells predicted as {md(cls)}" + (
        "; z-score against the negative-control wells." if value == "z" else "."))  # fmt: skip


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
        st.dataframe(
            per_class,
            hide_index=True,
            key="per-class-table",
            column_config={
                c: st.column_config.NumberColumn(c, format="%.2f")
                for c in ("precision", "recall", "f1")
            },
        )


if __name__ == "__main__":  # run by Streamlit as a page of app.py
    run_page(render_discover_page)

"""The Review page: labeled cells by class, label/model disagreements and "more like this".

Every tile has the class buttons of the Label page: a click relabels the cell in place (source
``review``), or on the "more like this" grids labels it (source ``more_like_this``). The work is
``labeling.review``'s; this page draws its results.

Widget keys: ``review-mode`` (radio), ``review-class`` (class to show), ``mlt-class``,
``mlt-source``, ``rv-pick-<cell_id>-<shown>`` / ``mlt-pick-<cell_id>-<shown>`` (a tile's
class buttons), ``similar-<cell_id>`` (find the nearest neighbours of this cell).
"""

from __future__ import annotations

import html
from typing import Any

import streamlit as st

from app_pages.server.common import current_annotator, run_page
from app_pages.widgets.field_view import show_cell_in_field
from app_pages.widgets.text import code, css_colour, md
from app_pages.widgets.tiles import (
    WIDE_PAGE_CSS,
    Display,
    class_option,
    display_controls,
    pill_colours,
    tile_pngs,
)
from labeling.errors import PhenoScoutError
from labeling.loop import submit_labels
from labeling.project import Project
from labeling.review import cells_of_class, confident_unlabeled, similar_cells
from labeling.store.labels import ClassInfo

MODES = (
    "By class",
    "Disagreements",
    "Inconsistent labels",
    "More like this",
    "Most to least confident",
)
MAX_TILES = 48  # most tiles one grid shows
PER_ROW = 6
QUERY = "review_query"  # session key: the cell whose neighbours "more like this" shows
MESSAGE = "review_message"  # session key: (kind, text) from the latest click
IN_VIEW = "review_in_view"  # session key: (class, cell ids) the By class grid shows
#: session key: (class, tiles, caption, labels key) the montage shows until "Recompute"
MONTAGE_IN_VIEW = "review_montage_in_view"


def render_review_page(project: Project, annotator: str) -> None:
    """Draw the whole Review page for ``project``."""
    st.header("Review")
    display = display_controls(project, zoom=False)
    kind, text = st.session_state.pop(MESSAGE, (None, None))
    if kind == "error":
        st.error(md(text))
    elif text:
        st.toast(md(text))
    mode = st.radio("Show", MODES, horizontal=True, key="review-mode")
    if mode == MODES[0]:
        _by_class(project, annotator, display)
    elif mode == MODES[1]:
        _disagreements(project, annotator, display)
    elif mode == MODES[2]:
        _inconsistent(project, annotator, display)
    elif mode == MODES[3]:
        _more_like_this(project, annotator, display)
    else:
        _montage(project, annotator, display)


def _by_class(project: Project, annotator: str, display: Display) -> None:
    classes = [c.name for c in project.store.classes(include_pseudo=True) if c.n_labeled]
    if not classes:
        st.info("No labels yet: label a batch on the Label page first.")
        return
    cls = st.selectbox("Class", classes, key="review-class")
    ids = cells_of_class(project, cls)
    shown = _in_view(cls, ids)
    moved = len(shown) - len(ids)
    st.caption(f"{len(ids)} cells labeled **{md(cls)}**" + _cut(ids)
               + (f"; {moved} relabeled here stay in view until you pick another class"
                  if moved else ""))  # fmt: skip
    items = [{"cell_id": c, "caption": ""} for c in shown[:MAX_TILES]]
    _grid(project, annotator, display, items, "rv", "review")


def _in_view(cls: str, ids: list[str]) -> list[str]:
    """The cells to show for class ``cls``: ``ids``, plus the cells relabeled away from it on
    this page, in their places (a relabel changes the tile, it does not reshuffle the grid)."""
    kept = st.session_state.get(IN_VIEW)
    if kept and kept[0] == cls:
        seen = set(kept[1])
        ids = kept[1] + [c for c in ids if c not in seen]
    st.session_state[IN_VIEW] = (cls, ids)
    return ids


def _disagreements(project: Project, annotator: str, display: Display) -> None:
    from app_pages.server.common import cached, labels_key

    frame = cached("labeling.review.disagreements", str(project.path), labels_key(project))
    if frame.empty:
        st.info(
            "No disagreements: trained without each labeled cell, the model predicts its label "
            "for every one (or too few labels to check: two classes need two labels each)."
        )
        return
    st.caption(
        f"{len(frame)} labeled cells the model, trained without them, predicts otherwise"
        + _cut(frame)
    )
    items = [
        {"cell_id": r.cell_id, "caption": f"model: {md(r.predicted)} {r.confidence:.0%}"}
        for r in frame.head(MAX_TILES).itertuples()
    ]
    _grid(project, annotator, display, items, "rv", "review")


def _inconsistent(project: Project, annotator: str, display: Display) -> None:
    from app_pages.server.common import cached, labels_key

    frame = cached("labeling.review.inconsistent_labels", str(project.path), labels_key(project))
    if frame.empty:
        st.info(
            "No inconsistent labels: no labeled cell is contradicted by both its cross-validated "
            "prediction and its nearest labeled neighbours (or too few labels to tell)."
        )
        return
    st.caption(
        f"{len(frame)} labeled cells that both the model trained without them and their "
        "nearest labeled neighbours put in another class: worth a second look" + _cut(frame)
    )
    items = [
        {
            "cell_id": r.cell_id,
            "caption": f"CV: {md(r.cv_predicted)} · near: {md(r.neighbours)} {r.agree:.0%}",
        }
        for r in frame.head(MAX_TILES).itertuples()
    ]
    _grid(project, annotator, display, items, "rv", "review")


def _more_like_this(project: Project, annotator: str, display: Display) -> None:
    sources = ("Most confident of a class", "Nearest neighbours of a cell")
    query = st.session_state.get(QUERY)
    source = st.radio("Find", sources, horizontal=True, key="mlt-source")
    n = st.number_input("How many", 1, MAX_TILES, 12, key="mlt-n")
    if source == sources[0]:
        classes = [c.name for c in project.store.classes(include_pseudo=False) if c.n_labeled]
        if len(classes) < 2:
            st.info("Needs labels of at least 2 classes.")
            return
        cls = st.selectbox("Class", classes, key="mlt-class")
        frame = confident_unlabeled(project, cls, int(n))
        items = [
            {"cell_id": r.cell_id, "caption": f"p({md(cls)}) {r.probability:.0%}"}
            for r in frame.itertuples()
        ]
    else:
        if not query:
            st.info("Click **More like this** under a cell (By class or Disagreements) first.")
            return
        st.caption(f"Unlabeled cells nearest to {code(query)}")
        items = [{"cell_id": c, "caption": ""} for c in similar_cells(project, query, int(n))]
    _grid(project, annotator, display, items, "mlt", "more_like_this")


def _montage(project: Project, annotator: str, display: Display) -> None:
    """The cells the model gives to a class, from the most to the least confident (evenly
    spaced ranks), to see where the class's boundary sits."""
    from app_pages.server.common import cached, labels_key
    from labeling.errors import NotTrainedError

    classes = [c.name for c in project.store.classes(include_pseudo=False) if c.n_labeled]
    if len(classes) < 2:
        st.info("Needs labels of at least 2 classes.")
        return
    cls = st.selectbox("Class", classes, key="montage-class")
    key = labels_key(project)
    kept = st.session_state.get(MONTAGE_IN_VIEW)
    if kept and kept[0] == cls:  # a relabel here changes its tile, not the whole montage
        _, items, caption, made_with = kept
    else:
        try:
            table = cached("labeling.predictions.predicted_labels", str(project.path), key)
        except NotTrainedError as exc:
            st.info(md(exc))
            return
        mine = table[table["predicted"] == cls].sort_values("confidence", ascending=False)
        if mine.empty:
            st.info(f"The model gives no cell to {md(cls)}.")
            return
        n = min(len(mine), 24)
        picks = mine.iloc[[round(i * (len(mine) - 1) / max(n - 1, 1)) for i in range(n)]]
        caption = (
            f"{len(mine)} cells predicted **{md(cls)}**: {n} of them at evenly spaced ranks, "
            "from the most confident (first) to the least (last)."
        )
        items = [{"cell_id": r.cell_id, "caption": f"p {r.confidence:.0%}"}
                 for r in picks.itertuples()]  # fmt: skip
        made_with = key
        st.session_state[MONTAGE_IN_VIEW] = (cls, items, caption, made_with)
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(caption)
        if made_with != key and st.button("Recompute", key="montage-refresh",
                                          help="Refit on the labels given since"):  # fmt: skip
            st.session_state.pop(MONTAGE_IN_VIEW, None)
            st.rerun()
    _grid(project, annotator, display, items, "mtg", "review")


def _grid(
    project: Project,
    annotator: str,
    display: Display,
    items: list[dict[str, Any]],
    prefix: str,
    source: str,
) -> None:
    """Tiles of ``items`` (``cell_id``, ``caption``), each with class buttons (the classes'
    keys, named by a legend above) that commit a label with ``source`` at once."""
    if not items:
        st.info("No cells to show.")
        return
    labels = project.store.current_labels(include_pseudo=True)
    classes = project.store.classes(include_pseudo=True)
    names = [c.name for c in classes]
    _legend(classes)
    pngs = tile_pngs(project, [it["cell_id"] for it in items], display)
    for start in range(0, len(items), PER_ROW):
        row = range(start, min(start + PER_ROW, len(items)))
        for col, i in zip(st.columns(PER_ROW), row):
            cell_id, label = items[i]["cell_id"], labels.get(items[i]["cell_id"])
            with col, st.container(border=True, key=f"{prefix}-tile-{i}", gap="small"):
                st.image(pngs[i], width="stretch")
                state = f"✔ **{md(label)}**" if label else "not labeled"
                st.caption(  # the id on one line (cut with "…"; whole in the tooltip)
                    f"{code(cell_id)}  \n{state}  \n{items[i]['caption']}".rstrip(),
                    help=f"cell {md(cell_id)}",
                )
                show_cell_in_field(project, cell_id, visible=display.visible)
                key = f"{prefix}-pick-{cell_id}-{label or 'none'}"
                st.pills(
                    "Label",
                    names,
                    default=label,
                    key=key,
                    format_func=lambda name: md(class_option(name, classes)),
                    label_visibility="collapsed",
                    on_change=_picked,
                    args=(project, annotator, cell_id, key, source, label),
                )
                if prefix == "rv":
                    st.button("More like this", key=f"similar-{cell_id}", type="tertiary",
                              on_click=_find_similar, args=(cell_id,))  # fmt: skip
    _styles(prefix, classes, [labels.get(it["cell_id"]) for it in items])


def _legend(classes: list[ClassInfo]) -> None:
    """What each class button under a tile stands for: key and class name, in its colour."""
    parts = []
    for c in classes:
        key = html.escape(c.key or class_option(c.name, classes))
        parts.append(f'<span style="border-bottom: 3px solid {css_colour(c.colour)}; '
                     'white-space: nowrap">'
                     f"<b>{key}</b> {html.escape(c.name)}</span>")  # fmt: skip
    st.html('<div style="font-size: 0.9rem">Class buttons: ' + " &nbsp; ".join(parts) + "</div>")


def _styles(prefix: str, classes: list[ClassInfo], labels: list[str | None]) -> None:
    """Compact class buttons in their class colours; a tile's border in its label's colour."""
    colour = {c.name: css_colour(c.colour) for c in classes}
    rules = [WIDE_PAGE_CSS, *pill_colours(f"{prefix}-pick-", classes)]
    rules += [  # a ring inside the border: a labeled tile keeps its size
        f".st-key-{prefix}-tile-{i} {{border-color: {colour.get(label, '#888888')} !important;"
        f" box-shadow: inset 0 0 0 3px {colour.get(label, '#888888')};}}"
        for i, label in enumerate(labels)
        if label
    ]
    # a cell id never wraps mid-number: one line, cut at its start with "…" (the whole id in
    # the zoom); the other lines (its label, the model's guess and confidence) wrap
    rules.append(
        f'div[class*="st-key-{prefix}-tile-"] [data-testid="stCaptionContainer"] p '
        "{overflow-wrap: anywhere; font-size: 0.8rem;}"  # the model's line wraps, never cut
        f'div[class*="st-key-{prefix}-tile-"] [data-testid="stCaptionContainer"] code '
        "{white-space: nowrap; font-size: 0.7rem; padding: 0; display: inline-block;"
        " max-width: 100%; overflow: hidden; text-overflow: ellipsis; vertical-align: bottom;"
        " direction: rtl;}"  # cut at the start, so the cell's number stays in view
    )
    st.html("<style>" + "\n".join(rules) + "</style>")


def _picked(
    project: Project, annotator: str, cell_id: str, key: str, source: str, drawn: str | None
) -> None:
    """A tile's class buttons changed: commit the new label. A value equal to ``drawn`` (the
    label the buttons were drawn with) is the browser sending back an earlier drawing's buttons,
    not a click (see ``app_pages.pages.batch.pick_changed``)."""
    choice = st.session_state.get(key)
    if choice is None or choice == drawn:
        return
    try:
        submit_labels(project, {cell_id: choice}, annotator=annotator, source=source)
    except PhenoScoutError as exc:
        st.session_state[MESSAGE] = ("error", str(exc))
        return
    st.session_state[MESSAGE] = ("notice", f"{cell_id}: {choice}")


def _find_similar(cell_id: str) -> None:
    st.session_state[QUERY] = cell_id
    st.session_state["review-mode"] = MODES[3]
    st.session_state["mlt-source"] = "Nearest neighbours of a cell"


def _cut(rows: Any) -> str:
    return f" (the first {MAX_TILES} shown)" if len(rows) > MAX_TILES else ""


if __name__ == "__main__":  # run by Streamlit as a page of app.py
    run_page(lambda project: render_review_page(project, current_annotator()))

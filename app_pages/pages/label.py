"""The Label page: the batch as a grid of tiles, labeled by click or by key, one commit per label.

Keys (Streamlit native shortcuts): a class's key (1..9, 0, then letters for the 11th class on;
u, b) labels the focused tile and moves the focus to the next open one; s skips it, z undoes, n
asks for the next batch (while tiles are open, the first n asks and a second goes on), the
left and right arrows move the focus. A small script in the page
(``label_client.js``) keeps the focused tile in view and shows a key's effect at once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import streamlit as st

from app_pages.pages import batch as B
from app_pages.server.common import (
    annotator_input,
    current_annotator,
    project_sidebar,
    run_page,
)
from app_pages.server.status import status_line
from app_pages.widgets.field_view import show_cell_in_field
from app_pages.widgets.keys_component import KEYS_COMPONENT
from app_pages.widgets.reasons import chosen_reason
from app_pages.widgets.text import css_colour, md
from app_pages.widgets.tiles import (
    WIDE_PAGE_CSS,
    Display,
    class_option,
    display_controls,
    guess_text,
    pill_colours,
    render_zoom,
    tile_pngs,
)
from labeling.project import Project
from labeling.store.labels import SKIP, ClassInfo

#: The focused tile: a dark outline outside the tile and a pale yellow ground, never a class's
#: colour (the 20 class colours take every hue; a red focus read as the 4th class's label ring).
FOCUS_COLOUR = "#111827"
FOCUS_GROUND = "#fef9c3"
SKIP_KEY = "s"
#: Tiles keep their size whatever their state (a label is an inset ring, not a wider border;
#: one-line captions), so the rows below never move while you label; the focused tile keeps a
#: margin below the page's top bar when scrolled into view.
_LAYOUT_CSS = """
div[class*="st-key-tile-"] {padding: 0.5rem; scroll-margin: 4.5rem 0 1rem 0; position: relative;}
div[class*="st-key-tile-"] [data-testid="stCaptionContainer"] p {
    white-space: nowrap; overflow: hidden; text-overflow: ellipsis; margin: 0;}
div[class*="st-key-tile-"] [data-testid="stTooltipHoverTarget"] {min-width: 0;}
div[class*="st-key-focus-"] button {min-height: 1.6rem; padding: 0 0.25rem;}
div[class*="st-key-tile-"][data-ps-pending]::after {
    content: "pending: " attr(data-ps-pending); position: absolute; top: 0.25rem; right: 0.4rem;
    font-size: 0.75rem; background: #ffffffd0; padding: 0 0.3rem; border-radius: 0.2rem;}
"""
#: A row of tiles (st.columns holding tiles: row > column > block > wrapper > tile) wraps in a
#: narrow window, 3 + 3 under 1,100 px and 2 + 2 + 2 under 640 px: cells large enough to judge.
_ROW = 'div[data-testid="stHorizontalBlock"]:has(> div > div > div > div[class*="st-key-tile-"])'
_GRID_CSS = "".join(
    [f"{_ROW} {{flex-wrap: wrap;}}"]
    + [f"@media (max-width: {px}px) {{{_ROW} > div[data-testid=\"stColumn\"] "
       f"{{flex: 1 1 calc({share} - 1rem); min-width: calc({share} - 1rem);}}}}"
       for px, share in ((1100, "33.3%"), (640, "50%"))]
)  # fmt: skip


@dataclass(frozen=True)
class _Page:
    """What the parts of one run of the page share."""

    project: Project
    annotator: str
    sess: B.LabelSession
    display: Display
    classes: list[ClassInfo]  # store.classes(include_pseudo=True), read once per run
    labels: dict[str, str]  # current labels (pseudo included), read once per run


def render_label_page(project: Project, annotator: str | None = None) -> None:
    """Draw the whole Label page for ``project``; the annotator's name from the sidebar when
    ``annotator`` is None (``app.py`` draws the sidebar's project name and annotator box for
    every page, so they keep their value across pages)."""
    if annotator is None:
        project_sidebar(project)
        annotator = annotator_input()
    display = display_controls(project)
    sess = B.ensure_batch(project, annotator)
    store = project.store
    page = _Page(
        project,
        annotator,
        sess,
        display,
        store.classes(include_pseudo=True),
        store.current_labels(include_pseudo=True),
    )
    sess.shown = {it["cell_id"]: page.labels.get(it["cell_id"]) for it in sess.items}
    _status_line(page)
    status_line(project)  # model version, the trainer's work, the round's features
    _messages(page)
    _toolbar(page)
    _class_keys(page)
    _grid(page)
    if sess.items:
        with display.zoom_area:
            focused = sess.items[sess.focus]["cell_id"]
            render_zoom(project, sess.items, sess.focus, page.labels.get(focused), display)
            show_cell_in_field(project, focused, key="label-in-field", visible=display.visible)
    _styles(page)


def _status_line(page: _Page) -> None:
    """Labels given and on how many cells (relabels are labels given too, as ``phenoscout info``
    counts them), classes found, the batch's progress; per-class counts below."""
    project, items, labels, classes = page.project, page.sess.items, page.labels, page.classes
    store = project.store
    rounds = store.rounds()
    last = rounds[-1] if rounds else {}
    took = (last.get("timings") or {}).get("total_s")
    n_found = sum(1 for c in classes if not c.pseudo and c.n_labeled > 0)
    n_done = sum(1 for it in items if it["cell_id"] in labels)
    n_given, n_cells = store.n_labels_given(), len(labels)
    st.markdown(
        f"**PhenoScout** | **{n_given}** label{'s' if n_given != 1 else ''} on **{n_cells}** "
        f"cell{'s' if n_cells != 1 else ''} | classes found **{n_found}** | this batch "
        f"**{n_done}/{len(items)}** labeled | batch chosen in "
        f"**{'-' if took is None else f'{took:.2f} s'}**",
        help="Labels given count every label, relabels and unsure / bad segmentation included; "
        "cells are the cells that carry a label now.",
    )
    counts = " · ".join(
        f"{md(c.name)} **{c.n_labeled}**" for c in classes if c.n_labeled or not c.pseudo
    )
    st.caption(f"Cells per class: {counts}" if counts else "No labels yet.")
    _quality_strip(project)


def _quality_strip(project: Project) -> None:
    """On request, the cross-validated confusion matrix of the labels so far (the Discover
    page's), compact, while labeling: computed once per label state, only while shown."""
    if not st.toggle("Show the cross-validated confusion", key="cv-strip", value=False):
        return
    from app_pages.server.common import cached, labels_key
    from labeling.errors import NotTrainedError

    try:
        confusion, per_class = cached(
            "labeling.reports.cross_validated", str(project.path), labels_key(project)
        )
    except NotTrainedError as exc:
        st.caption(md(exc))
        return
    a = per_class.attrs
    st.caption(
        f"Rows: the label; columns: what a model trained without the cell predicts "
        f"({a.get('n_splits')}-fold); balanced accuracy {a.get('balanced_accuracy', 0):.2f}"
    )
    st.dataframe(confusion, key="cv-strip-table", width="content")


def _messages(page: _Page) -> None:
    """The error and notice the latest action left (once), and "batch done". They go into one
    container that is always there, so that the tiles below keep their place in the page."""
    sess = page.sess
    error, sess.error = sess.error, None
    notice, sess.notice = sess.notice, None
    warning = sess.warning  # until the next action answers it
    kept, sess.kept = sess.kept, None
    done = all(it["cell_id"] in page.labels or it["cell_id"] in sess.skipped for it in sess.items)
    with st.container(key="messages"):
        if error:
            st.error(md(error))
        if warning:
            st.warning(warning)
        if kept:
            st.warning(md(kept))
        if sess.items and done:
            st.success(
                "Batch done: press **n** (Next batch) for the next one. To change a label, "
                "choose its tile first (the arrow keys or a click)."
            )
    if notice:
        st.toast(md(notice))


def _toolbar(page: _Page) -> None:
    sess, project, annotator = page.sess, page.project, page.annotator
    with st.container(horizontal=True, vertical_alignment="center", key="toolbar"):
        st.button(
            "Next batch (n)",
            key="next-batch",
            type="primary",
            on_click=B.after_keys(B.new_batch),
            args=(sess, project, annotator),
            help="Refit the model on all labels and choose the next batch",
        )
        st.button(
            "Undo (z)",
            key="undo",
            on_click=B.after_keys(B.undo),
            args=(sess, project, annotator),
            help="Revert your latest label or skip",
        )
        st.button(
            "Skip (s)",
            key="skip",
            on_click=B.after_keys(B.label_focused),
            args=(sess, project, annotator, SKIP),
            help="Skip the focused cell (no label)",
        )
        for label, key, step in (
            ("◀ Previous", "focus-prev", -1),
            ("Next cell ▶", "focus-next", 1),
        ):
            st.button(
                label,
                key=key,
                on_click=B.after_keys(B.move_focus),
                args=(sess, project, annotator, step),
            )
        with st.form("add-class-form", border=False, width="content"):  # emptied once added
            with st.container(horizontal=True, vertical_alignment="center"):
                st.text_input(
                    "New class",
                    key="new-class",
                    placeholder="new class name",
                    label_visibility="collapsed",
                    width=200,
                )
                st.form_submit_button(
                    "Add class",
                    key="add-class",
                    on_click=B.add_class,
                    args=(sess, project, annotator, False),
                )
                st.form_submit_button(
                    "Add + label focused",
                    key="add-label-class",
                    on_click=B.add_class,
                    args=(sess, project, annotator, True),
                )


def _class_keys(page: _Page) -> None:
    """One button per class, labeling the focused tile; with its key it is also the legend.
    With many classes, a box to find one by typing its name."""
    sess, project, annotator, classes = page.sess, page.project, page.annotator, page.classes
    with st.container(horizontal=True, key="class-keys", vertical_alignment="center"):
        st.markdown("**Label the focused cell:**")
        for i, c in enumerate(classes):
            st.button(
                f"{c.key} · {md(c.name)}" if c.key else md(c.name),
                key=class_button_key(c, i),
                on_click=B.after_keys(B.label_focused),
                args=(sess, project, annotator, c.name),
                help=f"key {c.key}" if c.key else "no key: click, or find it by name",
            )
        real = [c.name for c in classes if not c.pseudo]
        if len(real) >= FIND_FROM:
            st.selectbox(
                "Find a class",
                real,
                index=None,
                key=f"find-class-{len(sess.actions)}",
                placeholder="type to find a class…",
                label_visibility="collapsed",
                width=220,
                on_change=B.find_changed,
                args=(sess, project, annotator, f"find-class-{len(sess.actions)}"),
                help="Type part of a class's name and pick it: labels the focused cell",
            )
        if not real:
            st.caption("No classes yet: add the first one with the box above.")


FIND_FROM = 6  # classes from which the type-to-find box is shown


def class_button_key(info: ClassInfo, index: int) -> str:
    """Widget key of the button that gives class ``info`` to the focused tile."""
    return f"cls-{info.key}" if info.key else f"cls-nokey-{index}"


def _grid(page: _Page) -> None:
    items = page.sess.items
    if not items:
        return
    per_row = 3 if page.display.side_by_side else 6
    tiles = tile_pngs(page.project, [it["cell_id"] for it in items], page.display)
    for start in range(0, len(items), per_row):
        for col, i in zip(st.columns(per_row), range(start, min(start + per_row, len(items)))):
            with col:
                _tile(page, i, tiles[i])


def _option_label(page: _Page, name: str) -> str:
    """A tile's class button: the class's key (the legend names it); ``s`` for skip."""
    return SKIP_KEY if name == SKIP else md(class_option(name, page.classes))


def _tile(page: _Page, i: int, png: bytes) -> None:
    sess, item = page.sess, page.sess.items[i]
    label = page.labels.get(item["cell_id"])
    focused, skipped = i == sess.focus, item["cell_id"] in sess.skipped
    with st.container(key=f"tile-{i}", border=True, gap="small"):
        st.button(
            f"▶ {i + 1} (focused)" if focused else f"{i + 1}",
            key=f"focus-{i}",
            type="tertiary",
            on_click=B.after_keys(B.set_focus),
            args=(sess, page.project, page.annotator, i),
            help="Focus this cell: the class keys label it; the sidebar zooms in",
        )
        st.image(png, width="stretch")
        info, detail = "", None  # hidden: the tile says only its state (every tile alike)
        if not page.display.hide_guesses:
            reason = chosen_reason(item.get("strategy"))
            info, detail = md(reason.short), md(reason.detail)
            info += f"  \nguess {md(guess_text(item))}  \n"
        state = f"✔ **{md(label)}**" if label else ("skipped" if skipped else "not labeled")
        # one element, not the image's caption (see STACK.md); its lines each kept to one
        # line: a tile is as tall labeled as not
        st.caption(f"{info}{state}", help=detail)
        shown = label if label is not None else (SKIP if skipped else None)
        key = pick_key(item["cell_id"], shown)
        st.pills(
            "Label",
            [c.name for c in page.classes] + [SKIP],
            default=shown,
            required=True,
            key=key,
            format_func=functools.partial(_option_label, page),
            label_visibility="collapsed",
            on_change=B.pick_changed,
            args=(sess, page.project, page.annotator, item["cell_id"], key, shown),
        )


def pick_key(cell_id: str, shown: str | None) -> str:
    """Widget key of a tile's class buttons. It names the label shown, so a new label makes a new
    widget: a value the browser sent before it saw the new label can never re-label the cell."""
    return f"pick-{cell_id}-{shown or 'none'}"


def _styles(page: _Page) -> None:
    """Tiles ringed in the colour of their label, a marker on the focused tile, the class
    colours on the class buttons; and the page's script (focus in view, keys shown at once)."""
    sess, labels, classes = page.sess, page.labels, page.classes
    colour = {c.name: css_colour(c.colour) for c in classes}
    rules = []
    for i, it in enumerate(sess.items):
        label = labels.get(it["cell_id"])
        if label:
            ring = colour.get(label, "#888888")
            rules.append(
                f".st-key-tile-{i} {{border-color: {ring} !important;"
                f" box-shadow: inset 0 0 0 3px {ring};}}"
            )
        elif it["cell_id"] in sess.skipped:
            rules.append(f".st-key-tile-{i} img {{opacity: 0.45;}}")
    focus = f"outline: 4px solid {FOCUS_COLOUR}; outline-offset: 3px; background: {FOCUS_GROUND};"
    # the script draws the focus (it moves it at once on a key); without it, the server does
    rules.append(f"body:not([data-ps-client]) .st-key-tile-{sess.focus} {{{focus}}}")
    rules.append(f'div[class*="st-key-tile-"][data-ps-focus] {{{focus}}}')
    for i, c in enumerate(classes):
        rules.append(
            f".st-key-{class_button_key(c, i)} button {{border-left: 10px solid {colour[c.name]};}}"
        )
    rules += pill_colours("pick-", classes)
    rules += [WIDE_PAGE_CSS, _LAYOUT_CSS, _GRID_CSS]
    st.html("<style>" + "\n".join(rules) + "</style>")
    _keys(page, colour)


def _keys(page: _Page, colour: dict[str, str]) -> None:
    """The page's keyboard (``label_client.js``): what it needs to mark a key's effect at once
    and to say which cell each key is for; its events come back to ``batch.key_events``."""
    sess, labels = page.sess, page.labels
    keys = {c.key: c.name for c in page.classes if c.key}
    keys[SKIP_KEY] = SKIP
    data = {
        "focus": sess.focus,
        "parked": sess.parked,
        "ids": [it["cell_id"] for it in sess.items],
        "done": [it["cell_id"] in labels or it["cell_id"] in sess.skipped for it in sess.items],
        "keys": keys,
        "options": [c.name for c in page.classes] + [SKIP],  # a tile's class buttons, in order
        "colours": {**colour, SKIP: "#9ca3af"},
        "skipName": SKIP,
        "undoKey": "z",
        "nextKey": "n",
        "batch": f"{sess.round_id}:{sess.items[0]['cell_id'] if sess.items else ''}",
        "ack": list(sess.ack),
        "run": _run_number(),
    }
    KEYS_COMPONENT(
        key=KEYS_KEY,
        data=data,
        default={"events": None},
        height=0,
        on_events_change=functools.partial(
            B.key_events, sess, page.project, page.annotator, KEYS_KEY
        ),
    )
    if B.apply_unconfirmed_keys(sess, page.project, page.annotator, KEYS_KEY):
        st.rerun()  # keys the server had not seen (typed while it was down): draw them


KEYS_KEY = B.KEYS_KEY


def _run_number() -> int:
    """A count of this session's runs of the page: the script's text changes on every run, so
    the browser runs it again (it is run when its text changes)."""
    n = st.session_state.get("_label_runs", 0) + 1
    st.session_state["_label_runs"] = n
    return n


if __name__ == "__main__":  # run by Streamlit as a page of app.py
    run_page(lambda project: render_label_page(project, current_annotator()))

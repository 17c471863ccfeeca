"""Session state of the Label page: the batch on screen, the focused tile, skips and undo.

Every action commits to the label store at once (``labeling.loop.submit_labels``) and is a
widget callback, so the page drawn afterwards already shows it. What lives only in the session
(the focused tile, which cells were skipped) is rebuilt from the store after a reload: the
annotator's open lease plus the cells already labeled in that round.

The state is one mutable :class:`LabelSession`, handed to the callbacks as an argument and
changed in place under its lock. Streamlit starts the next run (in another thread) as soon as
the next click or key arrives, while the previous run may still be in a callback; it stops the
old run at its next ``st.session_state`` access, and a value written there can be lost. So the
callbacks touch ``st.session_state`` only before they change anything (reading a widget's
value), never after a commit, and the lock keeps a fast typist's keys in order.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from app_pages.server.common import error_text
from labeling.errors import PhenoScoutError
from labeling.loop import (
    current_batch,
    next_batch,
    open_round,
    relet,
    shown_round,
    submit_labels,
    undo_last,
)
from labeling.project import Project
from labeling.store.labels import SKIP

SESSION = "label_session"  # session key of the LabelSession
KEYS_KEY = "label-keys"  # widget key of the page's keyboard (label_client.js)


@dataclass
class LabelSession:
    """The batch on screen and what the annotator did to it in this browser session."""

    owner: tuple[str, str] | None = None  # (project path, annotator) the batch belongs to
    items: list[dict[str, Any]] = field(default_factory=list)  # cell_id, path, strategy, guess,
    # confidence; in display order
    round_id: int | None = None  # round of the batch (for leasing back after an undo)
    focus: int = 0  # index of the focused tile
    skipped: set[str] = field(default_factory=set)  # cell ids skipped in this batch
    actions: list[tuple[str, str]] = field(default_factory=list)  # ("label"|"skip", cell_id)
    error: str | None = None  # a PhenoScoutError message from the latest action, to show once
    notice: str | None = None  # a one-off message from the latest action (toast)
    #: "next batch" with open tiles asked this once (shown until the next action answers it):
    #: the next request goes on
    warning: str | None = None
    ack: tuple[str, int] = ("", 0)  # (browser page token, number of its latest key applied)
    #: each tile's label as the page last drew it (None: open): a key or click on a tile drawn
    #: open whose cell was labeled since (another tab, the CLI) does not overwrite that label
    shown: dict[str, str | None] = field(default_factory=dict)
    kept: str | None = None  # such a label kept: said once, as a warning
    #: every tile done and the focus left where the last label put it: a class key then is a
    #: slip (a double tap on the last tile), not a relabel; moving the focus asks for one
    parked: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)  # one action at a time

    def reset(
        self,
        owner: tuple[str, str],
        items: list[dict[str, Any]],
        round_id: int | None,
        labels: dict[str, str],
    ) -> None:
        """Show a new batch, focused on its first open tile (cells marked ``skipped`` by
        ``labeling.loop.current_batch`` show as skipped)."""
        self.owner, self.items, self.round_id = owner, items, round_id
        self.skipped = {it["cell_id"] for it in items if it.get("skipped")}
        self.actions, self.warning = [], None
        self.focus = next_open(items, -1, labels, self.skipped)
        self.parked = self.all_done(labels)

    def all_done(self, labels: dict[str, str]) -> bool:
        """Every tile of the batch labeled or skipped (False for an empty batch)."""
        ids = [it["cell_id"] for it in self.items]
        return bool(ids) and all(c in labels or c in self.skipped for c in ids)

    def index(self, cell_id: str) -> int | None:
        ids = [it["cell_id"] for it in self.items]
        return ids.index(cell_id) if cell_id in ids else None


def session() -> LabelSession:
    """This browser session's LabelSession (created on first use)."""
    return st.session_state.setdefault(SESSION, LabelSession())


def action(fn: Callable[..., None]) -> Callable[..., None]:
    """Make ``fn(sess, ...)`` a widget callback: one at a time per session, and a
    PhenoScoutError kept in ``sess.error`` for the page to show (callbacks run outside the
    page's ``try``)."""

    @functools.wraps(fn)
    def wrapper(sess: LabelSession, *args: Any) -> None:
        with sess.lock:
            try:
                fn(sess, *args)
            except PhenoScoutError as exc:
                sess.error = error_text(exc)  # a damaged file: its short message, no path

    return wrapper


def ensure_batch(project: Project, annotator: str) -> LabelSession:
    """The session with its batch: resumed from the store on the session's first run, or after
    the annotator changes."""
    sess = session()
    owner = (str(project.path), annotator)
    if sess.owner != owner:
        items, round_id = resume_batch(project, annotator)
        sess.reset(owner, items, round_id, project.store.current_labels(include_pseudo=True))
    return sess


def resume_batch(project: Project, annotator: str) -> tuple[list[dict[str, Any]], int | None]:
    """The annotator's current batch as it stands in the store (``labeling.loop.current_batch``)
    and its round id."""
    items = current_batch(project, annotator)
    return items, shown_round(project, annotator)


def next_open(
    items: list[dict[str, Any]], after: int, labels: dict[str, str], skipped: set[str]
) -> int:
    """Index of the first tile after ``after`` (wrapping round) with no label and no skip;
    ``after`` itself (or 0) when every tile is done."""
    n = len(items)
    for step in range(1, n + 1):
        i = (after + step) % n
        cell_id = items[i]["cell_id"]
        if cell_id not in labels and cell_id not in skipped:
            return i
    return max(after, 0) if n else 0


@action
def label_cell(
    sess: LabelSession, project: Project, annotator: str, cell_id: str, name: str
) -> None:
    """Commit ``name`` (a class, or SKIP) for ``cell_id``; focus the next open tile. A tile
    drawn open whose cell was labeled meanwhile (in another tab of the same annotator, from the
    command line) keeps that label, and the page says so: the same key again relabels it."""
    if sess.shown.get(cell_id, "") is None:
        now = [r.label for r in project.store.history(cell_id) if not r.undone]
        if now:
            sess.shown[cell_id] = now[-1]
            sess.kept = (
                f"{_tile_name(sess, cell_id).capitalize()} was labeled {now[-1]!r} meanwhile "
                "(in another tab, or from the command line), so your choice did not replace "
                "it; choose again to relabel it."
            )
            return
    submit_labels(project, {cell_id: name}, annotator=annotator, source="batch")
    sess.shown[cell_id] = None if name == SKIP else name
    sess.warning = None
    if name == SKIP:
        sess.skipped.add(cell_id)
    else:
        sess.skipped.discard(cell_id)
    sess.actions.append(("skip" if name == SKIP else "label", cell_id))
    i = sess.index(cell_id)
    if i is not None:
        labels = project.store.current_labels(include_pseudo=True)
        sess.focus = next_open(sess.items, i, labels, sess.skipped)
        sess.parked = sess.all_done(labels)


@action
def label_focused(sess: LabelSession, project: Project, annotator: str, name: str) -> None:
    """Label (or with SKIP, skip) the focused tile: what a class key does."""
    if sess.items:
        label_cell(sess, project, annotator, sess.items[sess.focus]["cell_id"], name)


def pick_changed(
    sess: LabelSession,
    project: Project,
    annotator: str,
    cell_id: str,
    widget_key: str,
    drawn: str | None,
) -> None:
    """A tile's class buttons changed: commit the choice and focus the next open tile.

    ``drawn`` is the choice the buttons were drawn with. A value equal to it is no click (a
    chosen button cannot be chosen again): it is the browser sending back the buttons of an
    earlier drawing, e.g. a label's, after an undo made the tile open again; the server has
    forgotten that widget, so Streamlit calls this as for a change, and it would relabel the
    tile (seen: a key, z a quarter second later, and the label came back a second after)."""
    choice = st.session_state.get(widget_key)  # first: Streamlit may stop the run here
    _keys_first(sess, project, annotator, _queued(KEYS_KEY))
    if choice is not None and choice != drawn:
        label_cell(sess, project, annotator, cell_id, choice)


def _tile_name(sess: LabelSession, cell_id: str) -> str:
    """``"tile 5"`` (as numbered on the page) for a cell of the batch, else its id."""
    i = sess.index(cell_id)
    return f"tile {i + 1}" if i is not None else cell_id


@action
def undo(sess: LabelSession, project: Project, annotator: str) -> None:
    """Revert the latest label (``labeling.loop.undo_last``, which leases the cell back) or skip
    of this annotator; focus its cell."""
    sess.warning = None
    if sess.actions and sess.actions[-1][0] == "skip":
        _, cell_id = sess.actions.pop()
        sess.skipped.discard(cell_id)
        i = sess.index(cell_id)
        if i is not None and sess.round_id is not None:
            relet(project, annotator, sess.items[i], sess.round_id)
        sess.notice = f"Skip of {_tile_name(sess, cell_id)} undone"
    else:
        # within the batch on the page: undoing a label of an earlier batch would bring back
        # a cell that is not on it
        record = undo_last(project, annotator, within={it["cell_id"] for it in sess.items})
        if record is None:
            sess.notice = "Nothing to undo"
            return
        if not record.undone:
            sess.notice = (
                "Nothing to undo in this batch (your latest label is of an earlier batch: "
                "change it on the Review page)"
            )
            return
        cell_id = record.cell_id
        if sess.actions and sess.actions[-1] == ("label", cell_id):
            sess.actions.pop()
        sess.notice = f"Label {record.label!r} of {_tile_name(sess, cell_id)} undone"
    i = sess.index(cell_id)
    if i is not None:
        sess.focus = i
    sess.parked = False


@action
def new_batch(sess: LabelSession, project: Project, annotator: str) -> None:
    """Refit the head and hand out the next batch (the open cells of this one are released).
    While tiles of this batch are open, the first request only asks (a warning on the page);
    a second one, with no label, skip or undo between, goes on."""
    labels = project.store.current_labels(include_pseudo=True)
    n_open = sum(it["cell_id"] not in labels and it["cell_id"] not in sess.skipped
                 for it in sess.items)  # fmt: skip
    if n_open and sess.warning is None:
        cells = "1 cell of this batch has" if n_open == 1 else f"{n_open} cells of this batch have"
        sess.warning = (
            f"{cells} no label yet. Press **n** (Next batch) again to leave "
            f"{'it' if n_open == 1 else 'them'} for later (back to the pool, for any batch), "
            "or label or skip (**s**) first."
        )
        return
    items = next_batch(project, project.config.loop.batch_size, annotator, resume=False)
    sess.reset((str(project.path), annotator), items, open_round(project, annotator), labels)


@action
def move_focus(sess: LabelSession, project: Project, annotator: str, step: int) -> None:
    """Move the focus ``step`` tiles (wrapping round)."""
    if sess.items:
        sess.focus = (sess.focus + step) % len(sess.items)
        sess.parked = False


@action
def set_focus(sess: LabelSession, project: Project, annotator: str, index: int) -> None:
    sess.focus = index
    sess.parked = False


def add_class(sess: LabelSession, project: Project, annotator: str, and_label: bool) -> None:
    """Create the class typed in the add-class box; with ``and_label``, give it to the focused
    tile."""
    name = st.session_state.get("new-class", "")  # first: Streamlit may stop the run here
    _keys_first(sess, project, annotator, _queued(KEYS_KEY))
    before = sess.error
    _add_class(sess, project, annotator, name, and_label)
    if sess.error is before:  # added: the box is emptied; refused, it keeps what was typed
        st.session_state["new-class"] = ""


@action
def _add_class(
    sess: LabelSession, project: Project, annotator: str, name: str, and_label: bool
) -> None:
    info = project.store.add_class(name)
    if and_label:
        label_focused(sess, project, annotator, info.name)
    sess.notice = f"Class {info.name!r} added" + (f" (key {info.key})" if info.key else "")


def find_changed(sess: LabelSession, project: Project, annotator: str, widget_key: str) -> None:
    """A class was picked in the type-to-find box: label the focused tile with it."""
    choice = st.session_state.get(widget_key)  # first: Streamlit may stop the run here
    _keys_first(sess, project, annotator, _queued(KEYS_KEY))
    if choice:
        label_focused(sess, project, annotator, choice)


def key_events(sess: LabelSession, project: Project, annotator: str, widget_key: str) -> None:
    """The browser's key queue changed (``label_client.js``): apply, in order and once each, the
    events numbered after the last one applied for this browser page. Events: ``[n, "label",
    class, cell_id]`` (a class key or skip, for the cell the page marked), ``[n, "focus", index,
    None]``, ``[n, "undo", ...]``, ``[n, "next", ...]``."""
    _keys_first(sess, project, annotator, _queued(widget_key))  # the read first


def after_keys(fn: Callable[..., None]) -> Callable[..., None]:
    """``fn(sess, project, annotator, *args)`` as a button's callback that first applies the
    browser's key events the server has not applied yet: keys typed before a click come before
    it, but Streamlit may call the click's callback before the keys' own (a key, then "Add +
    label focused" at once, labeled the tile the key had labeled)."""

    @functools.wraps(fn)
    def callback(sess: LabelSession, project: Project, annotator: str, *args: Any) -> None:
        _keys_first(sess, project, annotator, _queued(KEYS_KEY))  # reads first
        fn(sess, project, annotator, *args)

    return callback


def _keys_first(
    sess: LabelSession, project: Project, annotator: str, queued: tuple[str, list] | None
) -> None:
    """Apply the events of ``queued`` (the key queue, read before any work) not applied yet."""
    if queued is not None:
        _apply_keys(sess, project, annotator, *queued)


def _queued(widget_key: str) -> tuple[str, list] | None:
    """``(token, events)`` of the browser's key queue (``label_client.js``), or None."""
    state = st.session_state.get(widget_key) or {}
    value = state.get("events") if hasattr(state, "get") else None
    if not isinstance(value, dict):
        return None
    return str(value.get("token", "")), value.get("events") or []


def apply_unconfirmed_keys(
    sess: LabelSession, project: Project, annotator: str, widget_key: str
) -> bool:
    """Apply the browser's key events this session has not applied yet, on any run of the
    page, not only when the queue changes: after the server restarts, a page that kept keys
    typed while it was down sends them with its first run, to a session whose widget has no
    earlier value, so no change callback fires. True when there were any (the page redraws)."""
    queued = _queued(widget_key)
    if queued is None:
        return False
    token, events = queued
    done = sess.ack[1] if sess.ack[0] == token else 0
    if not any(isinstance(e, list) and e and isinstance(e[0], int) and e[0] > done for e in events):
        return False
    _apply_keys(sess, project, annotator, token, events)
    return True


@action
def _apply_keys(
    sess: LabelSession, project: Project, annotator: str, token: str, events: list
) -> None:
    done = sess.ack[1] if sess.ack[0] == token else 0
    for event in events:
        if not isinstance(event, list) or len(event) != 4 or not isinstance(event[0], int):
            continue
        seq, kind, arg, cell = event
        if seq <= done:
            continue
        sess.ack = (token, seq)  # before the work: an event that fails is not tried again
        done = seq
        if kind == "label" and isinstance(arg, str) and isinstance(cell, str):
            if sess.parked:  # the batch is done: a slip, not a relabel (the page ignores it too)
                continue
            label_cell(sess, project, annotator, cell, arg)
        elif kind == "focus" and isinstance(arg, int) and 0 <= arg < len(sess.items):
            sess.focus = arg
            sess.parked = False
        elif kind == "undo":
            undo(sess, project, annotator)
        elif kind == "next":
            new_batch(sess, project, annotator)

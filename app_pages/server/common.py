"""What every page of the app shares: the project from ``--project``, its cached opening, the
start screen and the annotator name."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from labeling.errors import PhenoScoutError
from labeling.project import Project, open_project
from labeling.workspace import resolve_user_path

ROOT_ENV = "PHENOSCOUT_ROOT"  # folders typed in the app must lie under it (default: the cwd)
PROJECT_PATH = "project_path"  # session key: the folder of the open project
START_ERROR = "start_error"  # session key: why the start screen could not open a folder
DEFAULT_ANNOTATOR = "browser"


def project_arg(argv: list[str] | None = None) -> str | None:
    """The ``--project`` given after ``streamlit run app.py --``, or None."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--project")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args.project


@st.cache_resource(show_spinner=False)
def open_cached(path: str) -> Project:
    """The open project at ``path``, shared by every session of this server."""
    return open_project(Path(path))


def run_page(render: Callable[[Project], None]) -> None:
    """Draw a page (``render(project)``) for the open project; the core's errors as st.error.
    Each page script of ``app_pages`` calls this when Streamlit runs it as the current page."""
    path = st.session_state.get(PROJECT_PATH) or project_arg()
    try:
        render(open_cached(str(path)))
    except PhenoScoutError as exc:  # anything else is a bug: Streamlit shows it as one
        show_error(exc, path)


def error_text(exc: PhenoScoutError, project_path: object = None) -> str:
    """What the app says for an error: a damaged file's short message and fix (its ``brief``),
    else the error's line with the project folder left out of the paths it names."""
    brief = getattr(exc, "brief", None)
    if brief:
        return str(brief)
    text = str(exc)
    if project_path:
        folder = str(Path(str(project_path)).expanduser().resolve())
        text = text.replace(folder + os.sep, "").replace(folder, Path(folder).name)
    return text


def show_error(exc: PhenoScoutError, project_path: object = None) -> None:
    """``st.error`` with :func:`error_text`."""
    from app_pages.widgets.text import md  # user text (names in the message) shown as text

    st.error(md(error_text(exc, project_path)))


def current_annotator() -> str:
    """The annotator typed in the sidebar (``annotator_input``, drawn by ``app.py``)."""
    return str(st.session_state.get("annotator") or "").strip() or DEFAULT_ANNOTATOR


def project_sidebar(project: Project) -> None:
    """The project's name and folder at the top of the sidebar."""
    from app_pages.widgets.text import md  # user text shown as text

    st.sidebar.markdown(f"### {md(project.config.name)}")
    st.sidebar.caption(md(project.path))


@st.cache_data(show_spinner=False, max_entries=64)
def cached(fn_name: str, path: str, labels_key: tuple, *args: Any) -> Any:
    """``labeling`` function ``fn_name`` ("module.function") applied to the project at ``path``
    (and ``args``), cached per :func:`labels_key`: the work of a report is done once per label
    given, not on every rerun. PhenoScoutErrors are raised (and not cached)."""
    import importlib

    module, name = fn_name.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(open_cached(path), *args)


def labels_key(project: Project) -> tuple:
    """What identifies the current labels: labels given, and the latest label event (an undo
    followed by another label keeps the count); classes (renames, merges) and the number of
    cells (a plate added) too."""
    store = project.store
    events = store.label_events()
    last = (events[-1].cell_id, events[-1].label, events[-1].labeled_at) if events else None
    classes = tuple((c.name, c.n_labeled) for c in store.classes(include_pseudo=True))
    return (store.n_labels_given(), last, classes, store.n_cells())


#: The page address's parameters that keep the annotator and the project over a reload.
ANNOTATOR_PARAM, PROJECT_PARAM = "annotator", "project"
_ANNOTATOR_KEPT = "annotator_kept"  # not a widget's key: Streamlit never drops it


def annotator_input() -> str:
    """The sidebar's annotator name (per session; kept in the page's address, so a reload
    keeps it and labels stay credited to the same person); the default when left empty."""
    if "annotator" not in st.session_state:  # a new session, or a run without the sidebar
        # (the start screen) dropped the widget's value, and a page switch the address's
        kept = st.session_state.get(_ANNOTATOR_KEPT)
        st.session_state["annotator"] = kept or st.query_params.get(
            ANNOTATOR_PARAM, DEFAULT_ANNOTATOR
        )
    name = st.sidebar.text_input(
        "Annotator",
        key="annotator",
        help="Your name or initials: every label records who gave it.",
    )
    name = name.strip() or DEFAULT_ANNOTATOR
    st.session_state[_ANNOTATOR_KEPT] = name
    _keep_param(ANNOTATOR_PARAM, name if name != DEFAULT_ANNOTATOR else None)
    return name


def _keep_param(name: str, value: str | None) -> None:
    """Set (or, for None, remove) a parameter of the page's address."""
    if value is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != value:
        st.query_params[name] = value


def chosen_project() -> str | None:
    """The project this session shows: the one opened in it, else the address's (after a
    reload; a path under the allowed root only), else the one the app was started with."""
    path = st.session_state.get(PROJECT_PATH)
    if not path and st.query_params.get(PROJECT_PARAM):
        try:
            path = str(user_path(st.query_params[PROJECT_PARAM]))
        except PhenoScoutError:
            path = None
        st.session_state[PROJECT_PATH] = path
    started = project_arg()
    path = path or started
    given = bool(path and started and Path(path).resolve() == Path(started).resolve())
    _keep_param(PROJECT_PARAM, None if given or not path else path)
    return path


def allowed_root() -> Path:
    """The folder every path typed in the app must lie under: ``$PHENOSCOUT_ROOT``, else the
    working directory the server was started in."""
    return Path(os.environ.get(ROOT_ENV) or Path.cwd()).expanduser().resolve()


def user_path(typed: str | os.PathLike[str]) -> Path:
    """A path the app is about to use (typed, picked or joined), resolved under
    :func:`allowed_root` (relative paths too), symlinks and ``..`` included. Call it at the
    moment the path is used, on the final path (after joining a picked subfolder), not on a
    parent: a link inside the root may point out of it.

    Raises:
        ConfigError: empty, or outside the allowed root (``workspace.resolve_user_path``).
    """
    return resolve_user_path(str(typed), allowed_root())


def _open_clicked() -> None:
    typed = st.session_state.get("start-path", "").strip()
    if not typed:
        st.session_state[START_ERROR] = "type the folder of a PhenoScout project first"
        return
    try:
        path = str(user_path(typed))
        open_cached(path)
    except PhenoScoutError as exc:
        st.session_state[START_ERROR] = str(exc)
        return
    st.session_state[PROJECT_PATH] = path


def start_screen() -> None:
    """Ask for a project folder when the app was started without one."""
    st.title("PhenoScout")
    st.write("Active-learning labeling of single-cell images that surfaces rare phenotypes early.")
    error = st.session_state.pop(START_ERROR, None)
    if error:
        from app_pages.widgets.text import md  # user text shown as text

        st.error(md(error))
    st.text_input("Project folder", key="start-path", placeholder="/path/to/my_project")
    st.button("Open project", key="open-project", type="primary", on_click=_open_clicked)
    st.info(
        "No project yet? Run `scripts/demo` to generate a demo screen and open it here, or "
        "create one with `phenoscout init my_project --crops FOLDER`."
    )

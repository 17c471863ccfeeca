"""PhenoScout in the browser (Streamlit). Thin: reads widgets, calls the core, draws results.

Start it with ``phenoscout app PROJECT`` (or ``scripts/demo`` for the built-in demo screen);
without a project it shows a start screen asking for one (with the Project page's create and
demo sections). The pages are scripts in ``app_pages/pages/`` (Label, the one that opens, Project,
Discover, Review and Export), chosen in the navigation bar at the top; each draws itself with
``common.run_page``. The sidebar's project name and annotator box are drawn here, for every
page, so they keep their value when the page changes. Opening a project starts its background
trainer once per session (``app_pages.server.status``; ``PHENOSCOUT_TRAINER=off`` starts none).
"""

from __future__ import annotations

import streamlit as st

from app_pages.pages.project import render_project_page
from app_pages.server.common import (
    annotator_input,
    chosen_project,
    open_cached,
    project_sidebar,
    show_error,
    start_screen,
)
from app_pages.server.status import start_trainer_once
from labeling.errors import PhenoScoutError
from labeling.project import Project


def main() -> None:
    # an emoji favicon is drawn in the page; a page's :material: icon would be fetched from
    # fonts.gstatic.com (the page must ask nothing of any host but its own server)
    st.set_page_config(page_title="PhenoScout", page_icon="🔬", layout="wide")
    path = chosen_project()  # opened in this session, or in the address (a reload), or given
    project: Project | None = None
    if path:
        try:
            project = open_cached(path)
        except PhenoScoutError as exc:
            show_error(exc, path)
    if project is None:
        start_screen()  # open a project; below it, the Project page's create and demo
        render_project_page(None)
        return
    project_sidebar(project)
    start_trainer_once(project)  # the project's background trainer (PHENOSCOUT_TRAINER=off: none)
    annotator_input()  # here, not on the Label page: it keeps its value on every page
    label = st.Page(
        "app_pages/pages/label.py",
        title="Label",
        icon=":material/label:",
        url_path="main",
        default=True,
    )  # fmt: skip (served at "/")
    pages = [
        label,
        # the default page is served at "/": "/label" (a bookmark, a link) leads there too,
        # not to Streamlit's "Page not found"
        st.Page(lambda: st.switch_page(label), title="Label", url_path="label",
                visibility="hidden"),
        st.Page("app_pages/pages/project.py", title="Project", icon=":material/folder_open:",
                url_path="project"),
        st.Page("app_pages/pages/fields.py", title="Fields", icon=":material/grid_view:",
                url_path="fields"),
        st.Page("app_pages/pages/discover.py", title="Discover", icon=":material/insights:",
                url_path="discover"),
        st.Page("app_pages/pages/review.py", title="Review", icon=":material/fact_check:",
                url_path="review"),
        st.Page("app_pages/pages/export.py", title="Export", icon=":material/download:",
                url_path="export"),
    ]  # fmt: skip
    nav = st.navigation(pages, position="top")
    nav.run()


main()

"""PhenoScout in the browser (Streamlit). Thin: reads widgets, calls the core, draws results.

Start it with ``phenoscout app PROJECT`` (or ``scripts/demo`` for the built-in demo screen);
without a project it shows a start screen asking for one. The pages live in ``app_pages/``.
"""

from __future__ import annotations

import streamlit as st

from app_pages.common import PROJECT_PATH, open_cached, project_arg, start_screen
from app_pages.label import render_label_page
from labeling.errors import PhenoScoutError
from labeling.project import Project


def main() -> None:
    st.set_page_config(page_title="PhenoScout", layout="wide")
    path = st.session_state.get(PROJECT_PATH) or project_arg()
    project: Project | None = None
    if path:
        try:
            project = open_cached(path)
        except PhenoScoutError as exc:
            st.error(str(exc))
    if project is None:
        start_screen()
        return
    try:
        render_label_page(project)
    except PhenoScoutError as exc:
        st.error(str(exc))


main()

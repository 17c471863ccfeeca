"""The Project page: open a project, create one from a folder of crops, add a plate to the open
one, or open the demo with one click. Ingest and features show a progress bar.

Widget keys: ``proj-open-path``/``proj-open``; ``proj-crops`` (folder), ``proj-subfolder``,
``proj-new-path``, ``proj-channels``, ``proj-colour-<i>``, ``proj-labels-csv``,
``proj-metadata-csv``, ``proj-create``; ``proj-add-crops``/``proj-add``; ``proj-demo``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from app_pages.common import PROJECT_PATH, open_cached, project_arg
from datasets.config import IngestConfig
from labeling.errors import PhenoScoutError, ProjectError
from labeling.project import Project, add_crops, create_project
from labeling.workspace import check_new_project_folder, demo_project, set_channels, subfolders

WHOLE = "(the whole folder)"
_DEFAULT_COLOURS = ("#3b82f6", "#22c55e", "#ef4444", "#eab308", "#d946ef")


def render_project_page(project: Project | None) -> None:
    """Draw the Project page; ``project`` is the open one (None on the start screen)."""
    if project is not None:
        st.header("Project")
        st.markdown(f"Open: **{project.config.name}** (`{project.path}`), "
                    f"{project.store.n_cells()} cells")  # fmt: skip
    if project is not None:
        _guarded(_open_section)
    _guarded(_create_section)
    if project is not None:
        _guarded(_add_section, project)
    _guarded(_demo_section)


def _guarded(section: Callable[..., None], *args: object) -> None:
    """Draw ``section``; a core error shows as st.error in its place (the others still draw)."""
    try:
        section(*args)
    except PhenoScoutError as exc:
        st.error(str(exc))


def _open_section() -> None:
    with st.container(border=True, key="proj-open-box"):
        st.markdown("**Open another project**")
        typed = st.text_input("Project folder", key="proj-open-path")
        if st.button("Open", key="proj-open"):
            if not typed.strip():
                raise ProjectError("type the folder of a PhenoScout project first")
            _open(Path(typed.strip()).expanduser().resolve())


def _create_section() -> None:
    with st.container(border=True, key="proj-create-box"):
        st.markdown("**Create a project from a folder of crops**")
        base = st.text_input("Folder of crops", key="proj-crops", placeholder="/data/screen1")
        if not base.strip():
            return
        base_path = Path(base.strip()).expanduser()
        sub = st.selectbox("Crops in", [WHOLE, *subfolders(base_path)], key="proj-subfolder")
        crops = base_path if sub == WHOLE else base_path / sub
        default = str(Path.cwd() / f"{crops.name}_project")
        target = st.text_input("New project folder", value=default, key="proj-new-path")
        names_text = st.text_input("Channel names (comma-separated, optional)",
                                   key="proj-channels", placeholder="DNA, Tubulin")  # fmt: skip
        names = [n.strip() for n in names_text.split(",") if n.strip()]
        colours = [
            st.color_picker(f"Colour of {n}", _DEFAULT_COLOURS[i % 5], key=f"proj-colour-{i}")
            for i, n in enumerate(names)
        ]
        labels_csv = st.text_input("labels.csv (optional: ground truth)", key="proj-labels-csv")
        meta_csv = st.text_input("metadata.csv (optional; default: the folder's own)",
                                 key="proj-metadata-csv")  # fmt: skip
        if st.button("Create project", key="proj-create", type="primary"):
            path = check_new_project_folder(Path(target))
            bar = st.progress(0.0, text="Reading crops")
            project, report = create_project(
                path, crops, IngestConfig(channel_names=tuple(names)),
                labels_csv=_optional(labels_csv), metadata_csv=_optional(meta_csv),
                progress=_progress(bar, "Reading crops"),
                feature_progress=_progress(bar, "Computing features"),
            )  # fmt: skip
            set_channels(project, names, colours)
            project.close()
            _open(path)


def _add_section(project: Project) -> None:
    with st.container(border=True, key="proj-add-box"):
        st.markdown("**Add a plate** (a folder of crops with this project's channels)")
        folder = st.text_input("Folder of crops", key="proj-add-crops")
        if st.button("Add plate", key="proj-add") and folder.strip():
            bar = st.progress(0.0, text="Reading crops")
            report = add_crops(project, Path(folder.strip()).expanduser(),
                               progress=_progress(bar, "Reading crops"),
                               feature_progress=_progress(bar, "Computing features"))  # fmt: skip
            st.success(f"Added {report.n_cells} cells from {folder.strip()}")


def _demo_section() -> None:
    with st.container(border=True, key="proj-demo-box"):
        st.markdown("**Try it on the demo**: a synthetic screen with 7 phenotypes, 3 rare "
                    f"(made in `{Path.cwd() / 'phenoscout_demo'}` the first time)")  # fmt: skip
        if st.button("Open the demo", key="proj-demo"):
            bar = st.progress(0.0, text="Preparing the demo")
            project = demo_project(progress=_progress(bar, "Preparing the demo"))
            _open(project.path)


def _open(path: Path) -> None:
    """Make ``path`` the open project and show its Label page."""
    open_cached(str(path))  # raises a ProjectError with the reason when it is no project
    had_project = bool(st.session_state.get(PROJECT_PATH) or project_arg())
    st.session_state[PROJECT_PATH] = str(path)
    if had_project:  # the navigation has the Label page
        st.switch_page("app_pages/label.py")
    st.rerun()  # the start screen: the next run draws the navigation, Label first


def _optional(text: str) -> Path | None:
    return Path(text.strip()).expanduser() if text.strip() else None


def _progress(bar, text: str) -> Callable[[int, int], None]:  # bar: st.progress's element
    def update(done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{text}: {done}/{total}")

    return update


def _current() -> Project | None:
    path = st.session_state.get(PROJECT_PATH) or project_arg()
    if not path:
        return None
    try:
        return open_cached(str(path))
    except PhenoScoutError:
        return None


if __name__ == "__main__":  # run by Streamlit as a page of app.py
    render_project_page(_current())

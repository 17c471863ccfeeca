"""PhenoScout in the browser (Streamlit). Thin: reads widgets, calls the core, draws results.

Start it with ``phenoscout app PROJECT`` (or ``scripts/demo`` for the built-in demo screen).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import streamlit as st

from datasets.render import composite, upscale
from labeling.errors import PhenoScoutError
from labeling.loop import next_batch
from labeling.project import Project, open_project

ANNOTATOR = "browser"
TILE_ZOOM = 2


def _project_arg() -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--project")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.project


@st.cache_resource
def _open(path: str) -> Project:
    return open_project(Path(path))


def _commit(project: Project, cell_id: str, widget_key: str) -> None:
    choice = st.session_state.get(widget_key)
    if choice:
        project.store.submit({cell_id: choice}, annotator=ANNOTATOR, source="batch")


def _render_batch(project: Project, batch: list[dict], class_names: list[str]) -> None:
    ids = [b["cell_id"] for b in batch]
    tiles = upscale(composite(project.pixels.read(ids), project.channel_colours), TILE_ZOOM)
    current = project.store.current_labels(include_pseudo=True)
    n_cols = 6
    for start in range(0, len(batch), n_cols):
        cols = st.columns(n_cols)
        for col, item, tile in zip(cols, batch[start : start + n_cols], tiles[start : start + n_cols]):
            with col:
                st.image(tile, use_container_width=True)
                st.caption(f"`{item['cell_id']}`")
                key = f"label-{item['cell_id']}"
                options = ["", *class_names]
                given = current.get(item["cell_id"], "")
                st.selectbox(
                    "class", options, index=options.index(given) if given in options else 0,
                    key=key, label_visibility="collapsed",
                    on_change=_commit, args=(project, item["cell_id"], key),
                )


def main() -> None:
    st.set_page_config(page_title="PhenoScout", layout="wide")
    st.title("PhenoScout")
    default = _project_arg() or ""
    path = st.sidebar.text_input("Project folder", value=default, key="project-path")
    if not path:
        st.info("Open a project: type its folder in the sidebar, or run `scripts/demo`.")
        return
    try:
        project = _open(path)
        store = project.store
        st.sidebar.metric("cells", f"{store.n_cells():,}")
        st.sidebar.metric("labels given", store.n_labels_given())
        new_class = st.sidebar.text_input("Add a class", key="new-class")
        if st.sidebar.button("Add", key="add-class") and new_class.strip():
            store.add_class(new_class.strip())
        class_names = [c.name for c in store.classes()]
        st.sidebar.write({c.name: c.n_labeled for c in store.classes()})
        if "batch" not in st.session_state or st.button("Next batch", key="next-batch", type="primary"):
            st.session_state["batch"] = next_batch(project, project.config.loop.batch_size, annotator=ANNOTATOR)
        _render_batch(project, st.session_state["batch"], class_names)
    except PhenoScoutError as exc:
        st.error(str(exc))


main()

"""The Fields page: whole fields of view with their segmentation drawn on them, so that a user can
judge the segmentation before labeling.

Each cell of the chosen field is outlined (yellow), objects that are not cells (touching the
field's border) in grey, the chosen cell in magenta; objects given as centres (CellProfiler) get
circles. A table lists the field's cells (area, border flag, label); a click on a row, or the
"Cell" box, chooses a cell: its stored crop and its place in the field are shown beside. A
project made from crops has no fields: the page says so. The drawing is
``datasets.fields.render``'s; this page draws its results.

Widget keys: ``fields-field`` (field), ``fields-show-<i>`` (channel on/off), ``fields-outlines``
(outlines on/off), ``fields-table`` (the cells; a row click chooses one), ``fields-cell-<field>``
(the chosen cell of that field).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app_pages.server.common import run_page
from app_pages.widgets.text import code, md
from app_pages.widgets.tiles import WIDE_PAGE_CSS, png
from datasets.fields.lookup import field_cells, has_fields
from datasets.fields.render import FieldView, cell_in_field, render_field
from datasets.fields.store import FIELDS_FILE, read_fields
from datasets.render import composite, upscale
from labeling.project import Project

NONE = ""  # the "no cell chosen" option
CROP_ZOOM = 3
_COLUMNS = {
    "cell_id": st.column_config.TextColumn("cell"),
    "touches_border": st.column_config.CheckboxColumn("border", help="touches the field's border"),
    "area": st.column_config.NumberColumn("area", help="pixels", format="%d"),
}
_CSS = WIDE_PAGE_CSS + (
    ".st-key-fields-image img, .st-key-fields-cell img {image-rendering: pixelated;}"
)


def render_fields_page(project: Project) -> None:
    """Draw the whole Fields page for ``project``."""
    st.header("Fields")
    if not has_fields(project.path):
        st.info("This project was made from crops, not from whole fields of view, so there are "
                "no fields to show. To see cells in their fields, create a project from fields "
                "on the Project page (or `phenoscout init PROJECT --fields DIR`).")  # fmt: skip
        return
    stamp = _stamp(project)
    fields = _fields(str(project.path), stamp)
    key = st.selectbox("Field", fields["key"].tolist(), key="fields-field",
                       format_func=lambda k: _field_name(fields, k))  # fmt: skip
    row = fields[fields["key"] == key].iloc[0]
    visible, outlines = _controls(project)
    _counts(row)
    cells = _cells(str(project.path), key, stamp)
    labels = project.store.current_labels(include_pseudo=True)
    cells["label"] = [labels.get(c, "") for c in cells["cell_id"]]
    left, right = st.columns([3, 2], gap="medium")
    with right:
        chosen = _cell_choice(key, cells)
    with left, st.container(key="fields-image"):
        highlight = int(cells.loc[cells["cell_id"] == chosen, "object"].iloc[0]) if chosen else None
        view = FieldView(visible=visible, outlines=outlines, highlight=highlight)
        image = _field_png(str(project.path), key, tuple(project.channel_colours), view, stamp)
        st.image(image, width="stretch", output_format="PNG")
        st.caption(_legend(row))
    with right:
        if chosen:
            _chosen_cell(project, cells, chosen, visible, stamp)
    st.html(f"<style>{_CSS}</style>")


def _stamp(project: Project) -> float:
    """Changes when fields are added (the caches below are keyed on it)."""
    return (Path(project.path) / FIELDS_FILE).stat().st_mtime


@st.cache_data(show_spinner=False, max_entries=8)
def _fields(path: str, stamp: float) -> pd.DataFrame:
    return read_fields(Path(path))


@st.cache_data(show_spinner=False, max_entries=32)
def _cells(path: str, key: str, stamp: float) -> pd.DataFrame:
    return field_cells(Path(path), key, ["area", "touches_border"])


@st.cache_data(show_spinner="Drawing the field…", max_entries=32)
def _field_png(
    path: str, key: str, colours: tuple[str, ...], view: FieldView, stamp: float
) -> bytes:
    return png(render_field(Path(path), key, colours, view))


def _field_name(fields: pd.DataFrame, key: str) -> str:
    """``P1 · B02 · site 1 (44 cells)``; the key when the field has no plate/well/site."""
    row = fields[fields["key"] == key].iloc[0]
    parts = [str(row[c]) for c in ("plate", "well") if c in row.index and row[c]]
    if "site" in row.index and row["site"]:
        parts.append(f"site {row['site']}")
    name = " · ".join(parts) if parts else key
    return f"{name} ({row['n_kept']} cells)"


def _controls(project: Project) -> tuple[tuple[bool, ...], bool]:
    """Channel on/off toggles and the outlines toggle, in one row."""
    with st.container(horizontal=True, key="fields-controls"):
        visible = tuple(
            st.toggle(md(name), value=True, key=f"fields-show-{i}")
            for i, name in enumerate(project.channel_names)
        )
        outlines = st.toggle("Outlines", value=True, key="fields-outlines",
                             help="Outline every object of the field.")  # fmt: skip
    return visible, outlines


def _counts(row: pd.Series) -> None:
    with st.container(horizontal=True, key="fields-counts"):
        st.metric("Objects", int(row["n_objects"]))
        st.metric("Cells", int(row["n_kept"]))
        st.metric("Left out at the border", int(row["n_border"]))
        st.metric("Size", f"{row['width']}×{row['height']}")


def _legend(row: pd.Series) -> str:
    if row["mask_file"]:
        source = f"objects from the mask {code(Path(row['mask_file']).name)}"
    elif row["mask"]:
        source = "objects segmented at ingest"
    else:
        source = "objects given as centres (circles)"
    return (f"{md(row['key'])}: {source}. Yellow: cells; grey: objects touching the border (not "
            "cells); magenta: the chosen cell.")  # fmt: skip


def _cell_choice(key: str, cells: pd.DataFrame) -> str:
    """The field's cells as a table (a row click chooses one) and a box to choose one by name;
    the chosen cell id, or NONE."""
    box = f"fields-cell-{key}"
    ids = cells["cell_id"].tolist()
    st.markdown(f"**{len(cells)} cells** in this field")
    shown = cells[["cell_id", "object", "area", "touches_border", "label"]]
    st.dataframe(shown, hide_index=True, height=260, key="fields-table",
                 on_select=functools.partial(_row_clicked, ids, box),
                 selection_mode="single-row", column_config=_COLUMNS)  # fmt: skip
    names = dict(zip(ids, cells["object"].tolist()))
    return st.selectbox(
        "Cell", [NONE, *ids], key=box,
        format_func=lambda c: f"object {names[c]} ({c})" if c else "(none)",
    )  # fmt: skip


def _row_clicked(ids: list[str], box: str) -> None:
    rows = st.session_state["fields-table"].selection.rows
    if rows and rows[0] < len(ids):
        st.session_state[box] = ids[rows[0]]


def _chosen_cell(
    project: Project, cells: pd.DataFrame, cell_id: str, visible: tuple[bool, ...], stamp: float
) -> None:
    """The chosen cell: its stored crop and the window of its field round it."""
    row = cells[cells["cell_id"] == cell_id].iloc[0]
    crop = project.pixels.read([cell_id])
    tile = composite(crop, project.channel_colours, visible=visible)[0]
    with st.container(key="fields-cell"):
        crop_col, field_col = st.columns(2)
        crop_col.image(png(upscale(tile, CROP_ZOOM)), caption="stored crop", width="stretch",
                       output_format="PNG")  # fmt: skip
        in_field = _in_field_png(str(project.path), cell_id, tuple(project.channel_colours),
                                 visible, stamp)  # fmt: skip
        field_col.image(in_field, caption="in its field", width="stretch", output_format="PNG")
    label = row["label"] or "not labeled"
    border = ", touches the border" if row["touches_border"] else ""
    st.caption(f"{code(cell_id)}: object {row['object']}, area {_area(row['area'])} px{border}; "
               f"label: **{md(label)}**")  # fmt: skip


@st.cache_data(show_spinner=False, max_entries=64)
def _in_field_png(
    path: str, cell_id: str, colours: tuple[str, ...], visible: tuple[bool, ...], stamp: float
) -> bytes:
    return png(upscale(cell_in_field(Path(path), cell_id, colours=colours, visible=visible), 2))


def _area(value: Any) -> str:
    return "?" if pd.isna(value) else str(int(value))


if __name__ == "__main__":  # run by Streamlit as a page of app.py
    run_page(render_fields_page)

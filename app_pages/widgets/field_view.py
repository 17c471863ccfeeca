"""A cell in its field: the "In its field" expander that the Label and Review pages put under a
cell. Opened, it shows the window of the cell's field round the cell, the cell outlined in
magenta and its neighbours in yellow (a circle at its centre when the objects were given as
centres). The field is read only while the expander is open (a lazy expander), and each view is
cached, so a closed expander costs nothing on a rerun. Projects made from crops show nothing.

Widget keys: ``in-field-<cell_id>`` by default (the expander's open state), or the ``key``
given: one key for every cell keeps the expander open while the focus moves from cell to cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from app_pages.widgets.text import md
from app_pages.widgets.tiles import png
from datasets.fields.lookup import cell_row, has_fields
from datasets.fields.render import CONTEXT_PX, cell_in_field
from datasets.fields.store import FIELDS_FILE
from datasets.render import upscale
from labeling.errors import PhenoScoutError
from labeling.project import Project

ZOOM = 2  # the window (a cell and CONTEXT_PX round it) enlarged this much


def show_cell_in_field(
    project: Project,
    cell_id: str,
    *,
    key: str | None = None,
    visible: Sequence[bool] | None = None,
    context_px: int = CONTEXT_PX,
) -> None:
    """An "In its field" expander showing ``cell_id`` in its field (nothing for a project made
    from crops). A core error shows as st.error inside the expander.

    Args:
        project: the open project.
        cell_id: the cell to show.
        key: the expander's widget key (default ``in-field-<cell_id>``).
        visible: per-channel on/off (the tiles' setting); all on when None.
        context_px: field pixels shown round the cell's bounding box.
    """
    if not has_fields(project.path):
        return
    box = st.expander("In its field", key=key or f"in-field-{cell_id}", on_change="rerun",
                      icon=":material/center_focus_weak:")  # fmt: skip
    if not box.open:
        return
    with box:
        try:
            image, caption = _view(str(project.path), cell_id, tuple(project.channel_colours),
                                   None if visible is None else tuple(visible), context_px,
                                   (Path(project.path) / FIELDS_FILE).stat().st_mtime)  # fmt: skip
        except PhenoScoutError as exc:
            st.error(md(exc))
            return
        st.image(image, width="stretch", output_format="PNG")
        st.caption(caption)


@st.cache_data(show_spinner=False, max_entries=128)
def _view(
    path: str,
    cell_id: str,
    colours: tuple[str, ...],
    visible: tuple[bool, ...] | None,
    context_px: int,
    stamp: float,
) -> tuple[bytes, str]:
    """(PNG of the cell in its field, caption); ``stamp`` changes when fields are added."""
    row = cell_row(Path(path), cell_id)
    rgb = cell_in_field(Path(path), row, context_px=context_px, colours=colours, visible=visible)
    return png(upscale(rgb, ZOOM)), f"field {row['field']}, object {row['object']}"

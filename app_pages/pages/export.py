"""The Export page: downloads of labels, the cell table, predictions for every cell and per-well
predicted class counts, as CSV or Parquet; the labeled crops as a ZIP and the newest model
checkpoint. The same as ``phenoscout export PROJECT --what
labels|cells|predictions|wells|crops|model``; built by ``labeling.io.export`` and
``labeling.io.bundles``, cached per label state."""

from __future__ import annotations

import streamlit as st

from app_pages.server.common import cached, labels_key, run_page
from app_pages.widgets.text import md
from labeling.errors import DataError, NotTrainedError, ProjectError
from labeling.io.bundles import model_checkpoint
from labeling.project import Project

FORMATS = {"CSV": (".csv", "text/csv"), "Parquet": (".parquet", "application/octet-stream")}
_KINDS = (
    ("labels", "Labels", "one row per labeled cell: label, annotator, time, source, round, path "
     "and metadata"),
    ("cells", "Cell table", "one row per cell: path and metadata"),
    ("predictions", "Predictions", "every cell with the head's predicted class, its confidence "
     "and the probability of each class"),
    ("wells", "Per-well counts", "predicted class counts and fractions per plate and well, with "
     "a z-score against negative-control wells"),
)  # fmt: skip


def render_export_page(project: Project) -> None:
    """Draw the whole Export page for ``project``."""
    st.header("Export")
    fmt = st.radio("Format", list(FORMATS), horizontal=True, key="export-format")
    suffix, mime = FORMATS[fmt]
    key = labels_key(project)
    path = str(project.path)
    for what, title, about in _KINDS:
        with st.container(border=True, key=f"export-{what}"):
            st.markdown(f"**{title}**: {about}")
            try:
                frame = cached("labeling.io.export.export_frame", path, key, what)
            except (NotTrainedError, DataError) as exc:
                st.info(md(exc))
                continue
            data = cached("app_pages.pages.export.frame_bytes", path, key, what, suffix)
            st.download_button(
                f"Download {title.lower()} ({len(frame)} rows, {fmt})",
                data=data,
                file_name=f"{project.config.name}-{what}{suffix}",
                mime=mime,
                key=f"dl-{what}",
                on_click="ignore",
                icon=":material/download:",
            )
            if len(frame):
                st.dataframe(frame.head(5), hide_index=True, key=f"preview-{what}")
    _files(project, key)
    st.caption(
        f"From the command line: `phenoscout export {project.path} --what labels --out "
        "labels.csv` (labels, cells, predictions or wells; .csv or .parquet; crops to a .zip; "
        "model to a .pt)."
    )


def _files(project: Project, key: tuple) -> None:
    """Downloads of the labeled crops (a ZIP, one folder per class) and the model checkpoint."""
    name, path = project.config.name, str(project.path)
    with st.container(border=True, key="export-crops"):
        st.markdown(
            "**Crops**: a ZIP of the labeled cells' crops as stored (the source bit depth), one "
            "folder per class: a TIFF per cell (an ImageJ hyperstack with the channel names) "
            "and index.csv (class, file, label and metadata)"
        )
        try:
            data = cached("labeling.io.bundles.crops_zip", path, key)
        except DataError as exc:
            st.info(md(exc))
        else:
            st.download_button("Download crops (ZIP)", data=data, file_name=f"{name}-crops.zip",
                               mime="application/zip", key="dl-crops", on_click="ignore",
                               icon=":material/download:")  # fmt: skip
    with st.container(border=True, key="export-model"):
        st.markdown("**Model**: the newest trained model version's checkpoint")
        try:
            version, data = model_checkpoint(project)
        except ProjectError as exc:
            st.info(md(exc))
        else:
            st.download_button(f"Download model v{version:04d} (checkpoint.pt)", data=data,
                               file_name=f"{name}-v{version:04d}.pt",
                               mime="application/octet-stream", key="dl-model",
                               on_click="ignore", icon=":material/download:")  # fmt: skip


def frame_bytes(project: Project, what: str, suffix: str) -> bytes:
    """The export ``what`` as the bytes of a ``suffix`` file (called through ``cached``)."""
    from labeling.io.export import export_frame, export_meta, table_bytes

    return table_bytes(export_frame(project, what), suffix, export_meta(project, what))


if __name__ == "__main__":  # run by Streamlit as a page of app.py
    run_page(render_export_page)

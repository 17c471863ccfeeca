"""The Export page: downloads of labels, the cell table, predictions for every cell and per-well
predicted class counts, as CSV or Parquet; the labeled crops as a ZIP, the whole screen as
AnnData (.h5ad) and the newest model checkpoint. The same as ``phenoscout export PROJECT --what
labels|cells|predictions|wells|crops|anndata|model``; built by ``labeling.io.export``,
``labeling.io.bundles`` and ``labeling.io.anndata_export``, cached per label state."""

from __future__ import annotations

import streamlit as st

from app_pages.server.common import cached, labels_key, run_page
from app_pages.widgets.text import md
from app_pages.widgets.tiles import WIDE_PAGE_CSS
from labeling.errors import DataError, NotTrainedError, PhenoScoutError, ProjectError
from labeling.io.bundles import model_checkpoint
from labeling.project import Project

#: AnnData files up to this size are offered as a download too (the browser holds them in memory);
#: a bigger one is written to PROJECT/exports/ only.
ANNDATA_DOWNLOAD_BYTES = 512 * 2**20
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
    st.html(f"<style>{WIDE_PAGE_CSS}</style>")  # the tables use the width, as on Discover
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
        "anndata to a .h5ad; model to a .pt)."
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
    _anndata(project, key)
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


def _feature_choices(project: Project) -> list[str]:
    """The AnnData feature sets this project has: morphology; the embedding once a model
    version is published; CellProfiler columns when the cell table holds them."""
    from labeling.errors import ConfigError
    from labeling.feature_sets import cellprofiler_columns
    from labeling.training import latest_version

    choices = ["morphology"]
    if latest_version(project.path) is not None:
        choices += ["embedding", "morphology+embedding"]
    try:
        cellprofiler_columns(project)
        choices.append("cellprofiler")
    except ConfigError:
        pass
    return choices


def _anndata(project: Project, key: tuple) -> None:
    """Write the screen as one .h5ad to PROJECT/exports/ on request, then offer it."""
    from labeling.io.anndata_export import export_anndata

    with st.container(border=True, key="export-anndata"):
        st.markdown(
            "**AnnData**: every cell in one .h5ad for scanpy: X the chosen features (raw "
            "values), obs the cell table with each cell's label and the model's prediction, "
            "obsm the backbone embedding and the class probabilities"
        )
        choices = _feature_choices(project)
        features = st.selectbox("Features in X", choices, key="anndata-features")
        out = project.path / "exports" / f"{project.config.name}-{features}.h5ad"
        built = st.session_state.get("anndata-built")
        if st.button(f"Write exports/{out.name}", key="anndata-write", icon=":material/save:"):
            try:
                with st.spinner(f"Writing {project.store.n_cells():,} cells..."):
                    export_anndata(project, out, features)
            except PhenoScoutError as exc:
                st.info(md(exc))
                return
            built = st.session_state["anndata-built"] = (str(out), key)
        if built != (str(out), key) or not out.is_file():
            return
        size = out.stat().st_size
        st.caption(md(f"Written: {out} ({size / 2**20:.1f} MB), for the labels as they were."))
        if size <= ANNDATA_DOWNLOAD_BYTES:
            st.download_button("Download AnnData (.h5ad)", data=out.read_bytes(),
                               file_name=out.name, mime="application/x-hdf5",
                               key="dl-anndata", on_click="ignore",
                               icon=":material/download:")  # fmt: skip


def frame_bytes(project: Project, what: str, suffix: str) -> bytes:
    """The export ``what`` as the bytes of a ``suffix`` file (called through ``cached``)."""
    from labeling.io.export import export_frame, export_meta, table_bytes

    return table_bytes(export_frame(project, what), suffix, export_meta(project, what))


if __name__ == "__main__":  # run by Streamlit as a page of app.py
    run_page(render_export_page)

"""The Project page's form to create a project from whole fields of view.

The user types the folder of fields, the file name pattern that groups one file per channel
(empty: one multi-channel file per field), an optional folder of label masks, and picks the
segmentation (classical, U-Net, or the given masks only). The fields found are counted at once
and what was skipped is listed; one field is previewed with the outlines of the objects ingest
would find in it (segmented on the fly: classical also when U-Net is chosen, since the U-Net is
trained only when the project is made) BEFORE anything is written. "Create project" then runs
``labeling.project.create_project_from_fields`` as a background job (``app_pages.server.jobs``; the
Project page's job panel follows it and opens the project when it is done).

Widget keys: ``pf-folder``, ``pf-pattern``, ``pf-masks``, ``pf-segment``, ``pf-nuclear``,
``pf-channels``, ``pf-keep-border``, ``pf-preview`` (the field previewed), ``pf-new-path``,
``pf-create``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from app_pages.server import jobs
from app_pages.widgets.text import code, md
from app_pages.widgets.tiles import png
from datasets.config import IngestConfig
from datasets.fields.demo import FILENAME_PATTERN
from datasets.fields.files import field_header, find_fields, looks_per_channel
from datasets.fields.preview import preview_field
from datasets.fields.spec import SEGMENT_METHODS, FieldSpec
from datasets.segmentation.classical import SegmentConfig
from labeling.errors import PhenoScoutError, ProjectError
from labeling.jobs import Job
from labeling.project import FieldSource, IngestRun, create_project_from_fields
from labeling.workspace import (
    check_new_project_folder,
    resolve_user_path,
    suggested_project_folder,
)

SEGMENT_NAMES = {
    "classical": "Classical (nuclei: threshold + watershed)",
    "unet": "U-Net (trained on your masks, else on demo fields)",
    "given": "Given masks only",
}
N_SKIPPED_SHOWN = 3  # skipped files named in the one-line warning (all in the list below it)

Found = tuple[list[FieldSpec], list[tuple[str, str]]]


def render_fields_form(root: Path) -> None:
    """The "create a project from fields" form; typed folders must lie under ``root``. Bad
    input shows as a one-line st.error (or st.warning for what is skipped) in the form."""
    with st.container(border=True, key="pf-box"):
        st.markdown("**Create a project from whole fields of view** (each object becomes a cell)")
        try:
            _form(root)
        except PhenoScoutError as exc:
            st.error(md(exc))


def _form(root: Path) -> None:
    folder = st.text_input("Folder of fields", key="pf-folder", placeholder="screen1/images")
    pattern = st.text_input(
        "File name pattern (one file per channel)", key="pf-pattern",
        placeholder=FILENAME_PATTERN,
        help=f"e.g. {FILENAME_PATTERN}: {{channel}} groups the files of one field, the other "
        "names (plate, well, site, ...) become metadata of the cells. Without {channel} (e.g. "
        "{plate}_{well}_s{site}.tif) each file holds all the channels of one field and the "
        "pattern only names its metadata. Leave empty for neither.",
    )  # fmt: skip
    masks = st.text_input("Masks folder (optional: integer label images, used as given)",
                          key="pf-masks", placeholder="screen1/masks")  # fmt: skip
    if not folder.strip():
        st.caption("Type the folder of your fields (TIFF/OME-TIFF/PNG) to see what it holds.")
        return
    masks_dir = str(resolve_user_path(masks, root)) if masks.strip() else ""
    fields, skipped = _find(str(resolve_user_path(folder, root)), pattern.strip(), masks_dir)
    fields = checked_fields(fields, root)  # each file, before any is read: one may be a link out
    n_channels, summary = _summary(fields)
    st.success(summary)
    if "{channel}" not in pattern and n_channels == 1:  # no pattern, or one of metadata only
        found = looks_per_channel([Path(f.channel_files[0]) for f in fields], "name")
        if found is not None:
            st.warning(
                f"These {len(fields)} files look like one file per channel ({found.n_channels} "
                f"channels of {found.n_keys} fields): type a pattern, e.g. "
                f"{code(found.pattern)} or {code(FILENAME_PATTERN)}, so that each field gets "
                "all its channels (without one, each file is segmented as a field of its own)."
            )
    _skipped(skipped)
    settings, preview = st.columns(2, gap="medium")
    with settings:
        segment = st.radio(
            "Segmentation of fields without a mask", SEGMENT_METHODS, key="pf-segment",
            format_func=SEGMENT_NAMES.get,
        )  # fmt: skip
        names = _channel_names(n_channels)
        nuclear = 0
        if segment != "given":
            nuclear = st.selectbox(
                "Nuclear channel (segmented)", range(n_channels), key="pf-nuclear",
                format_func=lambda c: names[c] if names else f"ch{c}",
            )  # fmt: skip
        keep_border = st.checkbox("Keep objects touching a field's border", key="pf-keep-border")
        ready = _check_segment(fields, segment)
    with preview:
        _preview(fields, segment, SegmentConfig(channel=nuclear), keep_border)
    default = str(suggested_project_folder(root, Path(folder.strip())))
    target = st.text_input("New project folder", value=default, key="pf-new-path")
    if st.button("Create project", key="pf-create", type="primary", disabled=not ready):
        path = check_new_project_folder(resolve_user_path(target, root))
        work = _work(path, fields, names, (segment, nuclear, keep_border), len(skipped))
        jobs.start(f"Creating project {path.name} from fields", work, key=str(path),
                   open_path=str(path), auto_open=True)  # fmt: skip
        st.rerun()  # the Project page redraws with the job's progress at the top


@st.cache_data(show_spinner="Looking for fields…", ttl=30, max_entries=8)
def _find(folder: str, pattern: str, masks: str) -> Found:
    """:func:`find_fields` (cached a little while: the form reruns on every keystroke)."""
    return find_fields(Path(folder), pattern or None, Path(masks) if masks else None)


def _summary(fields: list[FieldSpec]) -> tuple[int, str]:
    """(channels, one line on the fields found)."""
    header = field_header(fields[0])
    n_masks = sum(f.mask_file is not None for f in fields)
    masks = f"{n_masks} with a mask" if n_masks else "none with a mask"
    size = f"{header.height}×{header.width} px, {header.dtype}"
    channels = f"{header.channels} channel{'s' if header.channels != 1 else ''}"
    text = f"{len(fields)} fields found ({masks}): {channels}, {size}"
    return header.channels, text


def _skipped(skipped: list[tuple[str, str]]) -> None:
    """One warning line naming the first few skipped files or fields; all of them below."""
    if not skipped:
        return
    shown = "; ".join(f"{md(name)}: {md(why)}" for name, why in skipped[:N_SKIPPED_SHOWN])
    more = f" (and {len(skipped) - N_SKIPPED_SHOWN} more)" if len(skipped) > N_SKIPPED_SHOWN else ""
    st.warning(f"{len(skipped)} skipped: {shown}{more}")
    if len(skipped) > N_SKIPPED_SHOWN:
        with st.expander(f"All {len(skipped)} skipped"):
            st.markdown("\n".join(f"- {code(name)}: {md(why)}" for name, why in skipped))


def _channel_names(n_channels: int) -> list[str]:
    """Names typed for the channels (comma-separated); [] when none were typed.

    Raises:
        ProjectError: a number of names other than the fields' channels.
    """
    text = st.text_input(f"Channel names ({n_channels}, comma-separated, optional)",
                         key="pf-channels", placeholder="DNA, Tubulin")  # fmt: skip
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names and len(names) != n_channels:
        raise ProjectError(f"{len(names)} channel names for {n_channels} channels; give one "
                           "name per channel, or none")  # fmt: skip
    return names


def _check_segment(fields: list[FieldSpec], segment: str) -> bool:
    """Say which fields use their mask and which are segmented; False when nothing would be
    ingested (given masks only, and no field has one)."""
    n_masks = sum(f.mask_file is not None for f in fields)
    if segment != "given":
        if n_masks == len(fields):
            st.caption(f"All {n_masks} fields use their mask; none is segmented.")
        elif n_masks:
            st.caption(f"{n_masks} fields use their mask; the other {len(fields) - n_masks} "
                       f"are segmented ({segment}).")  # fmt: skip
        return True
    if not n_masks:
        st.error("No field has a mask, so with given masks only nothing would be ingested; "
                 "type the masks folder or choose a segmentation.")  # fmt: skip
        return False
    if n_masks < len(fields):
        st.warning(f"{len(fields) - n_masks} of {len(fields)} fields have no mask: with given "
                   "masks only they will be skipped.")  # fmt: skip
    return True


def _preview(
    fields: list[FieldSpec], segment: str, config: SegmentConfig, keep_border: bool
) -> None:
    """One field (chosen in ``pf-preview``) with the outlines of the objects ingest would find."""
    keys = [f.key for f in fields]
    with st.container(border=True, key="pf-preview-box"):
        key = st.selectbox("Preview of a field, its objects outlined", keys, key="pf-preview")
        spec = fields[keys.index(key)]
        mask = str(spec.mask_file) if spec.mask_file is not None else ""
        files = tuple(str(p) for p in spec.channel_files)
        image, n_objects, n_border, note = _preview_png(key, files, mask, segment, config,
                                                        keep_border)  # fmt: skip
        kept = "kept" if keep_border else "left out, grey"
        border = f"; {n_border} touch the border ({kept})" if n_border else ""
        st.image(image, width="stretch", output_format="PNG")
        st.caption(f"{n_objects} objects: {note}{border}")


@st.cache_data(show_spinner="Segmenting the field…", max_entries=16)
def _preview_png(
    key: str,
    files: tuple[str, ...],
    mask: str,
    segment: str,
    config: SegmentConfig,
    keep_border: bool,
) -> tuple[bytes, int, int, str]:
    spec = FieldSpec(key, tuple(Path(p) for p in files), {}, Path(mask) if mask else None)
    shown = preview_field(spec, segment, config, keep_border=keep_border)
    return png(shown.image), shown.n_objects, shown.n_border, shown.note


def checked_fields(fields: list[FieldSpec], root: Path) -> list[FieldSpec]:
    """``fields`` when every image and mask file resolves under ``root`` (a file in a checked
    folder may be a link out of it).

    Raises:
        ConfigError: the first file that leads outside ``root``.
    """
    for field in fields:
        for file in (*field.channel_files, *([field.mask_file] if field.mask_file else [])):
            resolve_user_path(str(file), root)
    return fields


def _work(
    path: Path,
    fields: list[FieldSpec],
    names: list[str],
    how: tuple[str, int, bool],
    n_skipped: int,
) -> Callable[[Job], str]:
    """The job that makes the project at ``path`` from ``fields``; ``how`` is (segmentation,
    nuclear channel, keep border objects)."""
    segment, nuclear, keep_border = how

    def work(job: Job) -> str:
        source = FieldSource(fields, segment, SegmentConfig(channel=nuclear), keep_border)
        run = IngestRun(
            progress=job.progress("Reading fields"),
            feature_progress=job.progress("Computing features"),
            train_progress=job.progress("Training the U-Net"),
        )
        project, report = create_project_from_fields(
            path, source, IngestConfig(channel_names=tuple(names)), run=run
        )
        project.close()
        skipped = n_skipped + len(report.skipped)
        return (f"{report.n_cells} cells from {len(fields)} fields in {path}"
                + (f"; {skipped} files or fields skipped" if skipped else ""))  # fmt: skip

    return work

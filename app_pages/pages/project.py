"""The Project page: open a project, create one from a folder of crops, add a plate to the open
one, or open the demo with one click.

Creating a project (ingest + features), adding a plate and making the demo run as background
jobs (``app_pages.server.jobs``): a progress bar at the top of the page follows them and the
user may go on working meanwhile. Every typed folder is resolved under the allowed root
(``common.user_path``). A new way to make a project is one more section that builds a
``work(job)`` function and hands it to :func:`_start_creation`.

Widget keys: ``proj-open-path``/``proj-open``; ``proj-crops`` (folder), ``proj-subfolder``,
``proj-new-path``, ``proj-channels``, ``proj-colour-<i>``, ``proj-labels-csv``,
``proj-metadata-csv``, ``proj-create-classes``, ``proj-create``; ``proj-classes`` /
``proj-classes-add`` (classes of the open project); ``proj-add-crops``/``proj-add``; ``proj-demo``;
``job-open-<id>``/``job-dismiss-<id>`` (a finished job).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from app_pages.pages.project_fields import checked_fields, render_fields_form
from app_pages.server import jobs
from app_pages.server.common import (
    PROJECT_PATH,
    allowed_root,
    error_text,
    open_cached,
    project_arg,
    user_path,
)
from app_pages.widgets.text import code, md
from datasets.config import CropSource, IngestConfig
from datasets.crops.demo import CHANNELS as DEMO_CHANNELS
from datasets.crops.readers import scan_folder
from datasets.fields.demo import FILENAME_PATTERN
from datasets.fields.files import find_fields
from datasets.fields.lookup import has_fields
from datasets.fields.spec import SEGMENT_METHODS
from labeling.errors import PhenoScoutError, ProjectError
from labeling.jobs import Job
from labeling.project import (
    FieldSource,
    IngestRun,
    Project,
    add_crops,
    add_fields,
    create_project,
)
from labeling.store.names import class_list
from labeling.workspace import (
    DEMO_DIR,
    check_new_project_folder,
    demo_project,
    set_channels,
    subfolders,
    suggested_project_folder,
)

WHOLE = "(the whole folder)"
_DEFAULT_COLOURS = ("#3b82f6", "#22c55e", "#ef4444", "#eab308", "#d946ef")
ADD_KINDS = ("a folder of crops", "whole fields of view")
DEMO_CLASSES = ("interphase", "mitotic")  # the demo's common classes; the rare ones are found


def render_project_page(project: Project | None) -> None:
    """Draw the Project page; ``project`` is the open one (None on the start screen)."""
    if project is not None:
        st.header("Project")
        st.markdown(f"Open: **{md(project.config.name)}** ({code(project.path)}), "
                    f"{project.store.n_cells()} cells")  # fmt: skip
    _guarded(jobs.jobs_panel, lambda path: _open(user_path(path)))
    if project is not None:
        _guarded(_classes_section, project)
        _guarded(_open_section)
    _guarded(_create_section)
    render_fields_form(allowed_root())
    if project is not None:
        _guarded(_add_section, project)
    _guarded(_demo_section)
    st.caption(f"Folders are typed relative to, and must lie under, {code(allowed_root())}.")


def _guarded(section: Callable[..., None], *args: object) -> None:
    """Draw ``section``; a core error shows as st.error in its place (the others still draw)."""
    try:
        section(*args)
    except PhenoScoutError as exc:
        st.error(md(exc))


def add_classes(project: Project, names: list[str]) -> list[str]:
    """Add ``names`` that the project does not have yet; the added ones with their keys."""
    have = {c.name.casefold() for c in project.store.classes(include_pseudo=True)}
    added = []
    for name in names:
        if name.casefold() not in have:
            info = project.store.add_class(name)
            added.append(f"{info.name} ({info.key or 'no key'})")
    return added


def _classes_section(project: Project) -> None:
    with st.container(border=True, key="proj-classes-box"):
        real = [c for c in project.store.classes(include_pseudo=False)]
        st.markdown("**Phenotype classes** (add them first: each gets a key, 1-9, 0, then letters)")
        st.caption(
            ", ".join(f"{md(c.name)} ({c.key or '-'})" for c in real) if real else "None yet."
        )
        with st.form("proj-classes-form", border=False):
            st.text_input(
                "Add classes (comma-separated)",
                key="proj-classes",
                placeholder="interphase, mitotic, apoptotic",
            )
            st.form_submit_button(
                "Add classes", key="proj-classes-add", on_click=_add_typed, args=(project,)
            )
        said = st.session_state.pop(CLASSES_SAID, None)
        if said:
            kind, text = said
            (st.success if kind == "ok" else st.error)(text)


#: Session key of the add-classes form's answer, shown on the run after the button's callback.
CLASSES_SAID = "proj-classes-said"


def _add_typed(project: Project) -> None:
    """The add-classes button's callback: add what was typed and empty the box; on an error,
    say why and keep what was typed, so that it can be corrected."""
    typed = st.session_state.get("proj-classes", "")
    if not typed.strip():
        st.session_state[CLASSES_SAID] = ("error", "Type one or more class names first.")
        return
    try:
        names = class_list(typed)
        have = {c.name.casefold(): c.name for c in project.store.classes(include_pseudo=True)}
        there = [f"{n!r} is the class {have[n.casefold()]!r}" if have[n.casefold()] != n
                 else f"{n!r} is a class" for n in names if n.casefold() in have]  # fmt: skip
        added = add_classes(project, names)
    except PhenoScoutError as exc:
        st.session_state[CLASSES_SAID] = ("error", md(error_text(exc)))
        return
    already = f"already there: {'; '.join(there)}" if there else ""
    if not added:  # the box keeps what was typed, to be corrected
        st.session_state[CLASSES_SAID] = ("error", md(f"No new class ({already})."))
        return
    st.session_state["proj-classes"] = ""
    st.session_state[CLASSES_SAID] = (
        "ok",
        md("Added: " + ", ".join(added) + (f" ({already})" if already else "")),
    )


def _open_section() -> None:
    with st.container(border=True, key="proj-open-box"):
        st.markdown("**Open another project**")
        typed = st.text_input("Project folder", key="proj-open-path")
        if st.button("Open", key="proj-open"):
            if not typed.strip():
                raise ProjectError("type the folder of a PhenoScout project first")
            _open(user_path(typed))


def _create_section() -> None:
    with st.container(border=True, key="proj-create-box"):
        st.markdown("**Create a project from a folder of crops**")
        base = st.text_input("Folder of crops", key="proj-crops", placeholder="screen1")
        if not base.strip():
            return
        base_path = user_path(base)
        sub = st.selectbox("Crops in", [WHOLE, *subfolders(base_path)], key="proj-subfolder")
        crops = base_path if sub == WHOLE else user_path(base_path / sub)  # a link may leave
        st.caption(_crops_summary(str(crops)))
        default = str(suggested_project_folder(allowed_root(), crops))
        target = st.text_input("New project folder", value=default, key="proj-new-path")
        names, colours = _channel_fields()
        classes = st.text_input(
            "Phenotype classes (comma-separated; you can add more later)",
            key="proj-create-classes",
            placeholder="interphase, mitotic, apoptotic",
        )
        labels_csv = st.text_input("labels.csv (optional: ground truth)", key="proj-labels-csv")
        meta_csv = st.text_input("metadata.csv (optional; default: the folder's own)",
                                 key="proj-metadata-csv")  # fmt: skip
        if st.button("Create project", key="proj-create", type="primary"):
            path = check_new_project_folder(user_path(target))
            work = _create_work(path, crops, names, colours,
                                (_optional(labels_csv), _optional(meta_csv)),
                                class_list(classes))  # fmt: skip
            _start_creation(f"Creating project {path.name}", path, work)


def _channel_fields() -> tuple[list[str], list[str]]:
    """Channel names (typed, comma-separated) and a colour picker per name."""
    names_text = st.text_input("Channel names (comma-separated, optional)",
                               key="proj-channels", placeholder="DNA, Tubulin")  # fmt: skip
    names = [n.strip() for n in names_text.split(",") if n.strip()]
    colours = [
        st.color_picker(f"Colour of {md(n)}", _DEFAULT_COLOURS[i % 5], key=f"proj-colour-{i}")
        for i, n in enumerate(names)
    ]
    return names, colours


def _create_work(
    path: Path,
    crops: Path,
    names: list[str],
    colours: list[str],
    csvs: tuple[Path | None, Path | None],
    classes: tuple[str, ...] | list[str] = (),
) -> Callable[[Job], str]:
    """The job that makes the project at ``path`` from ``crops`` (ingest, then features)."""

    def work(job: Job) -> str:
        # checked again when used: a folder may have become a link since the click
        labels_csv, metadata_csv = (None if p is None else user_path(p) for p in csvs)
        target = user_path(path)
        source = CropSource(_checked_crops(crops), labels_csv, metadata_csv)
        run = IngestRun(progress=job.progress("Reading crops"),
                        feature_progress=job.progress("Computing features"))  # fmt: skip
        ingest = IngestConfig(channel_names=tuple(names))
        project, report = create_project(target, source, ingest, run=run)
        set_channels(project, names, colours)
        add_classes(project, list(classes))
        project.close()
        return f"{report.n_cells} cells in {path}"

    return work


def _start_creation(title: str, path: Path, work: Callable[[Job], Any]) -> None:
    """Run ``work`` (which makes the project at ``path``) in the background; the project opens
    when it is done while this page is on screen."""
    jobs.start(title, work, key=str(path), open_path=str(path), auto_open=True)
    st.rerun()  # the page redraws with the job's progress at the top


def _add_section(project: Project) -> None:
    with st.container(border=True, key="proj-add-box"):
        st.markdown("**Add a plate** (crops or whole fields with this project's channels)")
        kind = st.radio("The new plate is", ADD_KINDS, key="proj-add-kind", horizontal=True,
                        index=int(has_fields(project.path)))  # fmt: skip
        if kind == ADD_KINDS[0]:
            _add_crops_form(project)
        else:
            _add_fields_form(project)


def _add_crops_form(project: Project) -> None:
    folder = st.text_input("Folder of crops", key="proj-add-crops")
    if st.button("Add plate", key="proj-add") and folder.strip():
        crops = user_path(folder)
        if not crops.is_dir():
            raise ProjectError(f"{crops}: no such folder; type the folder of the new plate")

        def work(job: Job) -> str:
            run = IngestRun(progress=job.progress("Reading crops"),
                            feature_progress=job.progress("Computing features"))  # fmt: skip
            report = add_crops(project, _checked_crops(crops), run=run)
            return f"Added {report.n_cells} cells from {crops}"

        jobs.start(f"Adding plate {crops.name}", work, key=str(project.path))
        st.rerun()


def _add_fields_form(project: Project) -> None:
    folder = st.text_input("Folder of fields", key="proj-add-fields")
    pattern = st.text_input("File name pattern (one file per channel; empty: one file per field)",
                            key="proj-add-pattern", placeholder=FILENAME_PATTERN)  # fmt: skip
    masks = st.text_input("Masks folder (optional)", key="proj-add-masks")
    segment = st.radio("Segmentation of fields without a mask", SEGMENT_METHODS,
                       key="proj-add-segment", horizontal=True)  # fmt: skip
    if st.button("Add fields", key="proj-add-go") and folder.strip():
        masks_dir = user_path(masks) if masks.strip() else None
        fields, skipped = find_fields(user_path(folder), pattern.strip() or None, masks_dir)
        checked_fields(fields, allowed_root())  # and again when read: a file may be a link out

        def work(job: Job) -> str:
            source = FieldSource(checked_fields(fields, allowed_root()), segment=segment)
            run = IngestRun(
                progress=job.progress("Reading fields"),
                feature_progress=job.progress("Computing features"),
                train_progress=job.progress("Training the U-Net"),
            )
            report = add_fields(project, source, run=run)
            n_skipped = len(skipped) + len(report.skipped)
            return (f"Added {report.n_cells} cells from {len(fields)} fields"
                    + (f"; {n_skipped} files or fields skipped" if n_skipped else ""))  # fmt: skip

        jobs.start(f"Adding fields from {Path(folder).name}", work, key=str(project.path))
        st.rerun()


def _demo_section() -> None:
    root = allowed_root()
    with st.container(border=True, key="proj-demo-box"):
        st.markdown("**Try it on the demo**: a synthetic screen with 7 phenotypes, 3 rare "
                    f"(made in {code(root / DEMO_DIR)} the first time)")  # fmt: skip
        if st.button("Open the demo", key="proj-demo"):
            path = user_path(root / DEMO_DIR / "project")  # the demo folder may be a link out
            if path.exists():
                _open(path)  # made before: open it now

            def work(job: Job) -> str:
                project = demo_project(root, progress=job.progress("cells"))
                set_channels(project, DEMO_CHANNELS)  # a new demo: its channels by name
                add_classes(project, list(DEMO_CLASSES))  # classes first, as scripts/demo
                project.close()
                return f"the demo project is in {path}"

            _start_creation("Preparing the demo", path, work)


def _open(path: Path) -> None:
    """Make ``path`` the open project and show its Label page."""
    open_cached(str(path))  # raises a ProjectError with the reason when it is no project
    had_project = bool(st.session_state.get(PROJECT_PATH) or project_arg())
    st.session_state[PROJECT_PATH] = str(path)
    if had_project:  # the navigation has the Label page
        st.switch_page("app_pages/pages/label.py")
    st.rerun()  # the start screen: the next run draws the navigation, Label first


@st.cache_data(show_spinner=False, ttl=30, max_entries=8)
def _crops_summary(folder: str) -> str:
    """One line on what a crops folder holds: image files (a few named), other files, and
    whether its labels.csv and metadata.csv are there (cached a little: the form reruns on
    every keystroke)."""
    from collections import Counter

    images, other = scan_folder(Path(folder))
    if not images:
        return f"No image files (TIFF, PNG, JPEG, npz) in this folder ({len(other)} other files)."
    kinds = Counter(p.suffix.lower() for p in images)
    rel = [str(p.relative_to(folder)) for p in images[:3]]
    side = [name for name in ("labels.csv", "metadata.csv") if (Path(folder) / name).is_file()]
    return (
        f"{len(images)} image files ("
        + ", ".join(f"{n} {k}" for k, n in kinds.most_common())
        + f"; e.g. {', '.join(md(r) for r in rel)})"
        + (f", {len(other)} other files left out" if other else "")
        + (f"; {' and '.join(side)} found: used" if side else "; no labels.csv or metadata.csv")
        + "."
    )


def _checked_crops(folder: Path) -> Path:
    """``folder`` when it and every image file in it resolve under the allowed root (a file
    may be a link out of it); checked when the crops are read, not only when typed."""
    folder = user_path(folder)
    for file in scan_folder(folder)[0]:
        user_path(file)
    return folder


def _optional(text: str) -> Path | None:
    return user_path(text) if text.strip() else None


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

"""The app's root holds: every path field and picker refuses a path that leads out of
``PHENOSCOUT_ROOT``, a symlink inside the root pointing out included, at the moment it is used.

The root is ``tmp_path/root``; everything it links to lies in ``tmp_path/outside`` or in the
session's demo folders. Each case types (or picks) the path by widget key and expects one
error naming the root, and no project made outside it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402

from datasets.fields.demo import FILENAME_PATTERN, generate_demo_fields  # noqa: E402
from labeling.store.labels import LabelStore  # noqa: E402

APP = "../../app.py"


@pytest.fixture(scope="module")
def outside_fields(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("outside_fields") / "fields"
    generate_demo_fields(out, n_fields=1, size=128, seed=2)
    return out


@pytest.fixture
def root(tmp_path, monkeypatch, small_demo, small_project, outside_fields) -> Path:
    """A root holding a project, a real folder of crops and links that lead out of it."""
    root = (tmp_path / "root").resolve()
    (root / "screen" / "inside").mkdir(parents=True)
    (root / "screen" / "out").symlink_to(small_demo, target_is_directory=True)
    (root / "crops_link").symlink_to(small_demo, target_is_directory=True)
    (root / "fields_link").symlink_to(outside_fields, target_is_directory=True)
    (root / "masks_link").symlink_to(outside_fields / "masks", target_is_directory=True)
    (tmp_path / "outside").mkdir()
    (root / "dir_link").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "labels.csv").symlink_to(small_demo / "labels.csv")
    (root / "metadata.csv").symlink_to(small_demo / "metadata.csv")
    (root / "project_link").symlink_to(small_project, target_is_directory=True)
    shutil.copytree(small_project, root / "proj")
    # a real folder whose files are links out (the folder itself passes the check)
    for src in sorted(small_demo.rglob("*.npz"))[:5]:
        (root / "file_links" / src.parent.name).mkdir(parents=True, exist_ok=True)
        (root / "file_links" / src.parent.name / src.name).symlink_to(src)
    for src in sorted(outside_fields.glob("*.tif")):
        (root / "field_file_links").mkdir(exist_ok=True)
        (root / "field_file_links" / src.name).symlink_to(src)
    monkeypatch.setenv("PHENOSCOUT_ROOT", str(root))
    monkeypatch.chdir(root)
    return root


def _app(project: Path | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if project is not None:
        at.session_state["project_path"] = str(project)
        at.run()
        at.switch_page("app_pages/pages/project.py")
    at.run()
    assert not at.exception, at.exception
    return at


def _refused(at: AppTest, root: Path) -> None:
    """One one-line error: the path leads out of ``root``, or (a file in a folder) the link
    is not followed."""
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and str(root) in errors[0], errors
    assert "outside" in errors[0] or "symbolic link" in errors[0], errors
    assert "\n" not in errors[0]
    assert "proj_jobs" not in at.session_state or not at.session_state["proj_jobs"]


def _type(at: AppTest, **values: str) -> AppTest:
    for key, value in values.items():
        at.text_input(key=key).input(value)
    return at.run()


def test_crops_subfolder_picked_that_links_out_is_refused(root, tmp_path):
    at = _type(_app(), **{"proj-crops": "screen"})
    assert set(at.selectbox(key="proj-subfolder").options) >= {"inside", "out"}
    at.selectbox(key="proj-subfolder").set_value("out").run()
    if not at.error:  # before the fix: no error, the form went on
        _type(at, **{"proj-new-path": "made"})
        at.button(key="proj-create").click().run()
    _refused(at, root)
    assert not (root / "made").exists()


@pytest.mark.parametrize(
    "values",
    [
        {"proj-crops": "crops_link"},
        {"proj-crops": "screen/out"},
        {"proj-crops": "screen/inside/../out"},
        {"pf-folder": "fields_link"},
        {"pf-folder": "field_file_links", "pf-pattern": FILENAME_PATTERN},
        {"pf-folder": "../root/fields_link"},
    ],
    ids=lambda v: "+".join(f"{k}={x}" for k, x in v.items()),
)
def test_typed_source_folders_that_lead_out_are_refused_as_typed(root, values):
    _refused(_type(_app(), **values), root)


def test_fields_masks_folder_linking_out_is_refused(root, outside_fields):
    shutil.copytree(outside_fields, root / "fields", ignore=shutil.ignore_patterns("masks"))
    at = _type(_app(), **{"pf-folder": "fields", "pf-masks": "masks_link"})
    _refused(at, root)


def test_fields_new_project_folder_through_a_link_is_refused(root, outside_fields):
    shutil.copytree(outside_fields, root / "fields")
    at = _type(_app(), **{"pf-folder": "fields", "pf-pattern": FILENAME_PATTERN,
                          "pf-masks": "fields/masks"})  # fmt: skip
    assert not at.error, [e.value for e in at.error]
    at.radio(key="pf-segment").set_value("given").run()
    _type(at, **{"pf-new-path": "dir_link/new"})
    at.button(key="pf-create").click().run()
    _refused(at, root)
    assert not os.listdir(root / "dir_link")


@pytest.mark.parametrize(
    "values",
    [
        {"proj-new-path": "dir_link/new"},
        {"proj-labels-csv": "labels.csv"},
        {"proj-metadata-csv": "metadata.csv"},
    ],
    ids=lambda v: next(iter(v)),
)
def test_create_form_paths_that_lead_out_are_refused_on_click(root, values):
    at = _type(_app(), **{"proj-crops": "screen"})
    at.selectbox(key="proj-subfolder").set_value("inside").run()
    _type(at, **{"proj-new-path": "made", **values})
    at.button(key="proj-create").click().run()
    _refused(at, root)
    assert not (root / "made").exists() and not os.listdir(root / "dir_link")


def test_crops_folder_whose_files_link_out_is_refused_when_read(root):
    from labeling.jobs import get_job

    at = _type(_app(), **{"proj-crops": "file_links"})
    _type(at, **{"proj-new-path": "made"})
    at.button(key="proj-create").click().run()
    assert not at.exception, at.exception
    status = get_job(at.session_state["proj_jobs"][-1].job_id).wait(60)
    assert status.state == "failed" and not status.unexpected
    assert "outside" in status.error or "symbolic link" in status.error, status.error
    assert not (root / "made" / "labels.db").exists()


def test_start_screen_project_link_out_is_refused(root):
    at = _type(_app(), **{"start-path": "project_link"})
    at.button(key="open-project").click().run()
    _refused(at, root)
    assert "project_path" not in at.session_state


@pytest.mark.parametrize(
    ("values", "button"),
    [
        ({"proj-open-path": "project_link"}, "proj-open"),
        ({"proj-add-crops": "crops_link"}, "proj-add"),
    ],
    ids=["open", "add-crops"],
)
def test_open_project_and_add_plate_links_out_are_refused(root, values, button):
    at = _type(_app(root / "proj"), **values)
    at.button(key=button).click().run()
    _refused(at, root)
    assert at.session_state["project_path"] == str(root / "proj")
    assert LabelStore(root / "proj" / "labels.db").n_cells() == 600


@pytest.mark.parametrize(
    "values",
    [
        {"proj-add-fields": "fields_link", "proj-add-pattern": FILENAME_PATTERN},
        {"proj-add-fields": "field_file_links", "proj-add-pattern": FILENAME_PATTERN},
        {"proj-add-fields": "fields", "proj-add-masks": "masks_link"},
    ],
    ids=["folder", "files", "masks"],
)
def test_add_fields_links_out_are_refused(root, outside_fields, values):
    shutil.copytree(outside_fields, root / "fields", ignore=shutil.ignore_patterns("masks"))
    at = _app(root / "proj")
    at.radio(key="proj-add-kind").set_value("whole fields of view").run()
    _type(at, **values)
    at.button(key="proj-add-go").click().run()
    _refused(at, root)
    assert LabelStore(root / "proj" / "labels.db").n_cells() == 600


def test_demo_folder_that_links_out_is_refused(root, tmp_path):
    (root / "phenoscout_demo").symlink_to(tmp_path / "outside", target_is_directory=True)
    at = _app()
    at.button(key="proj-demo").click().run()
    _refused(at, root)
    assert not os.listdir(tmp_path / "outside")


def test_finished_job_opens_only_a_project_still_under_the_root(root, small_demo, tmp_path):
    from labeling.jobs import get_job

    shutil.copytree(small_demo, root / "crops")
    at = _type(_app(), **{"proj-crops": "crops"})
    _type(at, **{"proj-new-path": "made"})
    at.button(key="proj-create").click().run()
    job_id = at.session_state["proj_jobs"][-1].job_id
    assert get_job(job_id).wait(120).state == "done"
    # the new project is moved out and a link left in its place before "Open it" is clicked
    shutil.move(root / "made", tmp_path / "outside" / "made")
    (root / "made").symlink_to(tmp_path / "outside" / "made", target_is_directory=True)
    at.run()
    at.button(key=f"job-open-{job_id}").click().run()
    assert not at.exception, at.exception
    assert any("outside" in e.value and str(root) in e.value for e in at.error)
    assert "project_path" not in at.session_state

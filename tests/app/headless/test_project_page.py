"""The Project page driven headless with AppTest: create, open, add, classes, the demo."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("streamlit")

from labeling.store.labels import LabelStore  # noqa: E402
from tests.app.headless.apptest import (  # noqa: E402
    _app,
    _page,
    _sess,
    _store,
    _wait_job,
)


def test_project_page_creates_a_project_in_the_background(small_demo, tmp_path):
    from labeling.config import load_config

    at = _app()  # no project open: the start screen with the Project page's create section
    at.text_input(key="proj-crops").input(str(small_demo.parent)).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="proj-subfolder").options == ["(the whole folder)", small_demo.name]
    at.selectbox(key="proj-subfolder").set_value(small_demo.name).run()
    said = next(c.value for c in at.caption if "image files" in c.value)
    assert said.startswith("12 image files (12 .npz; e.g. plate1/B02_s1.npz") and (
        "labels.csv and metadata.csv found" in said
    )
    new = tmp_path / "created"
    at.text_input(key="proj-new-path").input(str(new))
    at.text_input(key="proj-channels").input("DNA, Cyto").run()
    at.color_picker(key="proj-colour-1").pick("#ff00ff").run()
    at.text_input(key="proj-create-classes").input("interphase, mitotic").run()
    at.button(key="proj-create").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("progress")) == 1  # the page returned at once, with the job's progress
    status = _wait_job(at)
    assert status.state == "done", status.error
    assert "600 cells" in at.success[0].value
    at.button(key=f"job-open-{status.job_id}").click().run()
    assert not at.exception, at.exception
    assert at.session_state["project_path"] == str(new.resolve())
    config = load_config(new / "project.toml")
    assert [(c.name, c.colour) for c in config.channels] == [
        ("DNA", "#3b82f6"),
        ("Cyto", "#ff00ff"),
    ]
    assert LabelStore(new / "labels.db").n_cells() == 600
    classes = LabelStore(new / "labels.db").classes(include_pseudo=False)
    assert [(c.name, c.key) for c in classes] == [("interphase", "1"), ("mitotic", "2")]
    assert len(_sess(at).items) == 24  # the Label page opens on the new project
    assert not at.session_state["proj_jobs"]  # the job's ticket is done with


def test_project_page_job_errors_are_one_line(small_demo, tmp_path):
    at = _app()
    at.text_input(key="proj-crops").input(str(small_demo)).run()
    at.text_input(key="proj-new-path").input(str(tmp_path / "new"))
    at.text_input(key="proj-channels").input("A, B, C").run()  # the crops have 2 channels
    at.button(key="proj-create").click().run()
    status = _wait_job(at)
    assert status.state == "failed" and not status.unexpected
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert at.error[0].value.startswith("Creating project new failed: ")
    at.button(key=f"job-dismiss-{status.job_id}").click().run()
    assert not at.error and not at.session_state["proj_jobs"]


def test_project_page_adds_classes_to_the_open_project(project):
    at = _page(_app(project), "project")
    at.text_input(key="proj-classes").input("mitotic, Mitotic")
    at.button(key="proj-classes-add").click().run()
    assert not at.exception, at.exception
    assert any("given twice" in e.value for e in at.error)
    assert at.text_input(key="proj-classes").value == "mitotic, Mitotic"  # kept to correct
    at.text_input(key="proj-classes").input("")
    at.button(key="proj-classes-add").click().run()
    assert [e.value for e in at.error] == ["Type one or more class names first."]
    at.text_input(key="proj-classes").input("mitotic, apoptotic")
    at.button(key="proj-classes-add").click().run()
    assert not at.exception and not at.error, at.exception
    assert at.text_input(key="proj-classes").value == ""  # added: emptied
    assert [s.value for s in at.success] == ["Added: mitotic (1), apoptotic (2)"]
    at.text_input(key="proj-classes").input("MITOTIC")
    at.button(key="proj-classes-add").click().run()
    assert [e.value for e in at.error] == [
        "No new class (already there: 'MITOTIC' is the class 'mitotic')."
    ]
    assert at.text_input(key="proj-classes").value == "MITOTIC"
    at.text_input(key="proj-classes").input("apoptotic, giant")
    at.button(key="proj-classes-add").click().run()
    assert [s.value for s in at.success] == [
        "Added: giant (3) (already there: 'apoptotic' is a class)"
    ]
    classes = _store(project).classes(include_pseudo=False)
    assert [(c.name, c.key) for c in classes] == [
        ("mitotic", "1"), ("apoptotic", "2"), ("giant", "3")
    ]  # fmt: skip


def test_project_page_bad_paths_are_errors(project, tmp_path):
    at = _app()
    at.text_input(key="proj-crops").input(str(tmp_path / "nowhere")).run()
    assert not at.exception, at.exception
    assert "no such folder" in at.error[0].value
    at = _page(_app(project), "project")
    at.text_input(key="proj-open-path").input(str(tmp_path / "nowhere"))
    at.button(key="proj-open").click().run()
    assert not at.exception, at.exception
    assert "no such project folder" in at.error[0].value
    at.text_input(key="proj-crops").input(str(project.parent)).run()
    at.selectbox(key="proj-subfolder").set_value("proj").run()
    at.text_input(key="proj-new-path").input(str(project)).run()  # exists, not empty
    at.button(key="proj-create").click().run()
    assert not at.exception, at.exception
    assert any("already exists and is not empty" in e.value for e in at.error)


@pytest.mark.parametrize("key", ["proj-crops", "proj-open-path", "proj-add-crops"])
def test_project_page_paths_outside_the_root_are_refused(project, tmp_path, monkeypatch, key):
    monkeypatch.setenv("PHENOSCOUT_ROOT", str(tmp_path / "root"))
    (tmp_path / "root").mkdir()
    at = _page(_app(project), "project")
    at.text_input(key=key).input(str(project)).run()  # an existing folder, outside the root
    for button in ("proj-open", "proj-add"):
        if key.startswith(button):
            at.button(key=button).click().run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and str(tmp_path / "root") in at.error[0].value
    assert "proj_jobs" not in at.session_state  # no job started
    assert _store(project).n_cells() == 600


def test_project_page_opens_the_demo_with_one_click(small_project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PHENOSCOUT_ROOT")  # the root is the working directory
    demo = tmp_path / "phenoscout_demo" / "project"
    shutil.copytree(small_project, demo)  # already made: the click opens it
    at = _app()
    at.button(key="proj-demo").click().run()
    assert not at.exception, at.exception
    assert at.session_state["project_path"] == str(demo)
    assert len(_sess(at).items) == 24


def test_project_page_adds_a_plate_in_the_background(project, tmp_path):
    from datasets.crops.demo import generate_demo

    plate = tmp_path / "plate2"
    generate_demo(plate, n_cells=200, seed=5)
    at = _page(_app(project), "project")
    at.text_input(key="proj-add-crops").input(str(plate))
    at.button(key="proj-add").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert _wait_job(at).state == "done"
    assert "Added 200 cells" in at.success[0].value
    assert not [b for b in at.button if b.key.startswith("job-open-")]  # nothing to open
    assert _store(project).n_cells() == 800


def test_a_project_created_from_an_open_one_keeps_the_annotator(project, small_demo, tmp_path):
    at = _app(project)
    at.text_input(key="annotator").input("carol").run()
    _page(at, "project")
    at.text_input(key="proj-crops").input(str(small_demo)).run()
    at.text_input(key="proj-new-path").input(str(tmp_path / "second"))
    at.button(key="proj-create").click().run()
    assert not at.exception, at.exception
    status = _wait_job(at)
    assert status.state == "done", status.error
    at.button(key=f"job-open-{status.job_id}").click().run()
    assert not at.exception, at.exception
    assert at.session_state["project_path"] == str((tmp_path / "second").resolve())
    assert at.text_input(key="annotator").value == "carol"
    assert _sess(at).owner[1] == "carol"

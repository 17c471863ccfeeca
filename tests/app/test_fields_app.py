"""The Fields page, the "In its field" expander and the create-from-fields form, driven headless
with Streamlit's AppTest on a tiny field project (2 demo fields of 256 px, given masks).

Widgets are found by key: ``fields-field``, ``fields-show-<i>``, ``fields-outlines``,
``fields-cell-<field>`` (Fields page); ``in-field-<cell_id>`` (the expander); ``pf-folder``,
``pf-pattern``, ``pf-masks``, ``pf-segment``, ``pf-channels``, ``pf-preview``, ``pf-new-path``,
``pf-create`` (the form).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402

from datasets.fields.demo import FILENAME_PATTERN, generate_demo_fields  # noqa: E402
from datasets.fields.files import find_fields  # noqa: E402
from datasets.fields.store import read_fields  # noqa: E402
from labeling.jobs import get_job  # noqa: E402
from labeling.project import FieldSource, create_project_from_fields, open_project  # noqa: E402

APP = "../../app.py"  # relative to this file, as AppTest.from_file wants


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The allowed root: ``fields/`` (2 demo fields of 256 px, masks in ``fields/masks``)."""
    root = tmp_path_factory.mktemp("fields_app").resolve()
    generate_demo_fields(root / "fields", n_fields=2, size=256, seed=1)
    return root


@pytest.fixture(scope="module")
def field_project(base) -> Path:
    """A project made from the two demo fields with their given masks."""
    fields, _ = find_fields(base / "fields", FILENAME_PATTERN, base / "fields" / "masks")
    project, _ = create_project_from_fields(base / "project", FieldSource(fields, segment="given"))
    project.close()
    return base / "project"


@pytest.fixture(autouse=True)
def _env(monkeypatch, base):
    monkeypatch.setenv("PHENOSCOUT_ROOT", str(base))
    monkeypatch.setenv("PHENOSCOUT_TRAINER", "off")


def _fields_page(project: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["project_path"] = str(project)
    at.run()
    at.switch_page("app_pages/pages/fields.py").run()
    assert not at.exception, at.exception
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_fields_page_shows_the_field_with_outlines_and_counts(field_project):
    at = _fields_page(field_project)
    assert not at.error, [e.value for e in at.error]
    table = read_fields(field_project).set_index("key")
    key = at.selectbox(key="fields-field").value
    assert key == table.index[0]
    row = table.loc[key]
    assert _metrics(at) == {"Objects": str(row["n_objects"]), "Cells": str(row["n_kept"]),
                            "Left out at the border": str(row["n_border"]),
                            "Size": "256×256"}  # fmt: skip
    assert len(at.image) == 1  # the field, no cell chosen yet
    assert any("objects from the mask" in c.value for c in at.caption)
    first = at.image[0].proto.imgs[0].url
    at.toggle(key="fields-outlines").set_value(False).run()
    assert not at.exception and at.image[0].proto.imgs[0].url != first  # redrawn without them

    other = table.index[1]
    at.selectbox(key="fields-field").select(other).run()
    assert not at.exception
    assert _metrics(at)["Cells"] == str(table.loc[other, "n_kept"])


def test_choosing_a_cell_highlights_it_and_shows_its_crop_and_place(field_project):
    at = _fields_page(field_project)
    key = at.selectbox(key="fields-field").value
    field_image = at.image[0].proto.imgs[0].url
    cells = pd.read_parquet(field_project / "cells.parquet", columns=["cell_id", "field"])
    cell_id = cells.loc[cells["field"] == key, "cell_id"].iloc[2]
    at.selectbox(key=f"fields-cell-{key}").select(cell_id).run()
    assert not at.exception, at.exception
    assert not at.error
    assert len(at.image) == 3  # the field, the stored crop, the cell in its field
    assert at.image[0].proto.imgs[0].url != field_image  # the chosen cell is outlined
    assert any(cell_id in c.value and "not labeled" in c.value for c in at.caption)


def test_a_project_made_from_crops_says_it_has_no_fields(tmp_path, small_project):
    project = Path(shutil.copytree(small_project, tmp_path / "crops_project"))
    at = _fields_page(project)
    assert not at.error
    assert len(at.info) == 1 and "made from crops" in at.info[0].value
    assert not at.image


def _in_field_script() -> None:
    import os

    from app_pages.widgets.field_view import show_cell_in_field
    from labeling.project import open_project

    show_cell_in_field(open_project(os.environ["TEST_PROJECT"]), os.environ["TEST_CELL"])


def test_in_its_field_expander_is_lazy_and_shows_the_cell(monkeypatch, field_project):
    cell_id = pd.read_parquet(field_project / "cells.parquet", columns=["cell_id"])["cell_id"][0]
    monkeypatch.setenv("TEST_PROJECT", str(field_project))
    monkeypatch.setenv("TEST_CELL", cell_id)
    at = AppTest.from_function(_in_field_script, default_timeout=30).run()
    assert not at.exception, at.exception
    assert len(at.expander) == 1 and at.expander[0].label == "In its field"
    assert not at.image  # closed: nothing drawn, the field not even read
    at.session_state[f"in-field-{cell_id}"] = True  # what opening it in the browser does
    at.run()
    assert not at.exception and not at.error
    assert len(at.image) == 1
    field, obj = cell_id.rsplit(":", 1)
    assert at.caption[0].value == f"field {field}, object {obj}"


def test_in_its_field_shows_nothing_for_a_crop_project(monkeypatch, small_project):
    monkeypatch.setenv("TEST_PROJECT", str(small_project))
    monkeypatch.setenv("TEST_CELL", "whatever")
    at = AppTest.from_function(_in_field_script, default_timeout=30).run()
    assert not at.exception and not at.expander and not at.error


def _form_script() -> None:
    from app_pages.pages.project_fields import render_fields_form
    from app_pages.server import jobs
    from app_pages.server.common import allowed_root

    jobs.jobs_panel(lambda path: None)
    render_fields_form(allowed_root())


def _form() -> AppTest:
    at = AppTest.from_function(_form_script, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def _type(at: AppTest, **values: str) -> None:
    for key, value in values.items():
        at.text_input(key=key.replace("_", "-")).input(value)
    at.run()
    assert not at.exception, at.exception


def test_fields_form_previews_a_field_then_creates_the_project(base):
    at = _form()
    assert not at.error
    _type(at, pf_folder="fields", pf_pattern=FILENAME_PATTERN, pf_masks="fields/masks")
    assert not at.error, [e.value for e in at.error]
    assert at.success[0].value.startswith("2 fields found (2 with a mask): 2 channels, 256×256")
    assert len(at.image) == 1  # the preview
    assert any("its mask" in c.value and "used as given" in c.value for c in at.caption)
    at.radio(key="pf-segment").set_value("given").run()
    _type(at, pf_channels="DNA, Cytoplasm", pf_new_path="from_form")
    assert not at.error
    at.button(key="pf-create").click().run()
    assert not at.exception, at.exception
    tickets = at.session_state["proj_jobs"]
    status = get_job(tickets[-1].job_id).wait(60)
    assert status.state == "done", status.error
    project = open_project(base / "from_form")
    try:
        assert project.channel_names == ["DNA", "Cytoplasm"]
        assert project.store.n_cells() == int(read_fields(project.path)["n_kept"].sum()) > 0
    finally:
        project.close()


def test_fields_form_segments_the_preview_when_a_field_has_no_mask(base):
    at = _form()
    _type(at, pf_folder="fields", pf_pattern=FILENAME_PATTERN)
    assert "none with a mask" in at.success[0].value
    assert any("masks folder" in w.value for w in at.warning)  # fields/masks was left out
    assert any(c.value.endswith("classical segmentation") or "classical segmentation;"
               in c.value for c in at.caption)  # fmt: skip
    at.radio(key="pf-segment").set_value("unet").run()
    assert any("U-Net is trained when the project is made" in c.value for c in at.caption)
    at.radio(key="pf-segment").set_value("given").run()
    assert any("nothing would be ingested" in e.value for e in at.error)
    assert at.button(key="pf-create").disabled


def test_fields_form_without_a_pattern_suggests_one_for_channel_files(base):
    at = _form()
    _type(at, pf_folder="fields")  # 4 files named ..._w1.tif, ..._w2.tif
    assert at.success[0].value.startswith("4 fields found (none with a mask): 1 channel, ")
    hint = next(w.value for w in at.warning if "one file per channel" in w.value)
    assert "2 channels of 2 fields" in hint and "_w{channel}.tif" in hint
    _type(at, pf_pattern="{plate}_{well}.tif")  # metadata only: each file a field, still hinted
    assert any("one file per channel" in w.value for w in at.warning)
    _type(at, pf_pattern=FILENAME_PATTERN)
    assert not any("one file per channel" in w.value for w in at.warning)


def test_fields_form_bad_input_is_one_line(base):
    (base / "empty").mkdir(exist_ok=True)
    at = _form()
    _type(at, pf_folder="empty")
    assert len(at.error) == 1 and "no fields found" in at.error[0].value
    _type(at, pf_folder="fields", pf_pattern="{plate}_{well.tif")
    assert len(at.error) == 1 and "unbalanced brace" in at.error[0].value
    _type(at, pf_pattern="{plate}_{well}_x{site}_c{channel}.tif")
    assert len(at.error) == 1 and "no fields found (4 image files, 5 skipped" in at.error[0].value
    _type(at, pf_pattern=FILENAME_PATTERN)
    assert not at.error
    _type(at, pf_channels="one, two, three")
    assert len(at.error) == 1 and "3 channel names for 2 channels" in at.error[0].value
    _type(at, pf_folder="../..")
    assert len(at.error) == 1 and "\n" not in at.error[0].value


def test_project_page_adds_a_plate_of_fields_in_the_background(base, field_project, tmp_path):
    project = Path(shutil.copytree(field_project, base / "add_target"))
    generate_demo_fields(base / "plate2", n_fields=2, size=256, seed=9)
    n_before = open_project(project).store.n_cells()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["project_path"] = str(project)
    at.run()
    at.switch_page("app_pages/pages/project.py").run()
    assert at.radio(key="proj-add-kind").value == "whole fields of view"  # a field project
    at.text_input(key="proj-add-fields").input("plate2")
    at.text_input(key="proj-add-pattern").input(FILENAME_PATTERN)
    at.text_input(key="proj-add-masks").input("plate2/masks")
    at.radio(key="proj-add-segment").set_value("given")
    at.button(key="proj-add-go").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    status = get_job(at.session_state["proj_jobs"][-1].job_id).wait(60)
    assert status.state == "done", status.error
    assert status.result.startswith("Added ") and "from 2 fields" in status.result
    after = open_project(project)
    assert after.store.n_cells() > n_before and len(read_fields(project)) == 4
    at.text_input(key="proj-add-fields").input("../outside").run()
    at.button(key="proj-add-go").click().run()
    assert any(str(base) in e.value for e in at.error)  # a path outside the root is refused

"""The Fields page in a real browser (Debian's chromium through Playwright): the field drawn with
its segmentation, a click on a row of the cells' table choosing a cell (outlined in the field,
its crop and its place shown beside). Saves artifacts/fields_page.png.

The server runs on a project made from 2 demo fields of 384 px with their given masks, with the
background trainer off (``PHENOSCOUT_TRAINER=off``: this test is about the page).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from datasets.fields.demo import FILENAME_PATTERN, generate_demo_fields
from datasets.fields.files import find_fields
from datasets.fields.store import read_fields
from labeling.project import FieldSource, create_project_from_fields
from tests.app.browser import (
    chromium,
    require_browser,
    running_app,
    screenshot,
    wait_count,
    wait_idle,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
VIEWPORT = {"width": 1400, "height": 1200}
_LOADED = """sel => { const i = document.querySelector(sel);
    return !!i && i.complete && i.naturalWidth > 0; }"""
_N_IMAGES = """() => [...document.querySelectorAll('[data-testid="stImage"] img')]
    .filter(i => i.complete && i.naturalWidth > 0).length"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    require_browser()
    base = tmp_path_factory.mktemp("browser_fields").resolve()
    generate_demo_fields(base / "fields", n_fields=2, size=384, seed=4)
    fields, _ = find_fields(base / "fields", FILENAME_PATTERN, base / "fields" / "masks")
    made, _ = create_project_from_fields(base / "project", FieldSource(fields, segment="given"))
    made.close()
    return base / "project"


def test_fields_page_draws_the_segmentation_and_a_chosen_cell(project):
    env = {"PHENOSCOUT_TRAINER": "off", "PHENOSCOUT_ROOT": str(project.parent)}
    first = read_fields(project).iloc[0]
    cells = pd.read_parquet(project / "cells.parquet", columns=["cell_id", "field"])
    third = cells.loc[cells["field"] == first["key"], "cell_id"].iloc[2]
    with running_app(project, env=env) as url, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url + "/fields")
        page.wait_for_function(_LOADED, arg=".st-key-fields-image img", timeout=60000)
        wait_idle(page)
        wait_count(page, '[data-testid="stMetricValue"]', 3)
        metrics = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
        assert metrics[:3] == [str(first["n_objects"]), str(first["n_kept"]),
                               str(first["n_border"])]  # fmt: skip
        page.get_by_text(f"{first['n_kept']} cells in this field").wait_for(timeout=30000)
        assert page.evaluate(_N_IMAGES) == 1

        grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
        page.mouse.click(grid["x"] + 15, grid["y"] + 35 + 2 * 35 + 17)  # row 3's checkbox
        page.wait_for_function(f"() => ({_N_IMAGES})() === 3", timeout=30000)
        wait_idle(page)
        page.get_by_text("stored crop").wait_for(timeout=30000)
        page.get_by_text("in its field").wait_for(timeout=30000)
        screenshot(page, "fields_page")
        caption = page.locator('[data-testid="stCaptionContainer"]').filter(has_text=third)
        assert "label: not labeled" in caption.first.inner_text()

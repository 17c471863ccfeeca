"""The Project, Discover, Review and Export pages in a real browser (Debian's chromium through
Playwright), one app server and one browser for the module; each test opens a fresh page (a
new Streamlit session).

The server runs on a copy of the small demo project with 48 labels (two rounds of the ground
truth), with the background trainer off (``PHENOSCOUT_TRAINER=off``: these tests are about the
pages) and ``PHENOSCOUT_ROOT`` set to the module's folder, which also holds a folder of crops
to create a project from and an already made demo project. Each test saves a screenshot of its
page in artifacts/ (page_project.png, page_project_job.png while a project is being created,
page_discover.png, page_review.png, page_export.png).
"""

from __future__ import annotations

import io
import re
import shutil
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from labeling.store.labels import LabelStore
from tests.app.browser import (
    chromium,
    require_browser,
    running_app,
    screenshot,
    wait_idle,
    wait_text,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
VIEWPORT = {"width": 1400, "height": 1600}
_WIDE_TILE = """sel => { const i = document.querySelector(sel);
    return !!i && i.complete && i.naturalWidth > 2 * i.naturalHeight; }"""


@pytest.fixture(scope="module")
def root(tmp_path_factory, small_project, small_demo) -> Path:
    """The allowed root: ``labeled/`` (the served project), ``crops/screen`` (a folder of
    crops) and ``phenoscout_demo/project`` (the demo, already made)."""
    from labeling.loop import next_batch, submit_labels
    from labeling.project import open_project

    require_browser()
    base = tmp_path_factory.mktemp("browser_pages").resolve()
    shutil.copytree(small_project, base / "labeled")
    shutil.copytree(small_project, base / "phenoscout_demo" / "project")
    shutil.copytree(small_demo, base / "crops" / "screen")
    proj = open_project(base / "labeled")
    truth = proj.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    for _ in range(2):
        batch = next_batch(proj, 24, annotator="ann")
        submit_labels(proj, {b["cell_id"]: truth[b["cell_id"]] for b in batch}, annotator="ann")
    proj.close()
    return base


@pytest.fixture(scope="module")
def app(root):
    """The URL of one app server on ``root/labeled`` for the whole module."""
    env = {"PHENOSCOUT_TRAINER": "off", "PHENOSCOUT_ROOT": str(root)}
    with running_app(root / "labeled", env=env) as url:
        yield url


@pytest.fixture(scope="module")
def browser(app):
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    """A fresh page (a new Streamlit session); closed after the test."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def _goto(page, url: str, selector: str) -> None:
    """Load ``url`` and wait for ``selector`` and for the script run to end."""
    page.goto(url)
    page.wait_for_selector(selector, timeout=60000)
    wait_idle(page)


def _type(page, key: str, text: str) -> None:
    """Type into the text input with widget key ``key`` and commit it (Enter)."""
    field = page.locator(f".st-key-{key} input")
    field.fill(text)
    field.press("Enter")
    _settle(page)


def _settle(page) -> None:
    """Wait for the run that an input starts to begin (the status widget shows up within a few
    hundred ms, or the run was quicker) and to end."""
    page.wait_for_timeout(400)
    wait_idle(page)


def _no_errors(page) -> None:
    assert not page.locator('[data-testid="stException"]').count(), "a traceback on the page"
    errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    assert not errors, errors


def test_project_page_creates_opens_and_opens_the_demo(app, root, browser, page):
    _goto(page, f"{app}/project", ".st-key-proj-demo button")
    screenshot(page, "page_project")
    _no_errors(page)
    # create a project from a folder of crops (typed relative to the root): a background job
    _type(page, "proj-crops", "crops")
    page.locator(".st-key-proj-subfolder input").click()  # the folders under it, to pick from
    page.get_by_role("option", name="screen").click()
    _settle(page)
    _type(page, "proj-new-path", "made")
    _type(page, "proj-channels", "DNA, Cyto")
    page.locator(".st-key-proj-create button").click()
    page.wait_for_selector('[data-testid="stProgress"]', timeout=15000)  # the page is not blocked
    screenshot(page, "page_project_job")
    wait_text(page, "this batch 0/24 labeled", 120000)  # done: the new project's Label page
    assert page.locator('[data-testid="stSidebar"]').inner_text().startswith("made")
    with LabelStore(root / "made" / "labels.db") as store:
        assert store.n_cells() == 600
    # a path outside the root is refused with the core's one-line message
    second = browser.new_page(viewport=VIEWPORT)
    _goto(second, f"{app}/project", ".st-key-proj-open-path input")
    _type(second, "proj-open-path", str(root.parent))
    second.locator(".st-key-proj-open button").click()
    second.wait_for_selector('[data-testid="stAlertContentError"]', timeout=15000)
    error = second.locator('[data-testid="stAlertContentError"]').inner_text().strip()
    assert error and "\n" not in error and "Traceback" not in error
    # open a project by its folder, then the demo with one click
    _type(second, "proj-open-path", "made")
    second.locator(".st-key-proj-open button").click()
    wait_text(second, "this batch 0/24 labeled")
    assert "made" in second.locator('[data-testid="stSidebar"]').inner_text()
    second.get_by_role("link", name="Project").click()
    second.locator(".st-key-proj-demo button").click()
    wait_text(second, "this batch 0/24 labeled")
    assert (
        str(root / "phenoscout_demo" / "project")
        in second.locator('[data-testid="stSidebar"]').inner_text()
    )
    second.close()


def test_discover_page_draws_its_charts(app, root, page):
    _goto(page, f"{app}/discover", '[data-testid="stVegaLiteChart"]')
    wait_text(page, "Cross-validated quality")
    page.wait_for_function(  # every chart drawn: discovery, prevalence, rounds, predicted, ...
        "() => [...document.querySelectorAll('[data-testid=stVegaLiteChart]')]"
        ".filter(c => c.querySelector('svg, canvas')).length >= 5",  # prevalence: 30 random
        timeout=30000,
    )
    with LabelStore(root / "labeled" / "labels.db") as store:
        given = store.n_labels_given()
    metrics = page.locator('[data-testid="stMetric"]').all_inner_texts()
    assert any(m.startswith("Labels\n") and m.endswith(str(given)) for m in metrics), metrics
    _no_errors(page)
    screenshot(page, "page_discover")


def test_review_page_relabels_in_place(app, root, page):
    _goto(page, f"{app}/review", ".st-key-rv-tile-0 img")
    _no_errors(page)
    with LabelStore(root / "labeled" / "labels.db") as store:
        classes = store.classes(include_pseudo=False)
        cls = next(c.name for c in store.classes(include_pseudo=True) if c.n_labeled)  # shown first
        of_class = [c for c, lab in store.current_labels().items() if lab == cls]
    wait_text(page, f"{len(of_class)} cells labeled {cls}")
    assert page.locator('div[class*="st-key-rv-tile-"] img').count() == len(of_class)
    screenshot(page, "page_review")
    tile = page.locator(".st-key-rv-tile-0")
    cell_id = tile.locator("code").inner_text()
    other = next(c for c in classes if c.name != cls)
    t0 = time.perf_counter()
    tile.locator('[role="radiogroup"] button', has_text=re.compile(f"^{other.key}$")).click()
    tile.filter(has_text=f"✔ {other.name}").wait_for(timeout=30000)  # relabeled in place
    seconds = time.perf_counter() - t0
    wait_idle(page)
    assert tile.locator("code").inner_text() == cell_id  # the grid did not reshuffle
    with LabelStore(root / "labeled" / "labels.db") as store:
        last = store.history(cell_id)[-1]
    assert (last.label, last.source, last.annotator) == (other.name, "review", "browser")
    print(f"review relabel -> shown: {seconds:.2f} s")


def test_display_settings_survive_a_page_switch(app, page):
    """Channels side by side, switched on on the Review page, still hold on the Label page after
    a visit to a page without the controls."""
    _goto(page, f"{app}/review", ".st-key-rv-tile-0 img")
    page.locator(".st-key-side-by-side label").click()
    page.wait_for_function(_WIDE_TILE, arg=".st-key-rv-tile-0 img", timeout=30000)
    wait_idle(page)
    page.get_by_role("link", name="Discover").click()
    page.wait_for_selector('[data-testid="stMetric"]', timeout=30000)
    wait_idle(page)
    page.get_by_role("link", name="Label").click()
    page.wait_for_selector(".st-key-tile-0 img", timeout=60000)
    wait_idle(page)
    assert page.locator(".st-key-side-by-side input").is_checked()
    assert page.evaluate(_WIDE_TILE, ".st-key-tile-0 img")  # composite + channels side by side


def test_export_page_downloads_match_the_store(app, root, page):
    _goto(page, f"{app}/export", ".st-key-dl-labels button")
    _no_errors(page)
    screenshot(page, "page_export")
    labels = pd.read_csv(_download(page, "dl-labels"))
    cells = pd.read_parquet(root / "labeled" / "cells.parquet")
    with LabelStore(root / "labeled" / "labels.db") as store:
        current = store.current_labels()
        everything = store.current_labels(include_pseudo=True)
    assert dict(zip(labels["cell_id"], labels["label"])) == current and len(labels) == len(current)
    meta = cells.set_index("cell_id").loc[labels["cell_id"], ["plate", "well"]]
    assert (labels[["plate", "well"]].to_numpy() == meta.to_numpy()).all()
    table = pd.read_csv(_download(page, "dl-cells"))
    assert table["cell_id"].tolist() == cells["cell_id"].tolist()
    with zipfile.ZipFile(_download(page, "dl-crops")) as zf:
        index = pd.read_csv(zf.open("index.csv"))
        assert dict(zip(index["cell_id"], index["class"])) == everything
        assert set(zf.namelist()) == {"index.csv", *index["file"]}


def _download(page, key: str) -> io.BytesIO:
    """Click the download button ``key``; the downloaded file's bytes."""
    with page.expect_download(timeout=30000) as download:
        page.locator(f".st-key-{key} button").click()
    return io.BytesIO(Path(download.value.path()).read_bytes())

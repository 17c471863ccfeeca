"""The Label page in a real browser (Debian's chromium through Playwright).

Starts ``phenoscout app`` on a copy of the small demo project, labels one cell by a click and
one by a key, adds a class by typing (which must not fire the page's shortcuts), reloads,
asks for the next batch (twice: the page asks first) and checks the label store; prints the
timings and saves artifacts/label_page.png.
"""

from __future__ import annotations

import time

import pytest

from labeling.store.labels import LabelStore
from tests.app.browser import (
    browser_page,
    require_browser,
    running_app,
    screenshot,
    wait_idle,
    wait_text,
    wait_tiles,
)


def _tile(page, i: int):
    return page.locator(f".st-key-tile-{i}")


@pytest.mark.slow
@pytest.mark.browser
def test_label_page_in_a_browser(label_project):
    project = label_project
    require_browser()
    timings: dict[str, float] = {}
    with running_app(project) as url, browser_page(1400, 2000) as page:
        t0 = time.perf_counter()
        page.goto(url)
        wait_tiles(page)
        timings["goto -> first tiles"] = time.perf_counter() - t0
        wait_text(page, "this batch 0/24 labeled")

        # a click on tile 1's class button "1" (round)
        t0 = time.perf_counter()
        _tile(page, 0).locator('[role="radiogroup"] button').first.click()
        _tile(page, 0).filter(has_text="✔ round").wait_for(timeout=45000)
        timings["click -> label shown"] = time.perf_counter() - t0
        wait_idle(page)

        # a key press: "2" labels the focused tile (focus moved on to tile 2)
        page.mouse.click(700, 10)
        t0 = time.perf_counter()
        page.keyboard.press("2")
        _tile(page, 1).filter(has_text="✔ elongated").wait_for(timeout=45000)
        timings["key -> label shown"] = time.perf_counter() - t0
        wait_idle(page)

        # typing a class name with shortcut letters in it (b, u, n, s, z) fires no shortcut
        page.locator(".st-key-new-class input").click()
        page.keyboard.type("subnuclear blaze")
        page.keyboard.press("Enter")
        page.locator(".st-key-cls-3").wait_for(timeout=45000)
        wait_idle(page)
        wait_text(page, "this batch 2/24 labeled")

        # a reload starts a new session: same batch, labels drawn from the store
        page.reload()
        wait_tiles(page)
        _tile(page, 0).filter(has_text="✔ round").wait_for(timeout=45000)
        _tile(page, 1).filter(has_text="✔ elongated").wait_for(timeout=45000)
        wait_text(page, "this batch 2/24 labeled")
        with LabelStore(project / "labels.db") as store:
            before = {lease["cell_id"] for lease in store.open_lease("browser")}
        assert len(before) == 22

        # next batch: with 22 tiles open the page asks first; a second click goes on
        next_button = page.locator(".st-key-next-batch button").first  # (2nd: a hidden copy)
        next_button.click()
        wait_text(page, "22 cells of this batch have no label yet")
        wait_idle(page)
        t0 = time.perf_counter()
        next_button.click()
        wait_text(page, "this batch 0/24 labeled")
        wait_tiles(page)
        timings["next batch -> rendered"] = time.perf_counter() - t0
        wait_text(page, "guess ")  # two classes labeled: the model guesses now
        page.mouse.move(5, 1900)  # no tooltip over the page
        time.sleep(0.5)
        screenshot(page, "label_page")

    with LabelStore(project / "labels.db") as store:
        events = store.label_events()
        after = {lease["cell_id"] for lease in store.open_lease("browser")}
        classes = [c.name for c in store.classes(include_pseudo=False)]
    assert [(e.label, e.annotator, e.source) for e in events] == [
        ("round", "browser", "batch"),
        ("elongated", "browser", "batch"),
    ]
    assert len({e.cell_id for e in events}) == 2
    assert classes == ["round", "elongated", "subnuclear blaze"]
    assert len(after) == 24 and after != before and not after & {e.cell_id for e in events}
    for name, seconds in timings.items():
        print(f"{name}: {seconds:.2f} s")
    assert timings["click -> label shown"] < 5 and timings["next batch -> rendered"] < 10

"""Two annotators label one project at once, in two browser sessions on one app server.

Two Playwright contexts (separate cookies, so separate Streamlit sessions) open the Label page,
type different annotator names in the sidebar at the same moment and label tiles in turn,
without waiting for each other. Their batches must be disjoint (leases), every label must be
in the store under its annotator, and neither page may show an error.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from labeling.store.labels import LabelStore
from tests.app.browser import (
    chromium,
    require_browser,
    running_app,
    screenshot,
    wait_idle,
    wait_tiles,
)

ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
NAMES = {"ann": 0, "bob": 1}  # annotator -> the class button each one clicks (round, elongated)
N_LABELS = 4  # labels each annotator gives


def _open_leases(project: Path, annotator: str) -> set[str]:
    with LabelStore(project / "labels.db") as store:
        return {lease["cell_id"] for lease in store.open_lease(annotator)}


def _wait_for(predicate, timeout_s: float = 90) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.browser
def test_two_annotators_label_at_once_in_two_browser_sessions(label_project):
    project = label_project
    require_browser()
    with running_app(project, env={"PHENOSCOUT_TRAINER": "off"}) as url, chromium() as browser:
        pages = {name: browser.new_context(viewport={"width": 1400, "height": 2000}).new_page()
                 for name in NAMES}  # fmt: skip
        for page in pages.values():
            page.goto(url)
        for page in pages.values():
            wait_tiles(page)
        # both type their name at the same moment: each gets a batch of their own
        for name, page in pages.items():
            box = page.locator(".st-key-annotator input")
            box.fill(name)
            box.press("Enter")
        _wait_for(lambda: all(len(_open_leases(project, n)) == 24 for n in NAMES))
        batches = {name: _open_leases(project, name) for name in NAMES}
        for page in pages.values():
            wait_tiles(page)
        # they label in turn, each click sent before the other's rerun has finished
        for i in range(N_LABELS):
            for name, page in pages.items():
                buttons = page.locator(f".st-key-tile-{i}").locator('[role="radiogroup"] button')
                buttons.nth(NAMES[name]).click()
        for name, page in pages.items():
            label = ("round", "elongated")[NAMES[name]]
            for i in range(N_LABELS):
                page.locator(f".st-key-tile-{i}").filter(has_text=f"✔ {label}").wait_for(
                    timeout=60000)  # fmt: skip
            wait_idle(page, 120000)
            page.wait_for_function("t => document.body.innerText.includes(t)",
                                   arg=f"this batch {N_LABELS}/24 labeled")  # fmt: skip
        shown_errors = {
            name: page.locator(ERRORS).all_inner_texts() for name, page in pages.items()
        }
        screenshot(pages["bob"], "two_annotators_bob")

    assert shown_errors == {"ann": [], "bob": []}
    assert not batches["ann"] & batches["bob"], "a cell was in both annotators' batches"
    with LabelStore(project / "labels.db") as store:
        events = [e for e in store.label_events() if e.annotator in NAMES]
        left = {name: {lease["cell_id"] for lease in store.open_lease(name)} for name in NAMES}
    for name in NAMES:
        mine = [e for e in events if e.annotator == name]
        label = ("round", "elongated")[NAMES[name]]
        assert len(mine) == N_LABELS and {e.label for e in mine} == {label}
        assert {e.cell_id for e in mine} <= batches[name]  # labeled what they were handed
        assert all(e.source == "batch" and e.round_id is not None for e in mine)
        assert left[name] == batches[name] - {e.cell_id for e in mine}
    assert len({e.cell_id for e in events}) == 2 * N_LABELS

"""Markup in names is shown as text, in a real browser (Debian's chromium through Playwright).

A copy of the small demo project gets channel names, class names, an annotator, a plate
(metadata) and a project name that hold HTML, Markdown images and links and emphasis, each
pointing at a bait URL: two free ports on 127.0.0.1 with nothing listening, and
``evil.example``. Every page (Label, Review, Discover, Export, Project) is visited; on each,
no ``<img>`` or ``<a>`` made from a name is in the DOM, the names' literal text is visible,
and no request the page makes goes to a bait URL (``page.on("request")``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from app_pages.widgets.text import WORD_JOINER
from tests.app.browser import chromium, free_port, require_browser, running_app, wait_idle

pytestmark = [pytest.mark.slow, pytest.mark.browser]
PORT_IMG, PORT_MD = free_port(), free_port()
BAITS = (f"127.0.0.1:{PORT_IMG}", f"127.0.0.1:{PORT_MD}", "evil.example")


def _name(i: int) -> str:
    return (f'<img src="http://127.0.0.1:{PORT_IMG}/x{i}.png"> '
            f"![x](http://127.0.0.1:{PORT_MD}/y{i}.png) [click](http://evil.example) **bold{i}**")  # fmt: skip


CHANNELS = [_name(0), f"<b>ch1</b> [link](http://evil.example/{PORT_MD}) :red[red]"]
ANNOTATOR = f"![a](http://127.0.0.1:{PORT_MD}/ann.png) <img src=http://127.0.0.1:{PORT_IMG}/a>"
PLATE = f"<img src=http://127.0.0.1:{PORT_IMG}/plate.png>"


@pytest.fixture(scope="module")
def project(tmp_path_factory, small_project) -> Path:
    """The small demo project with markup in every name, two rounds of labels and a model."""
    from labeling.config import load_config  # noqa: F401  (the project must still load)
    from labeling.loop import next_batch, submit_labels
    from labeling.project import open_project
    from labeling.workspace import set_channels

    require_browser()
    path = tmp_path_factory.mktemp("markup").resolve() / "proj"
    shutil.copytree(small_project, path)
    cells = pd.read_parquet(path / "cells.parquet")
    cells["treatment"] = PLATE  # a metadata column (plate itself keys the intensity ranges)
    cells.to_parquet(path / "cells.parquet", index=False)
    toml = (path / "project.toml").read_text()
    (path / "project.toml").write_text(
        toml.replace('name = "demo_project"', 'name = "**proj**"', 1)
    )
    proj = open_project(path)
    set_channels(proj, CHANNELS)
    truth = proj.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    names = {t: _name(i + 1) for i, t in enumerate(sorted(truth.unique()))}
    for _ in range(2):
        batch = next_batch(proj, 24, annotator=ANNOTATOR)
        submit_labels(proj, {b["cell_id"]: names[truth[b["cell_id"]]] for b in batch},
                      annotator=ANNOTATOR)  # fmt: skip
    proj.close()
    return path


@pytest.fixture(scope="module")
def app(project):
    env = {"PHENOSCOUT_TRAINER": "off", "PHENOSCOUT_ROOT": str(project.parent)}
    with running_app(project, env=env) as url:
        yield url


_FOREIGN = """baits => {
  const bad = [];
  for (const el of document.querySelectorAll('img, a, image, iframe, source, video, audio')) {
    const ref = el.getAttribute('src') || el.getAttribute('href') || '';
    if (baits.some(b => ref.includes(b))) bad.push(el.outerHTML.slice(0, 200));
  }
  return bad;
}"""


def test_markup_in_names_is_text_on_every_page(app, project):
    from labeling.store.labels import LabelStore

    with LabelStore(project / "labels.db") as store:
        classes = [c.name for c in store.classes(include_pseudo=False) if c.n_labeled]
    requests: list[str] = []
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1600})
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        pages = [("label", '[data-testid="stImage"] img', [classes[0], CHANNELS[0]]),
                 ("review", ".st-key-rv-tile-0 img", [classes[0]]),
                 ("discover", '[data-testid="stVegaLiteChart"]', []),
                 ("export", ".st-key-export-crops", []),
                 ("project", ".st-key-proj-demo button", ["**proj**"])]  # fmt: skip
        for name, selector, literal in pages:
            page.goto(f"{app}/{'' if name == 'label' else name}")
            page.wait_for_selector(selector, timeout=60000)
            wait_idle(page)
            page.wait_for_timeout(1500)  # late images and charts
            if name == "label":  # label the focused cell: the zoom shows the annotator
                old = page.evaluate("() => window.__psLabel.data.batch")
                page.locator(".st-key-annotator input").fill(ANNOTATOR)
                page.locator(".st-key-annotator input").press("Enter")
                page.wait_for_function(  # the annotator's own batch is drawn
                    "old => window.__psLabel.data.batch !== old", arg=old, timeout=60000
                )
                wait_idle(page)
                page.locator(".st-key-class-keys button").first.click()
                page.wait_for_timeout(800)
                wait_idle(page)
                page.locator(".st-key-focus-prev button").click()  # back to it: its history
                page.wait_for_timeout(800)
                wait_idle(page)
                literal = [*literal, ANNOTATOR]
            assert not page.locator('[data-testid="stException"]').count(), name
            assert page.evaluate(_FOREIGN, list(BAITS)) == [], name
            made = page.locator("strong, b, em").filter(has_text=re.compile(r"^(bold\d|ch1)$"))
            assert not made.count(), name  # no emphasis made from a name
            if name in ("label", "review"):  # the sidebar's channel list
                page.locator('[data-testid="stSidebar"] details summary').first.click()
                page.wait_for_timeout(300)
                literal = [*literal, *CHANNELS]
            text = page.locator("body").inner_text().replace(WORD_JOINER, "")
            for expected in literal:
                assert expected in text, (name, expected)
        context.close()
    bait_requests = [u for u in requests if any(b in u for b in BAITS)]
    assert bait_requests == []
    assert any(u.endswith("/_stcore/stream") or "/_stcore/" in u for u in requests)

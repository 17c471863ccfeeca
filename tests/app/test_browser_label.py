"""The Label and Discover pages as a biologist meets them, in a real browser (Debian's chromium
through Playwright; the trainer off): the focus stays in view, a key's mark shows at once,
tiles keep their size when labeled, nothing is cut or scrolls sideways at 1280x800 and
1920x1080, the page asks nothing of any host but its own server, classes beyond the ten digits
have keys, and the Discover page's numbers are the store's.

One app server for the module, on a copy of the small demo project; each test opens its own
browser page (a new session).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from labeling.store.labels import LabelStore
from tests.app.browser import (
    chromium,
    require_browser,
    running_app,
    stop_server,
    wait_count,
    wait_idle,
    wait_text,
    wait_tiles,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
TILE_BOXES = """() => [...document.querySelectorAll('div[class*="st-key-tile-"]')]
    .map(e => e.getBoundingClientRect())
    .map((r, i, all) => [Math.round(r.top - all[0].top), Math.round(r.height)])"""  # the page may
# scroll to follow the focus: tiles' places relative to the first, and their heights
FOCUSED = """() => {
    const e = document.querySelector('[data-ps-focus]');
    if (!e) return null;
    const r = e.getBoundingClientRect();
    return {tile: +e.className.match(/st-key-tile-(\\d+)/)[1], top: r.top, bottom: r.bottom};
}"""
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


@pytest.fixture(scope="module")
def project(tmp_path_factory, small_project) -> Path:
    require_browser()
    path = Path(shutil.copytree(small_project, tmp_path_factory.mktemp("label") / "proj"))
    with LabelStore(path / "labels.db") as store:
        store.add_class("round")  # key 1
        store.add_class("elongated")  # key 2
    yield path.resolve()
    stop_server(path.resolve())


@pytest.fixture(scope="module")
def app(project):
    with running_app(project, env={"PHENOSCOUT_TRAINER": "off"}) as url:
        yield url


@pytest.fixture(scope="module")
def browser(app):
    with chromium() as b:
        yield b


def _open(browser, url: str, width: int = 1280, height: int = 800):
    page = browser.new_page(viewport={"width": width, "height": height})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    wait_tiles(page)
    page.wait_for_selector("[data-ps-focus]", timeout=30000)  # the page's script is running
    page.mouse.click(width // 2, 5)  # the page, not an input, has the keys
    return page, requests


def _press(page, key: str, times: int = 1) -> None:
    for _ in range(times):
        page.keyboard.press(key)
        time.sleep(0.05)
    wait_idle(page)


def test_the_page_follows_the_focus(browser, app):
    page, _ = _open(browser, app)
    first = page.evaluate(FOCUSED)
    assert first["tile"] == 0
    _press(page, "ArrowRight", 14)  # to tile 15, below the fold of a 800 px window
    page.wait_for_function("() => document.querySelector('.st-key-tile-14 button')"
                           ".innerText.includes('(focused)')", timeout=15000)  # fmt: skip
    wait_idle(page)
    time.sleep(0.3)
    focused = page.evaluate(FOCUSED)
    assert focused["tile"] == 14
    assert 0 <= focused["top"] and focused["bottom"] <= 800, focused  # wholly in view
    _press(page, "ArrowLeft", 14)  # and back up
    time.sleep(0.3)
    focused = page.evaluate(FOCUSED)
    assert focused["tile"] == 0 and focused["top"] >= 0, focused
    page.close()


def test_a_key_marks_the_tile_at_once_and_tiles_keep_their_size(browser, app, project):
    page, _ = _open(browser, app)
    before = page.evaluate(TILE_BOXES)
    assert len(before) == 24
    _press(page, "ArrowRight")
    time.sleep(0.3)
    page.keyboard.press("1")  # labels tile 2: its mark shows before the server has answered
    page.wait_for_selector(".st-key-tile-1[data-ps-pending='round']", timeout=2000)
    page.locator(".st-key-tile-1").filter(has_text="✔ round").wait_for(timeout=15000)
    wait_idle(page)
    time.sleep(0.3)
    assert page.locator("[data-ps-pending]").count() == 0  # the server's drawing replaced it
    after = page.evaluate(TILE_BOXES)
    assert after == before  # no tile grew, no row moved
    for _ in range(5):  # a fast typist: every key is applied, none is lost
        page.keyboard.press("2")
        time.sleep(0.02)
    page.locator(".st-key-tile-6").filter(has_text="✔ elongated").wait_for(timeout=30000)
    wait_idle(page)
    with LabelStore(project / "labels.db") as store:
        labels = store.current_labels()
    assert sorted(labels.values()) == ["elongated"] * 5 + ["round"]
    assert page.evaluate(TILE_BOXES) == before
    page.close()


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_nothing_is_cut_or_scrolls_sideways(browser, app, size):
    page, _ = _open(browser, app, *size)
    for path in ("", "/discover", "/review"):
        if path:
            page.goto(app + path)
            wait_idle(page, 60000)
            time.sleep(1)
        widths = page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], (path, widths)
        cut = page.evaluate("""() => [...document.querySelectorAll(
                '[data-testid=stDataFrame], div[class*="st-key-tile-"]')]
            .map(e => e.getBoundingClientRect()).filter(r => r.right > innerWidth + 1).length""")
        assert cut == 0, path
        charts = page.evaluate("""() => [...document.querySelectorAll(
                '[data-testid=stVegaLiteChart]')].filter(c => {
            const inner = c.querySelector('svg, canvas');
            return inner && inner.getBoundingClientRect().right > c.getBoundingClientRect().right + 1;
        }).length""")
        assert charts == 0, path  # no chart cut on the right
        heights = page.evaluate("""() => [...document.querySelectorAll(
            'div[class*="st-key-rv-tile-"] [data-testid=stCaptionContainer]')]
            .map(e => Math.round(e.getBoundingClientRect().height))""")
        assert len(set(heights)) <= 1, heights  # no cell id wraps on a Review tile
    page.close()


def test_the_page_asks_nothing_of_other_hosts(browser, app):
    page, requests = _open(browser, app)
    for path in ("/project", "/fields", "/discover", "/review", "/export", "/label"):
        page.goto(app + path)
        wait_idle(page, 60000)
    time.sleep(1)
    hosts = {urlsplit(u).hostname for u in requests if not u.startswith(("data:", "blob:"))}
    assert hosts and hosts <= LOOPBACK, sorted(hosts - LOOPBACK)
    page.close()


def test_classes_beyond_ten_have_keys_and_a_type_to_find_box(browser, app, project):
    with LabelStore(project / "labels.db") as store:
        for i in range(3, 15):  # 14 classes in all
            store.add_class(f"phenotype {i}")
        eleventh = store.classes(include_pseudo=False)[10]
    assert eleventh.key and not eleventh.key.isdigit()
    page, _ = _open(browser, app)
    focused = page.evaluate(FOCUSED)["tile"]
    _press(page, eleventh.key)
    page.locator(f".st-key-tile-{focused}").filter(has_text=f"✔ {eleventh.name}").wait_for(
        timeout=15000
    )
    focused = page.evaluate(FOCUSED)["tile"]
    page.locator('[data-testid="stSelectbox"]').first.click()
    page.keyboard.type("phenotype 14")
    page.keyboard.press("Enter")
    page.locator(f".st-key-tile-{focused}").filter(has_text="✔ phenotype 14").wait_for(
        timeout=15000
    )
    page.close()


def test_discover_numbers_are_the_stores(browser, app, project):
    from labeling.loop import next_batch, submit_labels
    from labeling.project import open_project
    from labeling.reports.report import stopping_signal

    proj = open_project(project)
    truth = proj.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    for name in sorted(truth.unique()):
        if name not in {c.name for c in proj.store.classes()}:
            proj.store.add_class(name)
    for _ in range(2):
        batch = next_batch(proj, 24, "bot", resume=False)
        submit_labels(proj, {it["cell_id"]: truth[it["cell_id"]] for it in batch}, "bot")
    events = proj.store.label_events()
    stop = stopping_signal(events)

    proj.close()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(app + "/discover")
    wait_text(page, "Cross-validated quality", 60000)
    wait_idle(page, 60000)
    wait_count(page, '[data-testid="stMetric"]', 4, 60000)
    texts = page.locator('[data-testid="stMetric"]').all_inner_texts()
    lines = [[x.strip() for x in m.split("\n") if x.strip()] for m in texts]
    metrics = {m[0]: m[-1] for m in lines if m}  # label first, value last
    assert "Labels" in metrics, (texts, page.locator("body").inner_text()[:1500])
    assert metrics["Labels"] == str(stop["n_labels"]) == str(len(events))
    assert metrics["Classes found"] == str(stop["n_classes"])
    assert metrics["Labels since last new class"] == str(stop["labels_since_new_class"])
    p = float(stop["p_new_class"])
    shown = f"{p:.0%}" if p >= 0.1 or p == 0 else f"{p:.1%}"
    high = float(stop["p_new_class_high"])
    if stop["n_random"] < 30:  # from so few cells the headline is the upper end alone
        top = f"{high:.0%}" if high >= 0.1 else f"{high:.1%}"
        assert metrics["Chance of a new class"] == f"≤ {top}"
    else:
        assert metrics["Chance of a new class"].split(" (")[0] == shown  # with "(≤ high)"
    words = page.locator(".st-key-stop-words").inner_text()
    assert f"Rests on the {stop['n_random']} random cells labeled" in words
    assert f"of {stop['n_labels']} labels" in words and shown in words
    if stop["n_random"] < 30:  # no interval that says nothing
        assert "rough guide" in words
        assert page.locator(".st-key-prevalence-chart").count() == 0
    page.close()


def test_next_with_open_tiles_asks_and_keys_typed_meanwhile_label_the_right_batch(
    browser, app, project
):
    page, _ = _open(browser, app + "?annotator=nexter")  # a batch of its own, all 24 open
    old = page.evaluate("() => window.__psLabel.data.batch")
    first = page.evaluate("() => window.__psLabel.data.ids[0]")
    page.keyboard.press("n")  # open tiles: the server only asks
    page.keyboard.press("1")  # at once: held until the answer, then for this batch's tile 1
    page.locator(".st-key-tile-0").filter(has_text="✔ round").wait_for(timeout=30000)
    wait_idle(page)
    assert page.evaluate("() => window.__psLabel.data.batch") == old
    with LabelStore(project / "labels.db") as store:
        assert store.current_labels()[first] == "round"
    page.keyboard.press("n")
    page.get_by_text("23 cells of this batch have no label yet").wait_for(timeout=30000)
    page.keyboard.press("n")  # asked twice in a row (as soon as asked): the next batch
    page.keyboard.press("1")  # at once: for the first cell of the batch on its way
    page.wait_for_function(
        "old => window.__psLabel.data.batch !== old", arg=old, timeout=60000
    )  # fmt: skip
    page.locator(".st-key-tile-0").filter(has_text="✔ round").wait_for(timeout=30000)
    new_first = page.evaluate("() => window.__psLabel.data.ids[0]")
    with LabelStore(project / "labels.db") as store:
        assert new_first != first and store.current_labels()[new_first] == "round"
        assert store.history(new_first)[-1].annotator == "nexter"
    page.close()


def test_a_key_whose_state_the_server_never_got_is_sent_again(browser, app, project):
    page, _ = _open(browser, app + "?annotator=dropped")
    # a key queued but its state value dropped on the way (seen under load when a click's run
    # overtook the key's): in the queue, never sent
    first = _queue_unsent_key(page)
    page.locator(".st-key-focus-5 button").first.click()  # any run: its drawing sends it again
    _wait_labeled_round(page, project, first, timeout_ms=30000)


def test_a_key_sent_while_the_server_was_away_arrives_without_another_key(browser, app, project):
    page, _ = _open(browser, app + "?annotator=away")
    # a key whose state value went nowhere (the server restarting, the connection lost) and no
    # run after it: the page itself sends the queue again, no other key or click needed
    first = _queue_unsent_key(page)
    _wait_labeled_round(page, project, first, timeout_ms=40000)


def _queue_unsent_key(page) -> str:
    """Put the key "round" for tile 1 in the page's queue without sending it; its cell id."""
    first = page.evaluate("() => window.__psLabel.data.ids[0]")
    page.evaluate(
        """cell => { const ps = window.__psLabel; ps.seq += 1;
        ps.queue.push([ps.seq, "label", "round", cell]); }""",
        first,
    )
    return first


def _wait_labeled_round(page, project: Path, cell: str, timeout_ms: int) -> None:
    """Wait until tile 1 shows "round", check the store says so, close the page."""
    page.locator(".st-key-tile-0").filter(has_text="✔ round").wait_for(timeout=timeout_ms)
    with LabelStore(project / "labels.db") as store:
        assert store.current_labels()[cell] == "round"
    page.close()


def test_enter_in_the_annotator_box_gives_the_keys_back_to_the_tiles(browser, app, project):
    page, _ = _open(browser, app + "?annotator=entering")
    old = page.evaluate("() => window.__psLabel.data.batch")
    box = page.locator(".st-key-annotator input")
    box.fill("alice")
    box.press("Enter")
    page.wait_for_function(  # alice's own batch
        "old => window.__psLabel.data.batch !== old", arg=old, timeout=30000
    )  # fmt: skip
    wait_idle(page)
    first = page.evaluate("() => window.__psLabel.data.ids[0]")
    page.keyboard.press("1")  # a class key, not a letter of the name
    page.locator(".st-key-tile-0").filter(has_text="✔ round").wait_for(timeout=30000)
    assert box.input_value() == "alice"
    with LabelStore(project / "labels.db") as store:
        assert store.history(first)[-1].annotator == "alice"
    page.close()


def test_class_keys_label_while_a_slider_has_the_focus(browser, app, project):
    page, _ = _open(browser, app + "?annotator=slider")
    first = page.evaluate("() => window.__psLabel.data.ids[0]")
    page.get_by_text("Channels: colour").first.click()
    thumb = page.locator('[data-testid="stSlider"] input[type=range]').nth(1)
    thumb.focus()
    page.keyboard.press("ArrowLeft")  # the slider's own key: max shown 1.00 -> 0.99
    wait_idle(page)
    assert page.evaluate("() => document.activeElement.type") == "range"
    page.keyboard.press("1")  # a class key: the focused tile, not the slider
    page.locator(".st-key-tile-0").filter(has_text="✔ round").wait_for(timeout=30000)
    with LabelStore(project / "labels.db") as store:
        assert store.current_labels()[first] == "round"
    page.close()


def test_a_click_on_the_focused_tile_moves_the_focus_before_the_next_key(browser, app, project):
    # an annotator of its own (from the address): a batch of its own, focus on tile 1
    page, _ = _open(browser, app + "?annotator=clicker")
    ids = page.evaluate("() => window.__psLabel.data.ids")
    assert page.evaluate(FOCUSED)["tile"] == 0
    page.locator(".st-key-tile-0 [class*='st-key-pick-'] button").first.click(no_wait_after=True)
    page.keyboard.press("2")  # at once: for tile 2, not a relabel of tile 1
    page.locator(".st-key-tile-1").filter(has_text="✔ elongated").wait_for(timeout=30000)
    page.locator(".st-key-tile-0").filter(has_text="✔ round").wait_for(timeout=30000)
    wait_idle(page)
    with LabelStore(project / "labels.db") as store:
        assert [e.label for e in store.history(ids[0])] == ["round"]
        assert store.current_labels()[ids[1]] == "elongated"
        assert store.history(ids[1])[-1].annotator == "clicker"
    page.close()


def test_z_at_once_after_a_key_undoes_it_for_good(browser, app, project):
    page, _ = _open(browser, app + "?annotator=quickundo")
    first = page.evaluate("() => window.__psLabel.data.ids[0]")
    page.keyboard.press("1")
    time.sleep(0.25)  # the drawing of the key's label is on its way
    page.keyboard.press("z")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _undone(project, first):
        time.sleep(0.2)
    time.sleep(3)  # the page's resends and the runs they start (the label came back at 1 s)
    wait_idle(page)
    with LabelStore(project / "labels.db") as store:
        assert first not in store.current_labels()
        assert [(e.label, e.undone) for e in store.history(first)] == [("round", True)]
    page.close()


def _undone(project: Path, cell: str) -> bool:
    with LabelStore(project / "labels.db") as store:
        return any(e.undone for e in store.history(cell))


def test_class_buttons_name_their_class_on_hover(browser, app, project):
    page, _ = _open(browser, app + "?annotator=hover")
    buttons = page.locator(".st-key-tile-0 [class*='st-key-pick-'] button")
    assert buttons.nth(0).get_attribute("title") == "round (key 1)"
    assert buttons.nth(1).get_attribute("aria-label") == "elongated (key 2)"
    page.close()


def test_a_narrow_window_shows_fewer_larger_tiles(browser, app, project):
    page, _ = _open(browser, app + "?annotator=narrow", width=900, height=800)
    boxes = page.evaluate("""() => [...document.querySelectorAll('div[class*="st-key-tile-"]')]
        .map(e => e.getBoundingClientRect()).map(r => [Math.round(r.top), r.width])""")
    first_row = [w for top, w in boxes if top == boxes[0][0]]
    assert len(first_row) == 3 and min(w for _, w in boxes) > 150, boxes
    page.close()


def test_keys_after_the_batch_is_done_relabel_nothing_until_a_tile_is_chosen(browser, app, project):
    page, _ = _open(browser, app + "?annotator=doubletap")
    ids = page.evaluate("() => window.__psLabel.data.ids")
    for _ in ids:
        page.keyboard.press("1")
        time.sleep(0.05)
    page.keyboard.press("2")  # a double tap on the last tile
    page.get_by_text("Batch done").wait_for(timeout=60000)
    time.sleep(2)
    wait_idle(page)
    with LabelStore(project / "labels.db") as store:
        assert all([e.label for e in store.history(c)] == ["round"] for c in ids)
    page.keyboard.press("z")  # the last tile open again: the next key labels it, at once
    page.keyboard.press("2")
    last = len(ids) - 1
    page.locator(f".st-key-tile-{last}").filter(has_text="✔ elongated").wait_for(timeout=30000)
    wait_idle(page)
    page.keyboard.press("ArrowLeft")  # a tile chosen: its key relabels it
    page.keyboard.press("2")
    page.locator(f".st-key-tile-{last - 1}").filter(has_text="✔ elongated").wait_for(timeout=30000)
    with LabelStore(project / "labels.db") as store:
        labels = store.current_labels()
        assert labels[ids[last]] == labels[ids[last - 1]] == "elongated"
    page.close()


def test_the_label_address_opens_the_label_page(browser, app):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(app + "/label")  # a bookmark of the page's name: no "Page not found"
    wait_tiles(page)
    wait_idle(page)
    assert "Page not found" not in page.locator("body").inner_text()
    page.close()

"""The app's speed in a real browser (Debian's chromium through Playwright).

(a) **First batch**: from nothing to the first batch of tiles on screen, the path of
    ``./scripts/demo`` (install done): ``phenoscout demo`` (generation) + ``phenoscout init``
    (ingest + morphology features) + ``phenoscout app`` + the browser's first page, in a fresh
    folder. Target: <= 60 s. Skipped with ``--no-first``.
(b) **Next batch**: the ``n`` key until the next batch is fully drawn (24 tiles with their
    images loaded, the script run over), on a 20,000-cell demo. Target: p95 <= 1 s.
(c) **Label**: a class key press, and a click on a tile's class button, until the tile shows
    its mark (the page marks it at once, before the server has answered) and until the server's
    drawing shows the label; timed in the page from the input event to the animation frame that
    shows it. Target: p95 of key/click -> mark <= 0.5 s.

The trainer is off unless ``--trainer on`` (then ``phenoscout app`` starts it, as a user gets
it). Each round labels four tiles by key and two by click, then asks for the next batch. Prints
a markdown table: median, p95 and max of each measure. Usage::

    python benchmarks/bench_browser.py [--quick] [--rounds 10] [--cells 20000] [--trainer off]
        [--first-cells 10000] [--no-first] [--workdir DIR] [--project PROJECT]

``--quick``: 3 rounds, for a smoke run on a busy machine. ``--workdir`` keeps the 20,000-cell
screen there between runs (generated once); (a) always starts from an empty folder. Needs
/usr/bin/chromium and playwright (never ``playwright install``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.app.browser import chromium, running_app, wait_idle  # noqa: E402

EXE = Path(sys.executable).parent / "phenoscout"
CHANNELS = "DNA,Cytoplasm"  # as scripts/demo
BATCH = 24
VIEWPORT = {"width": 1400, "height": 2000}
_STATUS = """() => document.querySelector('[data-testid=stMain]').innerText.split('\\n')
    .filter(l => l.startsWith('PhenoScout') || l.includes('trainer')).join(' / ')"""
_TILES_DRAWN = """n => {
    const imgs = [...document.querySelectorAll('div[class*="st-key-tile-"] img')];
    const pills = document.querySelectorAll('div[class*="st-key-pick-"] button');
    return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0)
        && pills.length >= n && !document.querySelector('[data-testid=stSkeleton]');
}"""


def _run(*args: str | Path, cwd: Path) -> None:
    subprocess.run([str(EXE), *map(str, args)], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _make_project(folder: Path, cells: int) -> tuple[Path, dict[str, float]]:
    """``phenoscout demo`` + ``phenoscout init`` in ``folder`` (as scripts/demo); seconds each."""
    t0 = time.perf_counter()
    if not (folder / "demo_data" / "labels.csv").exists():
        _run("demo", "--out", "demo_data", "--cells", cells, "--seed", 0, cwd=folder)
    t1 = time.perf_counter()
    _run("init", "demo_project", "--crops", "demo_data", "--channels", CHANNELS, cwd=folder)
    seconds = {"generation": t1 - t0, "ingest + features": time.perf_counter() - t1}
    return folder / "demo_project", seconds


def _wait_tiles(page, timeout_ms: int = 120000) -> None:
    page.wait_for_function(_TILES_DRAWN, arg=BATCH, timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def _wait_text(page, text: str, timeout_ms: int = 30000) -> None:
    page.wait_for_function("t => document.body.innerText.includes(t)", arg=text, timeout=timeout_ms)


def first_batch(cells: int) -> dict[str, float]:
    """(a): seconds from an empty folder to the first batch on screen, and its parts."""
    with tempfile.TemporaryDirectory(prefix="bench-first-") as tmp:
        t0 = time.perf_counter()
        project, parts = _make_project(Path(tmp), cells)
        t1 = time.perf_counter()
        with running_app(project) as url, chromium() as browser:
            t2 = time.perf_counter()
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            _wait_tiles(page)
            t3 = time.perf_counter()
    return {**parts, "app start": t2 - t1, "first page": t3 - t2, "total": t3 - t0}


def _mark(tile: int, name: str) -> str:
    """Selector of ``tile`` showing ``name`` as pending (the page's own mark)."""
    return f".st-key-tile-{tile}[data-ps-pending='{name}']"


#: Timed in the page, in its own clock: from the input event's time stamp (a key press, or the
#: pointer going down) to the first animation frame that shows the mark, and the one that shows
#: the server's label ("✔ name" in the tile). Playwright's own delays are not counted.
_ARM = """([tile, name]) => {
    const b = (window.__bench = {t0: null, mark: null, drawn: null});
    const el = () => document.querySelector(`.st-key-tile-${tile}`);
    const drawn = () => el() && el().innerText.includes(`✔ ${name}`);
    const input = (e) => { if (b.t0 === null) b.t0 = e.timeStamp; };
    document.addEventListener('keydown', input, {capture: true, once: true});
    document.addEventListener('pointerdown', input, {capture: true, once: true});
    const tick = (now) => {
        if (b.t0 !== null) {
            const pending = el() && el().getAttribute('data-ps-pending') === name;
            if (b.mark === null && (pending || drawn())) b.mark = now;
            if (b.drawn === null && drawn()) b.drawn = now;
        }
        if (b.drawn === null) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
}"""


def _timed(page, tile: int, name: str, act) -> tuple[float, float]:
    """Run ``act()`` (a key press or click on ``tile``); seconds to the mark and the label."""
    page.evaluate(_ARM, [tile, name])
    act()
    page.wait_for_function("() => window.__bench.drawn !== null", timeout=30000)
    b = page.evaluate("() => window.__bench")
    wait_idle(page)
    return (b["mark"] - b["t0"]) / 1000, (b["drawn"] - b["t0"]) / 1000


def _label_by_key(page, tile: int, key: str, name: str) -> tuple[float, float]:
    """Press class key ``key`` (``tile`` has the focus)."""
    page.locator(f".st-key-tile-{tile}[data-ps-focus]").wait_for(timeout=30000)
    return _timed(page, tile, name, lambda: page.keyboard.press(key))


def _label_by_click(page, tile: int, key: str, name: str) -> tuple[float, float]:
    """Click ``tile``'s class button ``key``."""
    button = page.locator(f".st-key-tile-{tile} [role='radiogroup'] button").filter(
        has_text=re.compile(f"^{re.escape(key)}$")
    )
    button.first.scroll_into_view_if_needed()
    return _timed(page, tile, name, lambda: button.first.click())


def labeling_rounds(
    screen_dir: Path, cells: int, rounds: int, trainer: str, project: Path | None = None
) -> dict[str, list[float]]:
    """(b) and (c) on the 20,000-cell demo (or on ``project``, e.g. bench_scale's), the trainer
    ``on`` or ``off``."""
    from labeling.store import LabelStore

    if project is None:
        screen_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(screen_dir / "demo_project", ignore_errors=True)
        project, _ = _make_project(screen_dir, cells)
    with LabelStore(project / "labels.db") as store:
        keyed = [c for c in store.classes(include_pseudo=False) if c.key]
        # a fresh demo: two new classes, keys 1 and 2; a labeled project: its first two
        classes = keyed[:2] if len(keyed) >= 2 else [store.add_class("round"),
                                                      store.add_class("elongated")]  # fmt: skip
    out: dict[str, list] = {k: [] for k in ("next batch", "key mark", "key drawn",
                                            "click mark", "click drawn", "server GiB")}  # fmt: skip
    env = {"PHENOSCOUT_TRAINER": "off"} if trainer == "off" else {}
    if trainer == "on":
        os.environ.pop("PHENOSCOUT_TRAINER", None)
    with running_app(project, env=env) as url, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        _wait_tiles(page)
        page.mouse.click(700, 5)  # the page, not an input, gets the keys
        for r in range(rounds):
            for j, tile in enumerate((0, 1, 2, 3)):
                c = classes[(r + j) % 2]
                mark, drawn = _label_by_key(page, tile, c.key, c.name)
                out["key mark"].append(mark)
                out["key drawn"].append(drawn)
            for j, tile in enumerate((10, 11)):
                c = classes[(r + j) % 2]
                mark, drawn = _label_by_click(page, tile, c.key, c.name)
                out["click mark"].append(mark)
                out["click drawn"].append(drawn)
            _wait_text(page, "this batch 6/24 labeled")
            page.mouse.click(700, 5)
            page.keyboard.press("n")  # 18 tiles open: the first n asks
            _wait_text(page, "cells of this batch have no label yet")
            t0 = time.perf_counter()
            page.keyboard.press("n")
            _wait_text(page, "this batch 0/24 labeled")
            _wait_tiles(page)
            out["next batch"].append(time.perf_counter() - t0)
            out["server GiB"].append(_server_rss(project) / 2**30)
        out["status"] = [page.evaluate(_STATUS)]
    return out


def _server_rss(project: Path) -> int:
    """Resident bytes of the ``phenoscout app PROJECT`` process and its children (the trainer
    when it runs; never the browser)."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())  # `phenoscout app` execs streamlit
            if "streamlit" in cmd and str(project) in cmd:
                tree = [proc, *proc.children(recursive=True)]
                return sum(p.memory_info().rss for p in tree)
        except psutil.Error:
            continue
    return 0


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def _row(name: str, values: list[float], target: float | None) -> str:
    med, p95, worst = statistics.median(values), _p95(values), max(values)
    ok = "-" if target is None else ("yes" if p95 <= target else "no")
    goal = "-" if target is None else f"p95 <= {target:g}"
    return f"| {name} | {med:.2f} | {p95:.2f} | {worst:.2f} | {len(values)} | {goal} | {ok} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds: a smoke run")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of (b) (4+2 labels each)")
    parser.add_argument("--cells", type=int, default=20000, help="cells of the (b)/(c) demo")
    parser.add_argument("--trainer", choices=("off", "on"), default="off",
                        help="the project's background trainer during (b)/(c)")  # fmt: skip
    parser.add_argument(
        "--first-cells", type=int, default=10000, help="cells of the (a) demo (as scripts/demo)"
    )
    parser.add_argument("--no-first", action="store_true", help="skip (a)")
    parser.add_argument("--workdir", type=Path, help="keep the (b)/(c) screen here")
    parser.add_argument("--project", type=Path,
                        help="run (b)/(c) on this project (e.g. bench_scale's million cells) "
                             "instead of a fresh demo; two classes are added to it")  # fmt: skip
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds

    first = None if args.no_first else first_batch(args.first_cells)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-rounds-")
    try:
        loop = labeling_rounds(
            args.workdir or Path(tmp.name), args.cells, rounds, args.trainer, args.project
        )
    finally:
        if tmp is not None:
            tmp.cleanup()

    if first is not None:
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in first.items() if k != "total")
        print(f"\n(a) fresh demo of {args.first_cells} cells to the first batch: {parts}")
    screen = args.project or f"{args.cells}-cell demo"
    print(f"(b), (c): {screen}, {rounds} rounds, trainer {args.trainer}; status:")
    print("    " + str(loop.pop("status")[0]).replace("\n", " "))
    print("\n| measure | median s | p95 s | max s | n | target | met |")
    print("|---|---|---|---|---|---|---|")
    if first is not None:
        print(_row(f"(a) fresh demo ({args.first_cells} cells) -> first batch",
                   [first["total"]], 60))  # fmt: skip
    print(_row("(b) n key -> next batch drawn", loop["next batch"], 1))
    rounds_s = ", ".join(f"{v:.2f}" for v in loop["next batch"])
    print(_row("(c) key -> tile marked", loop["key mark"], 0.5))
    print(_row("(c) click -> tile marked", loop["click mark"], 0.5))
    print(_row("(c) key -> label drawn by the server", loop["key drawn"], None))
    print(_row("(c) click -> label drawn by the server", loop["click drawn"], None))
    print(f"\n(b) per round, s: {rounds_s}")
    print(f"app server resident memory after each round, max: {max(loop['server GiB']):.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

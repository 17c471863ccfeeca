"""The app's speed in a real browser (Debian's chromium through Playwright).

(a) **First batch**: from nothing to the first batch of tiles on screen, the path of
    ``./scripts/demo`` (install done): ``phenoscout demo`` (generation) + ``phenoscout init``
    (ingest + morphology features) + ``phenoscout app`` + the browser's first page, in a fresh
    folder. Target: <= 60 s.
(b) **Next batch**: the "Next batch" click until the next batch is fully drawn (24 tiles with
    their images loaded, the script run over), on a 20,000-cell demo with the project's trainer
    running as ``phenoscout app`` starts it. Target: <= 2 s; median and max over the rounds.
(c) **Label**: a click on a tile's class button until the tile shows the label, and a class
    key press until the focused tile shows it. Target: <= 0.5 s; median and max.

Each round of (b) labels two tiles by key and two by click (the samples of (c)) and then asks
for the next batch. Prints a markdown table. Usage::

    python benchmarks/bench_browser.py [--quick] [--rounds 10] [--cells 20000]
        [--first-cells 10000] [--workdir DIR]

``--quick``: 3 rounds (12 label samples), for a smoke run on a busy machine. ``--workdir``
keeps the 20,000-cell screen there between runs (generated once); (a) always starts from an
empty folder. Needs /usr/bin/chromium and playwright (never ``playwright install``).
"""

from __future__ import annotations

import argparse
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


def _label_by_key(page, tile: int, key: str, name: str) -> float:
    """Press class key ``key`` (``tile`` has the focus); seconds until the tile shows ``name``."""
    page.locator(f".st-key-tile-{tile}").filter(has_text="(focused)").wait_for(timeout=30000)
    page.mouse.click(700, 5)  # the page, not an input, gets the key
    t0 = time.perf_counter()
    page.keyboard.press(key)
    page.locator(f".st-key-tile-{tile}").filter(has_text=f"✔ {name}").wait_for(timeout=30000)
    seconds = time.perf_counter() - t0
    wait_idle(page)
    return seconds


def _label_by_click(page, tile: int, key: str, name: str) -> float:
    """Click ``tile``'s class button ``key``; seconds until the tile shows ``name``."""
    button = page.locator(f".st-key-tile-{tile} [role='radiogroup'] button").filter(
        has_text=re.compile(f"^{re.escape(key)}$")
    )
    t0 = time.perf_counter()
    button.first.click()
    page.locator(f".st-key-tile-{tile}").filter(has_text=f"✔ {name}").wait_for(timeout=30000)
    seconds = time.perf_counter() - t0
    wait_idle(page)
    return seconds


def labeling_rounds(screen_dir: Path, cells: int, rounds: int) -> dict[str, list[float]]:
    """(b) and (c) on the 20,000-cell demo with the trainer running."""
    from labeling.store.labels import LabelStore

    screen_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(screen_dir / "demo_project", ignore_errors=True)
    project, _ = _make_project(screen_dir, cells)
    with LabelStore(project / "labels.db") as store:
        classes = [store.add_class("round"), store.add_class("elongated")]  # keys 1 and 2
    out: dict[str, list] = {"next batch": [], "label click": [], "label key": []}
    with running_app(project) as url, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        _wait_tiles(page)
        for r in range(rounds):
            for j, tile in enumerate((0, 1)):
                c = classes[(r + j) % 2]
                out["label key"].append(_label_by_key(page, tile, c.key, c.name))
            for j, tile in enumerate((5, 6)):
                c = classes[(r + j) % 2]
                out["label click"].append(_label_by_click(page, tile, c.key, c.name))
            _wait_text(page, "this batch 4/24 labeled")
            t0 = time.perf_counter()
            page.locator(".st-key-next-batch button").first.click()
            _wait_text(page, "this batch 0/24 labeled")
            _wait_tiles(page)
            out["next batch"].append(time.perf_counter() - t0)
        out["status"] = [page.evaluate(_STATUS)]
    return out


def _row(name: str, values: list[float], target: float) -> str:
    med, worst = statistics.median(values), max(values)
    ok = "yes" if worst <= target else ("median only" if med <= target else "no")
    return f"| {name} | {med:.2f} | {worst:.2f} | {len(values)} | <= {target:g} | {ok} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds: a smoke run")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of (b) (2+2 labels each)")
    parser.add_argument("--cells", type=int, default=20000, help="cells of the (b)/(c) demo")
    parser.add_argument(
        "--first-cells", type=int, default=10000, help="cells of the (a) demo (as scripts/demo)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the (b)/(c) screen here")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds

    first = first_batch(args.first_cells)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-rounds-")
    try:
        loop = labeling_rounds(args.workdir or Path(tmp.name), args.cells, rounds)
    finally:
        if tmp is not None:
            tmp.cleanup()

    parts = ", ".join(f"{k} {v:.1f} s" for k, v in first.items() if k != "total")
    print(f"\n(a) fresh demo of {args.first_cells} cells to the first batch: {parts}")
    print(f"(b), (c): {args.cells}-cell demo, {rounds} rounds; status at the end:")
    print("    " + str(loop.pop("status")[0]).replace("\n", " "))
    print("\n| measure | median s | max s | n | target s | met |")
    print("|---|---|---|---|---|---|")
    print(_row(f"(a) fresh demo ({args.first_cells} cells) -> first batch", [first["total"]], 60))
    print(_row("(b) Next batch -> next batch drawn (trainer on)", loop["next batch"], 2))
    print(_row("(c) label click -> shown", loop["label click"], 0.5))
    print(_row("(c) label key -> shown", loop["label key"], 0.5))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

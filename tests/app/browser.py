"""Helpers for real-browser tests: start the app on a free port, drive Debian's chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


TILES = 'div[class*="st-key-pick-"] button'  # the tiles' class buttons: drawn after the images


def require_browser() -> None:
    """Skip (or, in CI, fail) when chromium or playwright is missing."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (pip)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("PHENOSCOUT_REQUIRE_BROWSER"):
            pytest.fail(reason + "; PHENOSCOUT_REQUIRE_BROWSER is set, so this is required")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(project: Path, timeout_s: float = 60, env: dict[str, str] | None = None):
    """Start ``phenoscout app PROJECT`` on a free port (``env`` added to the environment, e.g.
    ``PHENOSCOUT_TRAINER=off``); yield its URL; stop it afterwards. A port taken between
    :func:`free_port` and the server's start (another process's) means another port."""
    for attempt in range(3):
        proc, log, url = _start_app(project, env)
        try:
            if _wait_health(proc, url, timeout_s):
                yield url
                return
            taken = "is not available" in Path(log.name).read_text()  # the port, meanwhile
            if not taken or attempt == 2:
                raise RuntimeError(f"the app did not start on {url} (exit {proc.poll()})")
        finally:
            _stop(proc, log)


def _start_app(project: Path, env: dict[str, str] | None):
    port = free_port()
    exe = shutil.which("phenoscout", path=str(Path(sys.executable).parent))
    cmd = [exe, "app", str(project), "--port", str(port)]
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"app-{port}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})  # fmt: skip
    return proc, log, f"http://127.0.0.1:{port}"


def _wait_health(proc: subprocess.Popen, url: str, timeout_s: float) -> bool:
    """True once the server answers; False when it exited or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            return True
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.2)


def _stop(proc: subprocess.Popen, log) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@contextmanager
def chromium():
    """Debian's chromium driven by Playwright (a Browser: ``new_page`` gives a fresh session)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    """A Playwright page in Debian's chromium."""
    with chromium() as browser:
        yield browser.new_page(viewport={"width": width, "height": height})


def wait_idle(page, timeout_ms: int = 30000) -> None:
    """Wait until Streamlit has finished running the script."""
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout_ms)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(out), full_page=True)
    return out


def wait_tiles(page) -> None:
    """Wait for 24 tiles with their class buttons (drawn lazily, after a skeleton)."""
    page.wait_for_selector('[data-testid="stImage"] img', timeout=60000)
    page.wait_for_function(
        f"() => document.querySelectorAll('{TILES}').length >= 24 * 3"
        " && !document.querySelector('[data-testid=stSkeleton]')",
        timeout=60000,
    )
    wait_idle(page)


def stop_server(project: Path) -> None:
    """Stop the Streamlit server started for ``project``: ``phenoscout app`` runs it as a child
    process and stopping the parent (as running_app does) leaves it running. Only the process
    whose command line names this test's own project folder is stopped (Linux /proc)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"streamlit" in a for a in argv) and str(project).encode() in argv:
            os.kill(int(proc.name), signal.SIGTERM)


def wait_count(page, selector: str, n: int, timeout_ms: int = 30000) -> None:
    """Wait until the page holds at least ``n`` elements matching ``selector`` (the page streams
    in: Streamlit's status widget can be gone before the last element is drawn)."""
    page.wait_for_function(
        "([s, n]) => document.querySelectorAll(s).length >= n",
        arg=[selector, n],
        timeout=timeout_ms,
    )


def wait_text(page, text: str, timeout_ms: int = 30000) -> None:
    """Wait until the page's text contains ``text``."""
    page.wait_for_function("t => document.body.innerText.includes(t)", arg=text, timeout=timeout_ms)

"""The real background trainer (``phenoscout train --watch``) started the way the app starts it:
one per project, stopped cleanly, and gone soon after the app that started it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import wait_until

pytest.importorskip("torch")

import labeling.training.process as tp  # noqa: E402
from labeling.training.process import (  # noqa: E402
    ensure_trainer,
    pid_alive,
    stop_trainer,
    trainer_running,
    trainer_status,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path, small_project, monkeypatch):
    monkeypatch.setenv(tp.TRAINER_ENV, "on")
    path = tmp_path / "p"
    shutil.copytree(small_project, path)
    yield path
    stop_trainer(path, timeout_s=20)
    for pid, child in list(tp._CHILDREN.items()):  # reap what this test started
        if child.poll() is None:
            child.kill()
        child.wait(10)
        tp._CHILDREN.pop(pid, None)


def _status_file(project):
    try:
        return json.loads((project / "models" / "trainer.json").read_text())
    except (OSError, ValueError):
        return {}


def test_app_starts_one_trainer_and_stops_it(project):
    first = ensure_trainer(project, device="cpu")
    assert first.alive and first.state == "starting"
    assert ensure_trainer(project, device="cpu").pid == first.pid
    # the trainer takes its lock and reports (importing torch takes a few seconds)
    reported = lambda: trainer_running(project) and _status_file(project).get("pid") == first.pid  # noqa: E731
    assert wait_until(reported, timeout=90)
    assert ensure_trainer(project, device="cpu").pid == first.pid and len(tp._CHILDREN) == 1
    status = trainer_status(project)
    assert status.alive and status.device == "cpu"
    assert status.state in ("pretraining", "embedding", "idle", "starting")
    assert stop_trainer(project, timeout_s=30)
    data = _status_file(project)
    assert data["state"] == "stopped" and "SIGTERM" in data["message"]
    assert not trainer_running(project) and trainer_status(project).describe() == "not running"


APP = """
import json, sys, time
from pathlib import Path
from labeling.training.process import ensure_trainer
pid = ensure_trainer(sys.argv[1], device="cpu").pid
status = Path(sys.argv[1]) / "models" / "trainer.json"
end = time.monotonic() + 90
while time.monotonic() < end:  # until the trainer reports, then this "app" ends
    try:
        if json.loads(status.read_text()).get("pid") == pid:
            break
    except (OSError, ValueError):
        pass
    time.sleep(0.1)
print(pid)
"""


def test_trainer_ends_when_the_app_that_started_it_ends(project):
    app = subprocess.run(
        [sys.executable, "-c", APP, str(project)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    pid = int(app.stdout.strip())
    assert wait_until(lambda: not pid_alive(pid), timeout=60)
    data = _status_file(project)
    assert data["pid"] == pid and data["state"] == "stopped"
    assert "the app that started it" in data["message"] and "has ended" in data["message"]
    assert not trainer_running(project)
    assert "Traceback" not in (project / "models" / "trainer.log").read_text()

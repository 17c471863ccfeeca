"""Starting the background trainer and reading its status, with a stand-in trainer process
(a few lines of Python that hold the lock and write trainer.json like the real one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import labeling.training.process as tp
from labeling.training.process import (
    TrainerStatus,
    ensure_trainer,
    stop_trainer,
    trainer_running,
    trainer_status,
)
from tests.conftest import wait_until

STAND_IN = """
import fcntl, json, os, sys, time
root = sys.argv[1]
fd = os.open(os.path.join(root, "trainer.lock"), os.O_RDWR | os.O_CREAT)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit("already running")
time.sleep(float(sys.argv[2]))
with open(os.path.join(root, "trainer.json"), "w") as fh:
    json.dump({"state": "idle", "pid": os.getpid(), "progress": [0, 0], "device": "cpu"}, fh)
time.sleep(60)
"""


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """ensure_trainer starts the stand-in (which reports after ``delay`` s); stops them all."""
    monkeypatch.setenv(tp.TRAINER_ENV, "on")
    delay = {"s": 0.0}

    def command(project_dir: Path, device: str) -> list[str]:
        return [sys.executable, "-c", STAND_IN, str(project_dir / "models"), str(delay["s"])]

    monkeypatch.setattr(tp, "trainer_command", command)
    children: dict = {}  # this test's own registry: trainers other tests started are not counted
    monkeypatch.setattr(tp, "_CHILDREN", children)
    yield delay
    for child in list(children.values()):
        child.kill()
        child.wait(10)


def _status(state="idle", alive=True, progress=(0, 0), message="", enabled=True):
    return TrainerStatus(state, progress, message, 3, "cpu", 1, alive, 1.0, enabled)


def test_describe_says_what_the_trainer_does():
    assert _status("pretraining", progress=(120, 300)).describe() == "pretraining 120/300"
    assert _status("idle").describe() == "idle"
    assert _status("idle", alive=False).describe() == "not running"
    assert _status("stopped", alive=False, enabled=False).describe() == (
        "not running (PHENOSCOUT_TRAINER=off)"
    )
    assert _status("failed", alive=False, message="CUDA absent").describe() == (
        "failed: CUDA absent"
    )


@pytest.mark.parametrize("content", [None, "", "{not json", "[1, 2]", '{"state": "pretr'])
def test_status_without_a_readable_file_is_none(tmp_path, content):
    if content is not None:
        (tmp_path / "models").mkdir()
        (tmp_path / "models" / "trainer.json").write_text(content)
    status = trainer_status(tmp_path)
    assert (status.state, status.alive, status.pid, status.version) == ("none", False, None, None)
    assert status.describe() == "not running" or "off" in status.describe()


def test_status_of_a_dead_trainer_is_not_alive(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "trainer.json").write_text(
        json.dumps(
            {
                "state": "pretraining",
                "pid": int(proc.stdout),
                "progress": [5, "x"],
                "version": 2,
                "updated_at": "2020-01-01T00:00:00+00:00",
            }
        )
    )
    status = trainer_status(tmp_path)
    assert status.state == "pretraining" and not status.alive and status.version == 2
    assert status.progress == (0, 0) and status.age_s > 1e7


def test_off_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(tp.TRAINER_ENV, "off")
    status = ensure_trainer(tmp_path)
    assert not status.alive and not status.enabled and not (tmp_path / "models").exists()


def test_ensure_starts_one_trainer_and_a_second_call_none(tmp_path, stand_in):
    stand_in["s"] = 1.0  # reports only after a second: the second call sees it "starting"
    first = ensure_trainer(tmp_path)
    assert first.alive and first.state == "starting" and first.pid in tp._CHILDREN
    second = ensure_trainer(tmp_path)
    assert second.pid == first.pid and len(tp._CHILDREN) == 1
    assert wait_until(lambda: trainer_status(tmp_path).state == "idle", timeout=15)
    assert trainer_running(tmp_path)
    third = ensure_trainer(tmp_path)
    assert third.pid == first.pid and third.state == "idle" and len(tp._CHILDREN) == 1
    log = (tmp_path / "models" / "trainer.log").read_text()
    assert log.count("--- ") == 1
    assert stop_trainer(tmp_path, timeout_s=5)
    assert not trainer_status(tmp_path).alive and not trainer_running(tmp_path)


def test_a_trainer_started_elsewhere_is_left_alone(tmp_path, stand_in):
    (tmp_path / "models").mkdir()
    other = subprocess.Popen([sys.executable, "-c", STAND_IN, str(tmp_path / "models"), "0"])
    try:
        assert wait_until(lambda: trainer_status(tmp_path).state == "idle", timeout=15)
        status = ensure_trainer(tmp_path)
        assert status.pid == other.pid and not tp._CHILDREN
    finally:
        other.kill()
        other.wait(10)


def test_a_dead_trainer_is_started_again(tmp_path, stand_in):
    first = ensure_trainer(tmp_path)
    assert wait_until(lambda: trainer_status(tmp_path).state == "idle", timeout=15)
    os.kill(first.pid, 9)
    assert wait_until(lambda: not trainer_status(tmp_path).alive, timeout=15)
    second = ensure_trainer(tmp_path)
    assert second.alive and second.pid != first.pid

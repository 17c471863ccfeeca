"""The project's background trainer as the app sees it: start it once, read what it is doing.

The trainer (``labeling.training.run_trainer``) runs in its own process, ``phenoscout train
PROJECT --watch --device D --exit-with APP_PID``: it holds ``PROJECT/models/trainer.lock``
(flock) for its whole life and writes ``PROJECT/models/trainer.json`` (``state``,
``progress``, ``message``, ``pid``, ``device``, ``version``, ``updated_at``). This module
starts it detached (own session, output to ``PROJECT/models/trainer.log``) and reads its status;
it never imports torch. ``PHENOSCOUT_TRAINER=off`` in the environment keeps the app from
starting one (tests, low-resource machines); ``phenoscout train`` still works by hand.

Starting is serialised by ``PROJECT/models/trainer.start`` (flock, held while checking and
spawning; it also records the pid just spawned), so two app sessions never start two trainers;
the trainer's own lock keeps out any other (a second one exits with "already running").
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labeling.errors import ProjectError
from models.folder import LOCK_FILE, LOG_FILE, MODELS_DIR, START_FILE, STATUS_FILE

logger = logging.getLogger(__name__)

TRAINER_ENV = "PHENOSCOUT_TRAINER"  # "off" (or 0/false/no): the app starts no trainer
START_GRACE_S = 180.0  # a started trainer counts as "starting" this long before it reports
RUNNING_STATES = ("starting", "idle", "pretraining", "finetuning", "embedding")
_CHILDREN: dict[int, subprocess.Popen] = {}  # trainers started by this process (reaped here)


@dataclass(frozen=True)
class TrainerStatus:
    """What the project's trainer is doing, from ``trainer.json`` and a liveness check."""

    state: str  # starting, idle, pretraining, finetuning, embedding, stopped, failed, or "none"
    progress: tuple[int, int]  # (done, total) of the current phase; (0, 0) when not known
    message: str  # the trainer's own words on what it does (or why it failed)
    version: int | None  # newest model version it published
    device: str  # cpu, cuda, mps ("" when unknown)
    pid: int | None  # the trainer process
    alive: bool  # that process is running
    age_s: float | None  # seconds since trainer.json was last written; None without one
    enabled: bool  # PHENOSCOUT_TRAINER is not "off"

    def describe(self) -> str:
        """One short phrase: "pretraining 120/300", "idle", "not running", "failed: msg"."""
        if self.state == "failed":
            return f"failed: {self.message}" if self.message else "failed"
        if not self.alive:
            return "not running" if self.enabled else f"not running ({TRAINER_ENV}=off)"
        done, total = self.progress
        if self.state in ("pretraining", "finetuning", "embedding") and total:
            return f"{self.state} {done}/{total}"
        return self.state


def trainer_enabled() -> bool:
    """False when ``PHENOSCOUT_TRAINER`` is ``off`` (or 0, false, no)."""
    return os.environ.get(TRAINER_ENV, "").strip().lower() not in ("off", "0", "false", "no")


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs (a zombie does not; trainers started here are reaped)."""
    if not pid or pid <= 0:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill()
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _age(updated_at: Any) -> float | None:
    try:
        then = datetime.fromisoformat(str(updated_at))
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - then).total_seconds())


def _last_start(root: Path) -> tuple[int | None, float]:
    """``(pid, unix time)`` of the last trainer started through :func:`ensure_trainer`."""
    try:
        pid, when = (root / START_FILE).read_text().split()[:2]
        return int(pid), float(when)
    except (OSError, ValueError):
        return None, 0.0


def trainer_status(project_dir: Path) -> TrainerStatus:
    """What the project's trainer is doing; a missing or garbled trainer.json reads as none.

    A trainer that was just started and has not written its status yet reads as "starting".
    """
    root = Path(project_dir) / MODELS_DIR
    data = _read_json(root / STATUS_FILE)
    pid = _int_or_none(data.get("pid"))
    state = str(data.get("state") or "none")
    alive = pid_alive(pid)
    started, when = _last_start(root)
    if not alive and started != pid and time.time() - when < START_GRACE_S and pid_alive(started):
        pid, alive, state = started, True, "starting"
        data = {**data, "message": "the trainer is starting", "progress": [0, 0]}
    progress: Any = data.get("progress")
    try:
        done, total = (int(progress[0]), int(progress[1]))
    except (TypeError, ValueError, IndexError, KeyError):
        done, total = 0, 0
    return TrainerStatus(
        state=state,
        progress=(done, total),
        message=str(data.get("message") or ""),
        version=_int_or_none(data.get("version")),
        device=str(data.get("device") or ""),
        pid=pid,
        alive=alive,
        age_s=_age(data.get("updated_at")) if data else None,
        enabled=trainer_enabled(),
    )


@contextmanager
def _held(path: Path, flags: int) -> Iterator[bool]:
    """flock ``path`` with ``flags``; yields False when LOCK_NB was given and it is taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the flock


def trainer_running(project_dir: Path) -> bool:
    """Whether a trainer holds the project's lock (a quick shared-lock probe)."""
    root = Path(project_dir) / MODELS_DIR
    if not (root / LOCK_FILE).exists():
        return False
    with _held(root / LOCK_FILE, fcntl.LOCK_SH | fcntl.LOCK_NB) as free:
        return not free


def ensure_trainer(project_dir: Path, *, device: str = "auto") -> TrainerStatus:
    """Start the project's trainer in the background unless one runs (or is starting).

    The trainer runs ``phenoscout train PROJECT --watch --device DEVICE --exit-with PID`` with
    this process's pid, so it ends soon after this process (the app) does. Nothing is started
    when ``PHENOSCOUT_TRAINER=off``.

    Args:
        project_dir: the project folder.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps`` (see ``phenoscout train --help``).

    Returns:
        The trainer's status after the check (``starting`` right after a start).

    Raises:
        ProjectError: the project's models folder is not writable, or the process cannot start.
    """
    project_dir = Path(project_dir).resolve()
    if not trainer_enabled():
        return trainer_status(project_dir)
    root = project_dir / MODELS_DIR
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _held(root / START_FILE, fcntl.LOCK_EX):
            if not _already_running(project_dir):
                _spawn(project_dir, device)
    except OSError as exc:
        raise ProjectError(
            f"{root}: cannot start the background trainer ({exc}); check the folder is "
            f"writable, or set {TRAINER_ENV}=off and run `phenoscout train {project_dir}`"
        ) from exc
    return trainer_status(project_dir)


def _already_running(project_dir: Path) -> bool:
    status = trainer_status(project_dir)
    return trainer_running(project_dir) or (status.alive and status.state in RUNNING_STATES)


def trainer_command(project_dir: Path, device: str) -> list[str]:
    """The command line of the trainer :func:`ensure_trainer` starts."""
    return [
        sys.executable,
        "-m",
        "labeling.cli",
        "train",
        str(project_dir),
        "--watch",
        "--device",
        device,
        "--exit-with",
        str(os.getpid()),
    ]


def _spawn(project_dir: Path, device: str) -> int:
    root = project_dir / MODELS_DIR
    cmd = trainer_command(project_dir, device)
    with open(root / LOG_FILE, "ab") as log:
        log.write(
            f"\n--- {datetime.now(UTC).isoformat(timespec='seconds')} "
            f"{' '.join(cmd[1:])}\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
    _CHILDREN[proc.pid] = proc
    # in place, not by rename: the flock that serialises starts is on this very inode
    (root / START_FILE).write_text(f"{proc.pid} {time.time():.3f}\n")
    logger.info("started the trainer of %s (pid %d)", project_dir, proc.pid)
    return proc.pid


def stop_trainer(project_dir: Path, timeout_s: float = 10.0) -> bool:
    """Ask the project's trainer to stop (SIGTERM; SIGKILL after ``timeout_s``).

    Returns:
        True when no trainer runs any more (or none ran).
    """
    status = trainer_status(project_dir)
    pid = status.pid if status.alive else None
    if pid is None:
        return True
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
    return not pid_alive(pid)


def parent_gone(pid: int, was_child: bool) -> bool:
    """Whether process ``pid`` (the app that started a trainer) has ended.

    Args:
        pid: the process to follow.
        was_child: the caller was ``pid``'s child when it started; then being re-parented
            (``os.getppid()`` changed) also means ``pid`` ended, even if the pid was reused.
    """
    return not pid_alive(pid) or (was_child and os.getppid() != pid)

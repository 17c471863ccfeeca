"""Background jobs: long work (ingest, features, demo generation) in a thread of its own.

The app starts a job and returns at once; whoever holds the job (or its id) reads its progress
and outcome at any time, from any thread, with :meth:`Job.status`. A job's work is a callable
``work(job)`` that reports progress through ``job.progress(stage)``, a ``progress(done, total)``
callback for one stage (the ``progress`` argument of ``create_project``, ``add_crops``,
``demo_project``). No streamlit here: the app draws :class:`JobStatus` itself.

Jobs live in one registry per process (the app's server), so a job outlives the browser
session that started it; a job with a ``key`` (say, the folder it writes) refuses a second
job of the same key while it runs.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datasets.progress import Progress
from labeling.errors import PhenoScoutError, ProjectError

logger = logging.getLogger(__name__)

RUNNING, DONE, FAILED = "running", "done", "failed"

_REGISTRY: dict[str, Job] = {}
_REGISTRY_LOCK = threading.Lock()
_IDS = itertools.count(1)


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job: what it is doing and how far it got."""

    job_id: str
    title: str  # what the job does, for people ("Creating project screen1")
    key: str | None  # what it works on (a folder); one running job per key
    state: str  # RUNNING, DONE or FAILED
    stage: str  # the current stage ("Reading crops"); "" before the first report
    done: int  # progress within the stage
    total: int  # size of the stage (0: unknown yet)
    result: Any  # what ``work`` returned (DONE only)
    error: str | None  # one-line message (FAILED only)
    unexpected: bool  # the error was not a PhenoScoutError: a bug (its traceback is logged)
    started_at: float  # time.time() at the start
    finished_at: float | None  # time.time() at the end, None while running

    @property
    def fraction(self) -> float:
        """``done / total`` of the current stage in [0, 1] (0 while the total is unknown)."""
        return min(self.done / self.total, 1.0) if self.total > 0 else 0.0

    @property
    def elapsed_s(self) -> float:
        """Seconds since the start (until the end once finished)."""
        return (self.finished_at or time.time()) - self.started_at


class Job:
    """One piece of work run in a daemon thread; create it with :func:`start_job`."""

    def __init__(self, job_id: str, title: str, key: str | None) -> None:
        self.job_id, self.title, self.key = job_id, title, key
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._stage, self._done, self._total = "", 0, 0
        self._state, self._result, self._unexpected = RUNNING, None, False
        self._error: str | None = None
        self._started = time.time()
        self._ended: float | None = None
        self._thread: threading.Thread | None = None

    def progress(self, stage: str) -> Progress:
        """A ``progress(done, total)`` callback for stage ``stage`` of the work."""

        def update(done: int, total: int) -> None:
            with self._lock:
                self._stage, self._done, self._total = stage, int(done), int(total)

        return update

    def status(self) -> JobStatus:
        """The job as it stands now."""
        with self._lock:
            return JobStatus(self.job_id, self.title, self.key, self._state, self._stage,
                             self._done, self._total, self._result, self._error,
                             self._unexpected, self._started, self._ended)  # fmt: skip

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job ends (or ``timeout`` seconds pass); its status."""
        self._finished.wait(timeout)
        return self.status()

    def _run(self, work: Callable[[Job], Any]) -> None:
        result, unexpected = None, False
        error: str | None = None
        try:
            result = work(self)
        except PhenoScoutError as exc:
            error = str(exc)
        except Exception as exc:  # a bug: keep the traceback in the log, say so in the app
            logger.exception("job %r failed", self.title)
            error, unexpected = f"{type(exc).__name__}: {exc}", True
        with self._lock:
            self._state = FAILED if error is not None else DONE
            self._result, self._error, self._unexpected = result, error, unexpected
            self._ended = time.time()
        self._finished.set()
        logger.info("job %s %r %s in %.1f s", self.job_id, self.title, self._state,
                    self._ended - self._started)  # fmt: skip


def start_job(title: str, work: Callable[[Job], Any], key: str | None = None) -> Job:
    """Run ``work(job)`` in a background thread and return the job at once.

    Args:
        title: what the job does, for people.
        work: the work; reports through ``job.progress(stage)(done, total)``; its return value
            becomes the status's ``result``; a PhenoScoutError it raises becomes ``error``.
        key: what the job writes (e.g. a project folder); None for no check.

    Raises:
        ProjectError: a job with the same ``key`` is still running.
    """
    with _REGISTRY_LOCK:
        busy = [j for j in _REGISTRY.values() if key is not None and j.key == key
                and j.status().state == RUNNING]  # fmt: skip
        if busy:
            raise ProjectError(
                f"{key}: {busy[0].title!r} is still working on it; wait for it to finish"
            )
        job = Job(str(next(_IDS)), title, key)
        _REGISTRY[job.job_id] = job
    job._thread = threading.Thread(target=job._run, args=(work,), name=f"job-{job.job_id}",
                                   daemon=True)  # fmt: skip
    job._thread.start()
    return job


def get_job(job_id: str) -> Job | None:
    """The job with id ``job_id`` (started in this process), or None."""
    with _REGISTRY_LOCK:
        return _REGISTRY.get(job_id)


def running_jobs() -> list[JobStatus]:
    """The status of every job of this process still running, oldest first."""
    with _REGISTRY_LOCK:
        jobs = list(_REGISTRY.values())
    return [s for s in (j.status() for j in jobs) if s.state == RUNNING]

"""Background jobs: progress read from another thread, outcome, one-line errors, one job per key."""

from __future__ import annotations

import threading

import pytest

from labeling.errors import DataError, ProjectError
from labeling.jobs import DONE, FAILED, RUNNING, get_job, running_jobs, start_job


def test_progress_is_visible_while_the_job_runs_and_the_result_after():
    step, go_on = threading.Event(), threading.Event()

    def work(job):
        job.progress("Reading crops")(3, 12)
        step.set()
        go_on.wait(5)
        return "12 cells"

    job = start_job("Creating project x", work, key="/tmp/x-progress")
    assert step.wait(5)
    status = job.status()
    assert (status.state, status.stage) == (RUNNING, "Reading crops")
    assert (status.done, status.total) == (3, 12)
    assert status.fraction == 0.25 and status.finished_at is None
    assert get_job(job.job_id) is job and job.job_id in {s.job_id for s in running_jobs()}
    go_on.set()
    status = job.wait(5)
    assert (status.state, status.result, status.error) == (DONE, "12 cells", None)
    assert status.finished_at >= status.started_at
    assert job.job_id not in {s.job_id for s in running_jobs()}


def test_a_phenoscout_error_is_its_one_line_message():
    def work(job):
        raise DataError("crops/: no crops found; give a folder of .tif or .npz crops")

    status = start_job("t", work).wait(5)
    assert status.state == FAILED and not status.unexpected
    assert status.error == "crops/: no crops found; give a folder of .tif or .npz crops"


def test_any_other_error_is_flagged_as_a_bug(caplog):
    status = start_job("t", lambda job: 1 / 0).wait(5)
    assert status.state == FAILED and status.unexpected
    assert status.error.startswith("ZeroDivisionError")
    assert "Traceback" in caplog.text


def test_one_running_job_per_key():
    release = threading.Event()
    first = start_job("first", lambda job: release.wait(5), key="/tmp/x-key")
    with pytest.raises(ProjectError, match="'first' is still working on it"):
        start_job("second", lambda job: None, key="/tmp/x-key")
    other = start_job("other folder", lambda job: None, key="/tmp/y-key")  # another key: fine
    release.set()
    assert first.wait(5).state == DONE and other.wait(5).state == DONE
    assert start_job("again", lambda job: "ok", key="/tmp/x-key").wait(5).result == "ok"

"""Long work started from the app (project creation, adding a plate, the demo) as background
jobs (``labeling.jobs``): the page returns at once, a panel shows each job's st.progress, updated
every half second while a job runs, and the user may go on working elsewhere meanwhile.

The browser session keeps a ticket per job it started. A job that ends while its panel is on
screen and whose ticket says so opens the project it made; one that ends while the user is on
another page waits for them on the Project page with an "Open" button.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from app_pages.widgets.text import md
from labeling.jobs import RUNNING, Job, JobStatus, get_job, start_job

TICKETS = "proj_jobs"  # session key: the tickets of the jobs this session started
POLL_S = 0.5  # how often a running job's progress is redrawn


@dataclass
class Ticket:
    """A job this browser session started, and what to do when it is done."""

    job_id: str
    open_path: str | None = None  # the project the job makes (offered, or opened, when done)
    auto_open: bool = False  # open it as soon as the job is done, if the panel is on screen
    open_now: bool = False  # set by the panel when it saw the job end


def start(
    title: str,
    work: Callable[[Job], Any],
    key: str | None = None,
    open_path: str | None = None,
    auto_open: bool = False,
) -> Job:
    """Start ``work`` as a background job (``labeling.jobs.start_job``) and keep its ticket.

    Raises:
        ProjectError: a job on the same ``key`` still runs.
    """
    job = start_job(title, work, key=key)
    st.session_state.setdefault(TICKETS, []).append(Ticket(job.job_id, open_path, auto_open))
    return job


def _tickets() -> list[tuple[Ticket, JobStatus]]:
    out = []
    for ticket in st.session_state.get(TICKETS, []):
        job = get_job(ticket.job_id)
        if job is not None:
            out.append((ticket, job.status()))
    return out


def jobs_panel(open_project: Callable[[str], None]) -> None:
    """The session's jobs: a live progress bar per running job, the outcome of finished ones.
    ``open_project(path)`` opens a project that a finished job made."""
    tickets = _tickets()
    for ticket, status in tickets:
        if ticket.open_now and status.state == "done" and ticket.open_path:
            _forget(ticket.job_id)
            open_project(ticket.open_path)  # switches page: nothing after this runs
    if any(s.state == RUNNING for _, s in tickets):
        _live_panel()
    else:
        _draw(tickets, open_project)


@st.fragment(run_every=POLL_S)
def _live_panel() -> None:
    """Redrawn alone every POLL_S seconds while a job runs; the whole page reruns when one ends
    (its outcome, and an automatic open, are drawn by the page)."""
    tickets = _tickets()
    if not any(s.state == RUNNING for _, s in tickets):
        for ticket, _ in tickets:
            ticket.open_now = ticket.auto_open
        st.rerun(scope="app")
    _draw(tickets, None)


def _draw(tickets: list[tuple[Ticket, JobStatus]], open_project: Callable[[str], None] | None):
    for ticket, s in tickets:
        with st.container(border=True, key=f"job-{s.job_id}"):
            if s.state == RUNNING:
                step = f"{s.stage}: {s.done}/{s.total}" if s.total else (s.stage or "starting")
                st.progress(s.fraction, text=f"**{md(s.title)}**: {md(step)} ({s.elapsed_s:.0f} s)")
                st.caption("Runs in the background: you may leave this page and come back.")
                continue
            if s.state == "done":
                st.success(md(f"{s.title}: done in {s.elapsed_s:.0f} s. {s.result or ''}".strip()))
            else:
                bug = " (a bug: the server log has the details)" if s.unexpected else ""
                st.error(md(f"{s.title} failed: {s.error}") + bug)
            if open_project is None:
                continue
            with st.container(horizontal=True):
                if s.state == "done" and ticket.open_path:
                    st.button("Open it", key=f"job-open-{s.job_id}", type="primary",
                              on_click=_open_later, args=(ticket,))  # fmt: skip
                st.button("Dismiss", key=f"job-dismiss-{s.job_id}", on_click=_forget,
                          args=(s.job_id,))  # fmt: skip


def _open_later(ticket: Ticket) -> None:
    ticket.open_now = True  # the page run that follows opens it (a callback cannot switch)


def _forget(job_id: str) -> None:
    tickets = st.session_state.get(TICKETS, [])
    st.session_state[TICKETS] = [t for t in tickets if t.job_id != job_id]

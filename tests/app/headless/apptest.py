"""Driving app.py headless with Streamlit's AppTest: the helpers the page tests share.

Widgets are found by key: ``start-path``/``open-project`` (start screen), ``new-class`` with
``add-class``/``add-label-class``, ``cls-<key>`` (give a class to the focused tile; the
keyboard shortcut does the same), ``skip``, ``undo``, ``next-batch``, ``focus-<i>`` and the
tiles' class buttons ``pick-<cell_id>-<shown label>``.
"""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from labeling.store.labels import LabelStore

APP = "../../../app.py"  # relative to this file, as AppTest.from_file wants


def _app(project: Path | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if project is not None:
        at.session_state["project_path"] = str(project)
    at.run()
    assert not at.exception, at.exception
    return at


def _sess(at: AppTest):
    return at.session_state["label_session"]


def _add_classes(at: AppTest, *names: str) -> None:
    for name in names:
        at.text_input(key="new-class").input(name)
        at.button(key="add-class").click().run()
        assert not at.exception, at.exception


def _store(project: Path) -> LabelStore:
    return LabelStore(project / "labels.db")


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def _page(at: AppTest, name: str) -> AppTest:
    at.switch_page(f"app_pages/pages/{name}.py").run()
    assert not at.exception, at.exception
    return at


def _download(at: AppTest, media: list, key: str) -> bytes:
    button = next(b for b in at.get("download_button") if b.proto.id.endswith(f"-{key}"))
    return media[-1].get_file(button.proto.url.rsplit("/", 1)[1]).content


def _wait_job(at: AppTest, timeout_s: float = 60):
    """Wait for the session's latest background job to end; its status (the page redrawn)."""
    from labeling.jobs import get_job

    status = get_job(at.session_state["proj_jobs"][-1].job_id).wait(timeout_s)
    assert status.state != "running", "the job did not finish in time"
    at.run()
    assert not at.exception, at.exception
    return status

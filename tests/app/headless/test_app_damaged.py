"""A damaged project file in the app: a short message with what to do on every page (no path,
no stack), while other exceptions still surface as bugs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402

APP = "../../../app.py"  # relative to this file, as AppTest.from_file wants
PAGES = ["label", "project", "fields", "discover", "review", "export"]


def _open(project: Path, page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["project_path"] = str(project)
    at.run()
    if page != "label":
        at.switch_page(f"app_pages/pages/{page}.py").run()
    return at


def _garble(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy cut short


def _garble_pages(db: Path) -> None:
    """Noise over every page of a labels.db but its header page (4096 bytes)."""
    data = bytearray(db.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)
    db.write_bytes(bytes(data))


def _assert_short_error(at: AppTest, project: Path, *words: str) -> None:
    assert not at.exception, [e.value for e in at.exception]  # no traceback on the page
    errors = [e.value for e in at.error]
    assert errors, "the page said nothing"
    text = " ".join(errors)
    assert all(w in text for w in words), errors
    assert str(project) not in text and "/" not in text.replace(" / ", ""), errors  # no paths
    assert "Traceback" not in text and "\n" not in text


@pytest.mark.parametrize("page", PAGES)
def test_a_truncated_cell_table_is_a_short_message_on_every_page(project, page):
    _garble(project / "cells.parquet")
    at = _open(project, page)
    if page != "label" and not at.error:  # a page that needs no cell table (no labels yet)
        assert not at.exception, [e.value for e in at.exception]
        return
    _assert_short_error(at, project, "cells.parquet is damaged", "restore it from a backup")


@pytest.mark.parametrize("page", ["discover", "export", "label", "review"])
def test_a_label_store_damaged_while_the_app_runs_is_a_short_message(project, page):
    at = _open(project, page)
    assert not at.exception, [e.value for e in at.exception]
    _garble_pages(project / "labels.db")
    from app_pages.server.common import open_cached

    # the app's open store forgets the pages it holds in memory, as it does under memory pressure
    open_cached(str(project)).store._conn.execute("PRAGMA shrink_memory")
    at.run()
    _assert_short_error(at, project, "labels.db", "damaged", "restore")


@pytest.mark.parametrize("page", PAGES)
def test_a_label_store_damaged_before_the_app_starts_is_a_short_message(project, page):
    _garble_pages(project / "labels.db")
    at = _open(project, page)
    if page in ("project", "fields") and not at.error:  # pages that do not read labels
        assert not at.exception, [e.value for e in at.exception]
        return
    _assert_short_error(at, project, "labels.db", "damaged", "restore")


def test_a_damaged_project_config_is_named_without_its_folder(project):
    (project / "project.toml").write_bytes(b"\xff\xfe not toml \x00" * 50)
    at = _open(project, "label")
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(e.value for e in at.error)
    assert "project.toml: damaged" in text and str(project) not in text


def test_a_label_given_on_a_store_damaged_meanwhile_is_a_short_message(project):
    from app_pages.server.common import open_cached

    at = _open(project, "label")
    _garble_pages(project / "labels.db")
    open_cached(str(project)).store._conn.execute("PRAGMA shrink_memory")
    at.button(key="skip").click().run()
    _assert_short_error(at, project, "labels.db", "damaged", "restore")


def test_an_action_that_meets_a_damaged_store_keeps_the_short_message():
    """A widget callback runs outside the page's ``try``: its error is kept for the page."""
    from app_pages.pages.batch import LabelSession, action
    from labeling.store.db import damaged

    @action
    def give_label(sess: LabelSession) -> None:
        raise damaged(Path("/home/me/screen/labels.db"), "database disk image is malformed")

    sess = LabelSession()
    give_label(sess)
    assert sess.error is not None and "/" not in sess.error.replace(" / ", "")
    assert sess.error.startswith("The label store (labels.db) is damaged; restore")


def test_a_damaged_features_file_says_where_it_is_and_what_to_do(project):
    _garble(next((project / "features").glob("morphology-*.parquet")))
    at = _open(project, "label")
    _assert_short_error(at, project, "in the project's features folder is damaged",
                        "delete it and PhenoScout computes it again")  # fmt: skip

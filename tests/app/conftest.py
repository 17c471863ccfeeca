"""Fixtures shared by the browser tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labeling.store.labels import LabelStore
from tests.app.browser import stop_server


@pytest.fixture
def label_project(tmp_path, small_project):
    """A writable copy of the small demo project with two classes (keys 1 and 2); the app
    server started for it is stopped afterwards."""
    path = Path(shutil.copytree(small_project, tmp_path / "proj")).resolve()
    with LabelStore(path / "labels.db") as store:
        store.add_class("round")  # key 1
        store.add_class("elongated")  # key 2
    yield path
    stop_server(path)

"""Fixtures of the headless page tests: a project copy, one with 60 labels, the download store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")


@pytest.fixture(autouse=True)
def _allowed_root(monkeypatch, tmp_path_factory):
    """Folders typed in the app must lie under PHENOSCOUT_ROOT: here, all of pytest's tmp."""
    monkeypatch.setenv("PHENOSCOUT_ROOT", str(tmp_path_factory.getbasetemp()))


@pytest.fixture
def project(tmp_path, small_project) -> Path:
    """A writable copy of the session's small demo project."""
    return Path(shutil.copytree(small_project, tmp_path / "proj"))


@pytest.fixture
def labeled(project) -> Path:
    """The project copy with 60 cells labeled from the ``truth`` column (3 rounds of 20)."""
    from labeling.loop import next_batch, submit_labels
    from labeling.project import open_project

    proj = open_project(project)
    truth = proj.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    for _ in range(3):
        batch = next_batch(proj, 20, annotator="ann")
        submit_labels(proj, {b["cell_id"]: truth[b["cell_id"]] for b in batch}, annotator="ann")
    proj.close()
    return project


@pytest.fixture
def media(monkeypatch) -> list:
    """The in-memory media stores of AppTest runs (download buttons' files land there)."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stores: list = []

    class Recording(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Recording)
    return stores

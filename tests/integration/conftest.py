"""Fixtures shared by the integration tests."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def labeled_copy(tmp_path, small_project):
    """A copy of the small project with 40 cells labeled from ground truth (one odd class
    name that is not filesystem-safe)."""
    from labeling.loop import next_batch, submit_labels
    from labeling.project import open_project

    path = shutil.copytree(small_project, tmp_path / "proj")
    proj = open_project(path)
    truth = proj.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    for _ in range(2):
        batch = next_batch(proj, 20, annotator="ann")
        submit_labels(proj, {b["cell_id"]: truth[b["cell_id"]] for b in batch}, "ann")
    first = next(iter(proj.store.current_labels()))
    submit_labels(proj, {first: "odd/class:name"}, "ann")
    proj.close()
    return path

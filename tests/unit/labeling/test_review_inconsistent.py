"""Inconsistent labels: a labeled cell flagged when both its cross-validated prediction and its
nearest labeled neighbours give another class."""

from __future__ import annotations

import shutil
from pathlib import Path

from labeling.project import open_project
from labeling.review import inconsistent_labels


def test_a_mislabeled_cell_is_flagged_and_consistent_ones_are_not(tmp_path, small_project):
    project = open_project(Path(shutil.copytree(small_project, tmp_path / "proj")))
    truth = project.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    common = truth.value_counts().index[:2].tolist()
    cells = {c: t for c, t in truth.items() if t in common}
    chosen = dict(list(cells.items())[:80])
    wrong = next(c for c, t in chosen.items() if t == common[0])
    chosen[wrong] = common[1]  # one cell of the first class labeled as the second
    project.store.submit(chosen, annotator="a", source="cli")
    flagged = inconsistent_labels(project)
    assert list(flagged.columns) == ["cell_id", "label", "cv_predicted", "neighbours", "agree"]
    assert wrong in set(flagged["cell_id"])
    row = flagged.set_index("cell_id").loc[wrong]
    assert (row["label"], row["cv_predicted"], row["neighbours"]) == (
        common[1],
        common[0],
        common[0],
    )
    assert len(flagged) <= 8  # a few borderline cells at most, not the whole class
    project.close()

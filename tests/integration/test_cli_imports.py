"""`add --import-labels` and `phenoscout import-labels`: labels land on the cells they name."""

from __future__ import annotations

import shutil

import pandas as pd

from labeling.project import open_project
from tests.integration.cli import run


def test_labels_imported_with_a_new_plate_go_to_its_cells(tmp_path, capsys, small_project):
    """A second screen with the same relative paths: ``add --import-labels`` labels the new
    plate's cells, never the old ones; a bad file stops before any cell is added; a file
    whose paths match nothing leaves the cells added and says how to import it later."""
    from datasets.crops.demo import generate_demo

    proj = tmp_path / "proj"
    shutil.copytree(small_project, proj)
    old_id = pd.read_parquet(proj / "cells.parquet", columns=["cell_id"])["cell_id"].iloc[0]
    assert run(capsys, "label", proj, f"{old_id}=mine", "--no-refit")[0] == 0
    plate2 = tmp_path / "plate2"
    generate_demo(plate2, n_cells=100, seed=4)
    truth = pd.read_csv(plate2 / "labels.csv").iloc[:5]
    rel = tmp_path / "rel.csv"  # ./ in front, as a shell's find writes them
    truth.assign(path="./" + truth["path"]).to_csv(rel, index=False)
    for bad, why in (("path,class\na.tif,x\n", "missing column(s) ['label']"),
                     ("path;label\na.tif;x\n", "looks separated by ';'"),
                     ("path,label\na.tif,Mine\n", "line 2: class 'Mine' differs from the "
                      "project's class 'mine' only by case")):  # fmt: skip
        (tmp_path / "bad.csv").write_text(bad)
        code, _, err = run(capsys, "add", proj, "--crops", plate2, "--import-labels",
                           tmp_path / "bad.csv")  # fmt: skip
        assert code == 2 and why in err and str(tmp_path / "bad.csv") in err
        assert len(open_project(proj).cells(columns=["cell_id"])) == 600  # nothing added
    (tmp_path / "wrong.csv").write_text("path,label\nnot_there.tif,x\n")
    code, _, err = run(capsys, "add", proj, "--crops", plate2, "--import-labels",
                       tmp_path / "wrong.csv")  # fmt: skip
    assert code == 2 and "match no cell" in err and f"phenoscout import-labels {proj} " in err
    code, _, err = run(capsys, "import-labels", proj, rel, "--no-refit")
    assert code == 2 and "names a cell in each of 2 crops folders" in err and "line 2" in err
    inside = plate2 / "mine.csv"  # relative to the CSV's folder: one cell
    truth.to_csv(inside, index=False)
    code, out, err = run(capsys, "import-labels", proj, inside, "--no-refit")
    assert code == 0 and "imported 5 labels" in out, err
    project = open_project(proj)
    cells = project.cells(columns=["cell_id", "source", "part"]).set_index("cell_id")
    labels = project.store.current_labels()
    assert labels[old_id] == "mine"  # the old plate's cell keeps its label
    new = {c: lab for c, lab in labels.items() if c != old_id}
    assert len(new) == 5 and set(cells.loc[list(new), "part"]) == {1}
    assert sorted(cells.loc[list(new), "source"]) == sorted(truth["path"])
    # a file that would change a label stops whole
    (tmp_path / "over.csv").write_text(f"path,label\n{old_id},other\n")
    code, _, err = run(capsys, "import-labels", proj, tmp_path / "over.csv")
    assert code == 2 and "already with another label" in err and "line 2" in err
    assert open_project(proj).store.current_labels()[old_id] == "mine"
    code, out, err = run(capsys, "import-labels", proj, tmp_path / "over.csv", "--relabel",
                         "--no-refit")  # fmt: skip
    assert code == 0 and "imported 1 label " in out, err
    assert open_project(proj).store.current_labels()[old_id] == "other"
    # a third plate with its labels in one go: they go to its cells
    plate3 = tmp_path / "plate3"
    generate_demo(plate3, n_cells=100, seed=5)
    third = pd.read_csv(plate3 / "labels.csv").iloc[:4]
    third.assign(path="./" + third["path"]).to_csv(rel, index=False)
    code, out, err = run(capsys, "add", proj, "--crops", plate3, "--import-labels", rel)
    assert code == 0 and "imported 4 labels" in out, err
    project = open_project(proj)
    cells = project.cells(columns=["cell_id", "part"]).set_index("cell_id")["part"]
    parts = pd.Series(project.store.current_labels()).index.map(cells).value_counts()
    assert parts.to_dict() == {0: 1, 1: 5, 2: 4}

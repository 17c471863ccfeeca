"""The `phenoscout` command line on bad input: one-line errors, exit code 2, nothing written."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from labeling.project import open_project
from tests.integration.cli import run


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["init", "{tmp}/p", "--crops", "{tmp}/does_not_exist"], "does_not_exist"),
        (["info", "{tmp}/nowhere"], "no such project folder"),
        (["evaluate", "{tmp}/nowhere"], "no such project folder"),
        (["report", "{tmp}/nowhere", "--out", "{tmp}/r"], "no such project folder"),
        (["export", "{project}", "--out", "{tmp}/x.xlsx"], "unsupported export format"),
        (["export", "{project}", "--out", "{tmp}"], "is a folder; give a file name, e.g."),
        (["info", "{project}/cells.parquet"], "cells.parquet: is a file, not a project folder"),
        (["init", "{project}", "--crops", "{tmp}"], "already exists and is not empty"),
        (["init", "{project}/cells.parquet", "--crops", "{tmp}"], "cells.parquet: is a file;"),
        (["init", "{tmp}/p", "--crops", "{project}"], "is a PhenoScout project, not a folder"),
        (["init", "{tmp}/p", "--crops", "{tmp}", "--seed", "-5"], "--seed -5: use 0 or more"),
        (["init", "{tmp}/p", "--crops", "{tmp}", "--channels", "A,A,C"], "'A' given twice"),
        (["init", "{tmp}/p", "--crops", "{tmp}", "--channels", " , "], "one is empty"),
        (["demo", "--out", "{tmp}/d", "--cells", "200", "--size", "90"], "add --fields N"),
        (["export", "{project}", "--what", "model", "--out", "{tmp}/m.zip"], "e.g. model.pt"),
        (
            ["export", "{project}", "--features", "embedding", "--out", "{tmp}/l.csv"],
            "--features is for --what anndata",
        ),
        (
            [
                "export",
                "{project}",
                "--what",
                "anndata",
                "--features",
                "morphology+morphology",
                "--out",
                "{tmp}/a.h5ad",
            ],
            "named twice",
        ),
        (["demo", "--out", "{tmp}/d", "--fields", "1", "--size", "10"], "at least 64 px"),
        (["export", "{project}", "--what", "crops", "--out", "{tmp}/c.csv"], "are a .zip file"),
        (["review", "{project}", "class", "--class", "nope"], "no class 'nope'; the classes:"),
    ],
)
def test_errors_are_one_line_with_exit_code(tmp_path, capsys, small_project, argv, needle):
    argv = [a.format(tmp=tmp_path, project=small_project) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # a refused demo writes nothing


def test_empty_and_corrupt_input(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "init", tmp_path / "p1", "--crops", empty)
    assert code == 2 and "empty" in err and str(empty) in err
    assert not (tmp_path / "p1").exists(), "a failed init must leave nothing behind"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cell.tif").write_bytes(b"II*\x00garbage")
    code, _, err = run(capsys, "init", tmp_path / "p2", "--crops", bad)
    assert code == 2 and "cell.tif" in err


def test_label_refuses_one_cell_given_two_classes_and_commits_nothing(
    tmp_path, capsys, small_project
):
    proj = tmp_path / "p"
    shutil.copytree(small_project, proj)
    ids = pd.read_parquet(proj / "cells.parquet", columns=["cell_id"])["cell_id"].tolist()
    pairs = [f"{ids[0]}=mitotic", f"{ids[1]}=interphase", f"{ids[0]}=interphase"]
    code, _, err = run(capsys, "label", proj, "--no-refit", *pairs)
    assert code == 2 and err.count("\n") == 1
    assert f"cell {ids[0]} is given two classes ('mitotic' and 'interphase')" in err
    project = open_project(proj)
    assert project.store.current_labels() == {}
    project.close()
    # the same class twice is one label
    code, out, _ = run(capsys, "label", proj, "--no-refit", pairs[0], pairs[0])
    assert code == 0 and out.splitlines()[0] == "committed 1"
    code, out, _ = run(capsys, "label", proj, "--no-refit", pairs[0], pairs[1])  # sent again
    assert code == 0 and out.splitlines()[0] == "committed 1 (1 unchanged: already so)"


def test_bad_outputs_and_counts_are_one_line_errors(tmp_path, capsys, small_project):
    a_file = tmp_path / "a.csv"
    a_file.write_text("x\n")
    cases = [
        (("review", small_project, "disagreements", "--n", "0"), "--n 0: use 1 or more"),
        (("next", small_project, "--n", "-3"), "--n -3: use 1 or more"),
        (("next", small_project, "--annotator", ""), "annotator '' is empty"),
        (("report", small_project, "--out", a_file), f"--out {a_file}: is a file"),
        (("evaluate", small_project, "--out", a_file), f"--out {a_file}: is a file"),
        (("evaluate", small_project, "--group", "plate"), "--group plate: 2 group(s)"),
        (("init", a_file / "proj", "--crops", tmp_path), f"Not a directory: {a_file / 'proj'}"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    out = tmp_path / "new" / "deeper" / "d.csv"  # review --out makes its folder, as export does
    code, stdout, err = run(capsys, "review", small_project, "inconsistent", "--out", out)
    assert code == 0 and out.is_file() and f"to {out}" in stdout, err

"""A damaged project file on every subcommand: one line naming the file and the cause, exit
code 2, never a traceback; and a closed stdout pipe ends quietly."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datasets.cells import read_manifest
from datasets.morphology import FEATURES_VERSION
from labeling.cli.commands import main
from labeling.store.labels import LabelStore
from tests.unit.labeling.damage import corrupt_cell_index

REPO = Path(__file__).resolve().parents[2]
FEATURES = f"features/morphology-v{FEATURES_VERSION}-part-0000.parquet"
PIXELS = "<first array>"  # a sharded Zarr array (its first shard file, its metadata): _array
COMMANDS = {
    "info": ["info", "{p}"],
    "next": ["next", "{p}", "--n", "3"],
    "label": ["label", "{p}", "--no-refit", "{cell}=round"],
    "classes": ["classes", "{p}", "--add", "mitotic"],
    "export labels": ["export", "{p}", "--out", "{out}/labels.csv"],
    "export cells": ["export", "{p}", "--what", "cells", "--out", "{out}/cells.csv"],
    "export crops": ["export", "{p}", "--what", "crops", "--out", "{out}/crops.zip"],
    "report": ["report", "{p}", "--out", "{out}/report"],
}


@pytest.fixture
def project(tmp_path, small_project) -> Path:
    """A copy of the small project with a few labels, so every export has rows."""
    path = Path(shutil.copytree(small_project, tmp_path / "proj"))
    with LabelStore(path / "labels.db") as store:
        cells = [r[0] for r in store._read("SELECT cell_id FROM cells ORDER BY cell_id LIMIT 6")]
        store.submit({c: ("round", "flat")[i % 2] for i, c in enumerate(cells)}, "ann", "cli")
    return path


def _cell(project: Path) -> str:
    with LabelStore(project / "labels.db") as store:
        return store._read("SELECT cell_id FROM cells ORDER BY cell_id DESC LIMIT 1")[0][0]


def _run(capsys, project: Path, out: Path, command: str, cell: str = "x") -> tuple[int, str]:
    argv = [a.format(p=project, out=out, cell=cell) for a in COMMANDS[command]]
    code = main(argv)
    return code, capsys.readouterr().err


def _cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)  # same size of noise, no format at all


def _a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _garbage_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for start in range(4096, len(data), 4096):  # every page but the header page
        data[start : start + 4096] = b"\xa5" * 4096
    path.write_bytes(bytes(data))


DAMAGE = {
    "cells.parquet cut short": ("cells.parquet", _cut_short),
    "cells.parquet noise": ("cells.parquet", _garbage),
    "features cut short": (FEATURES, _cut_short),
    "pixels shard cut short": (f"{PIXELS}/c/0/0/0/0", _cut_short),
    "pixels shard noise": (f"{PIXELS}/c/0/0/0/0", _garbage),
    "pixels array metadata noise": (f"{PIXELS}/zarr.json", _garbage),
    "parts.json noise": ("pixels/parts.json", _garbage),
    "parts.json missing": ("pixels/parts.json", lambda path: path.unlink()),
    "project.toml noise": ("project.toml", _garbage),
    "project.toml a folder": ("project.toml", _a_folder),
    "labels.db noise pages": ("labels.db", _garbage_pages),
    "labels.db noise": ("labels.db", _garbage),
}


def _array(project: Path) -> str:
    """The crop array of the project's first cells (the demo's first plate)."""
    from datasets.pixels.plates import segments_of

    return f"pixels/{segments_of(read_manifest(project)['parts'][0])[0].file}"


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_file_is_one_line_and_exit_2_on_every_subcommand(
    project, tmp_path, capsys, damage
):
    name, spoil = DAMAGE[damage]
    name = name.replace(PIXELS, _array(project))
    cell = _cell(project)
    spoil(project / name)
    said = {}
    for command in COMMANDS:
        out = tmp_path / command.replace(" ", "_")
        out.mkdir()
        code, err = _run(capsys, project, out, command, cell)
        said[command] = (code, err)
        if code == 0:
            continue  # this subcommand does not need the damaged file
        assert code == 2, (command, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (command, err)
        assert Path(name).name in err, (command, err)
        assert "damaged" in err or "cannot read" in err, (command, err)
    assert any(code == 2 for code, _ in said.values()), f"no subcommand noticed: {said}"


@pytest.mark.parametrize("damage", ["cells.parquet cut short", "features cut short"])
def test_next_on_a_damaged_table_names_the_file(project, tmp_path, capsys, damage):
    name, spoil = DAMAGE[damage]
    spoil(project / name)
    code, err = _run(capsys, project, tmp_path, "next")
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"phenoscout next: error: {project / name}: damaged (")
    assert err.rstrip().endswith(("restore it from a backup or re-create the project",
                                  "delete it and PhenoScout computes it again"))  # fmt: skip


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_label_refuses_a_store_with_a_damaged_index_and_writes_nothing(project, capsys):
    db = project / "labels.db"
    cell = corrupt_cell_index(db, stale_check=True)
    before = _sha(db)
    code, err = _run(capsys, project, project, "label", cell)
    assert code == 2, err
    assert f"{db}: damaged (PRAGMA integrity_check: row " in err
    assert "restore labels.db from a backup" in err and "cannot save" not in err
    assert _sha(db) == before  # nothing written into the damaged file
    code, err = _run(capsys, project, project, "next")  # nor does next call the cell unknown
    assert code == 2 and "damaged" in err and "unknown" not in err


def test_info_on_a_damaged_store_says_damaged_not_cannot_save(project, capsys):
    _garbage_pages(project / "labels.db")
    code, err = _run(capsys, project, project, "info")
    assert code == 2
    assert "labels.db: damaged (" in err and "cannot save" not in err


@pytest.mark.parametrize("command", ["info", "next"])
def test_a_closed_stdout_pipe_ends_quietly(project, command):
    argv = [a.format(p=project, out=project, cell="x") for a in COMMANDS[command]]
    if command == "next":
        argv[-1] = "200"  # more output than a pipe buffer holds
    proc = subprocess.Popen([sys.executable, "-m", "labeling.cli.commands", *argv], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout.readline()  # read one line, like `| head -1`, then go away
    proc.stdout.close()
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert code in (0, 141), err
    assert "Traceback" not in err and "BrokenPipe" not in err, err

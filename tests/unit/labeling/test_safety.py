"""Safety promises: export names stay in their folder, newer schemas and read-only stores get
clear errors, and checkpoints never unpickle."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labeling.errors import ConfigError, StoreError
from labeling.io.export import safe_export_path, write_bytes_atomic
from labeling.project import open_project
from labeling.store.labels import LabelStore
from labeling.workspace import resolve_user_path

REPO = Path(__file__).resolve().parents[3]


# ------------------------------------------------------------------ export names
@pytest.mark.parametrize("name", ["labels.csv", "my labels (v2).parquet", "étiquettes 🦠.csv",
                                  "a=b,c.csv", "..labels.csv", "labels..csv"])  # fmt: skip
def test_plain_export_names_land_in_the_folder(tmp_path, name):
    out = safe_export_path(tmp_path, name)
    assert out == tmp_path / name and out.parent == tmp_path


@pytest.mark.parametrize(
    "name",
    ["", "   ", ".", "..", "../labels.csv", "../../etc/passwd", "/etc/passwd", "/tmp/x.csv",
     "sub/labels.csv", "sub\\labels.csv", "..\\..\\x.csv", "lab\x00els.csv", "lab\nels.csv",
     "labels\r.csv", "lab\x1bels.csv", "lab\u202eels.csv"],
)  # fmt: skip
def test_export_names_that_escape_or_hide_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="export file name"):
        safe_export_path(tmp_path, name)


def test_export_name_through_a_symlinked_file_is_refused(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "evil.csv").symlink_to(tmp_path / "outside.csv")
    with pytest.raises(ConfigError, match="outside the export folder"):
        safe_export_path(folder, "evil.csv")


# ------------------------------------------------------------------ schema versions
@pytest.fixture
def project(tmp_path, small_project) -> Path:
    path = tmp_path / "project"
    shutil.copytree(small_project, path)
    return path


def test_newer_project_toml_schema_is_a_clear_configerror(project):
    toml = project / "project.toml"
    text = toml.read_text(encoding="utf-8")
    assert re.search(r"(?m)^schema_version = 2$", text)
    toml.write_text(re.sub(r"(?m)^schema_version = 2$", "schema_version = 99", text), "utf-8")
    with pytest.raises(ConfigError, match=r"project.toml.*schema version 99 is newer.*upgrade"):
        open_project(project)


def test_newer_label_store_schema_is_a_clear_storeerror(project):
    with sqlite3.connect(project / "labels.db") as conn:
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StoreError, match=r"labels.db: label store schema version 7 is newer.*upgr"):
        open_project(project)


# ------------------------------------------------------------------ read-only stores
def _committed(db: Path) -> dict[str, str]:
    with LabelStore(db) as store:
        return store.current_labels()


@pytest.fixture
def labeled_db(tmp_path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    with LabelStore(folder / "labels.db", create=True) as store:
        store.add_cells(["a", "b", "c"])
        store.submit({"a": "mitotic"}, annotator="me", source="batch")
    return folder / "labels.db"


def test_write_refused_by_sqlite_is_a_storeerror_and_keeps_labels(labeled_db):
    """Root-proof: the store's connection swapped for a read-only one (mode=ro)."""
    store = LabelStore(labeled_db)
    store._db.close()
    store._db = sqlite3.connect(f"file:{labeled_db}?mode=ro", uri=True, isolation_level=None,
                                check_same_thread=False)  # fmt: skip
    with pytest.raises(StoreError, match=r"cannot save .*read-only.*labels committed before"):
        store.submit({"b": "round"}, annotator="me", source="batch")
    store.close()
    assert _committed(labeled_db) == {"a": "mitotic"}


# (a chmod-read-only project, as root too: tests/integration/test_disk_full.py)


# ------------------------------------------------------------------ checkpoints
def test_every_torch_load_in_models_uses_weights_only():
    calls = []
    for path in sorted((REPO / "models").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 1, match.end()
            while depth and end < len(text):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            calls.append((path.name, text[match.start() : end]))
    assert calls, "no torch.load call found: did checkpoint loading move out of models/?"
    unsafe = [(name, call) for name, call in calls if "weights_only=True" not in call]
    assert unsafe == []


# ------------------------------------------------------------------ paths a user types
@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "root" / "screens" / "plate1").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return tmp_path / "root"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("screens", "screens"), ("screens/plate1", "screens/plate1"), ("./screens/", "screens"),
     ("  screens/plate1  ", "screens/plate1"), ("new/not yet", "new/not yet"), (".", ""),
     ("screens/../screens/plate1", "screens/plate1"), ("étiquettes 🦠", "étiquettes 🦠")],
)  # fmt: skip
def test_paths_inside_the_root_resolve_under_it(root, typed, expected):
    assert resolve_user_path(typed, root) == (root / expected).resolve()


def test_absolute_paths_inside_the_root_and_the_home_shortcut(root, monkeypatch):
    assert resolve_user_path(str(root / "screens"), root) == (root / "screens").resolve()
    monkeypatch.setenv("HOME", str(root))
    assert resolve_user_path("~/screens", root) == (root / "screens").resolve()
    assert resolve_user_path("~", root) == root.resolve()


@pytest.mark.parametrize(
    "typed",
    [
        "..",
        "../outside",
        "screens/../../outside",
        "../root2",
        "/etc",
        "/",
        "~",
        "~/x",
        "screens/plate1/../../../../..",
    ],
)
def test_paths_that_leave_the_root_are_refused(root, typed, monkeypatch):
    monkeypatch.setenv("HOME", str(root.parent / "outside"))
    with pytest.raises(ConfigError, match=r"leads to .*, outside .*; choose a path inside"):
        resolve_user_path(typed, root)


def test_a_symlink_out_of_the_root_is_refused(root):
    (root / "screens" / "link").symlink_to(root.parent / "outside")
    (root / "inner").symlink_to(root / "screens" / "plate1")
    assert resolve_user_path("inner", root) == (root / "screens" / "plate1").resolve()
    with pytest.raises(ConfigError, match="outside"):
        resolve_user_path("screens/link", root)
    with pytest.raises(ConfigError, match="outside"):
        resolve_user_path("screens/link/new_folder", root)


@pytest.mark.parametrize("typed", ["", "   ", "screens\x00/x", "scr\neens"])
def test_empty_or_control_character_paths_are_refused(root, typed):
    with pytest.raises(ConfigError, match="no path typed|control character"):
        resolve_user_path(typed, root)


# ------------------------------------------------------------------ exports never clobber a project
@pytest.mark.parametrize(
    "inside",
    ["labels.db", "labels.db-wal", "labels.db.v1.bak", "cells.parquet", "project.toml",
     "pixels/part-0000.npy", "features/x.parquet", "models/v0001/checkpoint.pt", "cache/head.npz"],
)  # fmt: skip
def test_an_export_onto_the_project_s_own_files_is_refused(project, inside):
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"is part of the PhenoScout project .*choose another"):
        write_bytes_atomic(b"oops", project / inside)
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == before


def test_a_link_or_dotdot_into_the_project_is_refused_too(project, tmp_path):
    (tmp_path / "innocent.csv").symlink_to(project / "labels.db")
    with pytest.raises(ConfigError, match="is part of the PhenoScout project"):
        write_bytes_atomic(b"oops", tmp_path / "innocent.csv")
    with pytest.raises(ConfigError, match="is part of the PhenoScout project"):
        write_bytes_atomic(b"oops", project / "exports" / ".." / "cells.parquet")


@pytest.mark.parametrize("name", ["exports/labels.csv", "labels.csv", "models.csv", "report.csv"])
def test_exports_beside_the_project_files_are_fine(project, name):
    out = write_bytes_atomic(b"cell_id\n", project / name)
    assert out.read_bytes() == b"cell_id\n"
    assert sorted(p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")) == []


def test_export_commands_refuse_a_project_file(project, capsys):
    from labeling.cli.commands import main

    with LabelStore(project / "labels.db") as store:
        cell = store._read("SELECT cell_id FROM cells LIMIT 1")[0][0]
        store.submit({cell: "mitotic"}, annotator="me", source="cli")
    files = [p for p in project.rglob("*") if p.is_file() and "labels.db" not in p.name]
    before = {p: p.read_bytes() for p in files}
    for what, inside in [
        ("crops", "labels.db"),
        ("cells", "cells.parquet"),
        ("labels", "features/labels.csv"),
        ("crops", "project.toml"),
    ]:
        assert main(["export", str(project), "--what", what, "--out", str(project / inside)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and re.search(r"is part of the PhenoScout project", err), err
    assert {p: p.read_bytes() for p in files} == before
    assert not (project / "features" / "labels.csv").exists()
    assert _committed(project / "labels.db") == {cell: "mitotic"}


def test_predictions_go_through_the_same_check(project):
    import pandas as pd

    from labeling.io.export import write_table

    with pytest.raises(ConfigError, match="is part of the PhenoScout project"):
        write_table(pd.DataFrame({"cell_id": ["a"]}), project / "cells.parquet")


def test_the_atomic_writer_never_follows_a_planted_temporary_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".labels.csv.tmp").symlink_to(victim)  # the old fixed temporary name
    write_bytes_atomic(b"new", tmp_path / "out" / "labels.csv")
    assert victim.read_text() == "keep me"
    assert (tmp_path / "out" / "labels.csv").read_bytes() == b"new"
    assert (tmp_path / "out" / "labels.csv").stat().st_mode & 0o777 == 0o644


_PART = st.sampled_from(["..", ".", "", "a", "screens", "plate1", "link", "inner", "~", " ",
                         "x y", "é🦠", "...", "..a", "/"])  # fmt: skip


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(parts=st.lists(_PART, min_size=1, max_size=7), absolute=st.booleans())
def test_any_typed_path_lands_inside_the_root_or_is_refused(root, parts, absolute):
    """Fuzz: whatever is typed (dots, links in and out, ~, absolute), the result is inside."""
    if not (root / "link").exists():
        (root / "link").symlink_to(root.parent / "outside")
        (root / "inner").symlink_to(root / "screens")
    typed = ("/" if absolute else "") + "/".join(parts)
    try:
        out = resolve_user_path(typed, root)
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    base = os.path.realpath(root)
    assert os.path.realpath(out) == base or os.path.realpath(out).startswith(base + os.sep)

"""Safety promises: export names stay in their folder, newer schemas and read-only stores get
clear errors, and checkpoints never unpickle."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from labeling.errors import ConfigError, StoreError
from labeling.export import safe_export_path
from labeling.project import open_project
from labeling.store import LabelStore

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
    assert re.search(r"(?m)^schema_version = 1$", text)
    toml.write_text(re.sub(r"(?m)^schema_version = 1$", "schema_version = 99", text), "utf-8")
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


@pytest.mark.parametrize("what", ["file", "folder"])
def test_read_only_project_is_a_clear_storeerror_on_submit(labeled_db, what):
    target = labeled_db if what == "file" else labeled_db.parent
    ro = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH | (stat.S_IXUSR if what == "folder" else 0)
    old = target.stat().st_mode
    target.chmod(ro)
    try:
        if os.access(target, os.W_OK):
            pytest.skip("chmod does not stop this user (root) from writing")
        with pytest.raises(StoreError, match=r"read-only"):
            with LabelStore(labeled_db) as store:
                store.submit({"b": "round"}, annotator="me", source="batch")
    finally:
        target.chmod(old)
    assert _committed(labeled_db) == {"a": "mitotic"}


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
            calls.append((path.name, text[match.start():end]))
    assert calls, "no torch.load call found: did checkpoint loading move out of models/?"
    unsafe = [(name, call) for name, call in calls if "weights_only=True" not in call]
    assert unsafe == []

"""labeling.workspace: folders to pick from, channel names/colours, the one-click demo."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labeling.config import load_config
from labeling.errors import ConfigError, DataError, ProjectError
from labeling.project import open_project
from labeling.workspace import check_new_project_folder, demo_project, set_channels, subfolders


def test_subfolders_lists_visible_folders(tmp_path):
    for name in ("b", "a", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "file.tif").write_bytes(b"")
    assert subfolders(tmp_path) == ["a", "b"]
    with pytest.raises(DataError, match="no such folder"):
        subfolders(tmp_path / "nowhere")


def test_set_channels_saves_names_and_colours(tmp_path, small_project):
    project = open_project(shutil.copytree(small_project, tmp_path / "p"))
    before = project.config.channels
    set_channels(project, ["DNA", ""], ["", "#ff00ff"])
    saved = load_config(project.path / "project.toml").channels
    assert [(c.name, c.colour) for c in saved] == [
        ("DNA", before[0].colour),
        (before[1].name, "#ff00ff"),
    ]
    assert project.config.channels == saved
    with pytest.raises(ConfigError):
        set_channels(project, ["a", "b", "c"])
    with pytest.raises(DataError):
        set_channels(project, colours=["red"])
    project.close()


def test_check_new_project_folder(tmp_path):
    assert check_new_project_folder(tmp_path / "new") == (tmp_path / "new").resolve()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ProjectError, match="not empty"):
        check_new_project_folder(tmp_path / "full")
    with pytest.raises(ProjectError):
        check_new_project_folder("  ")


def test_demo_project_is_made_once_then_opened(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []
    project = demo_project(n_cells=300, progress=lambda d, t: calls.append((d, t)))
    assert project.path == tmp_path / "phenoscout_demo" / "project"
    assert project.store.n_cells() == 300 and calls
    assert (tmp_path / "phenoscout_demo" / "screen" / "labels.csv").exists()
    project.close()
    again = demo_project(n_cells=999)
    assert again.store.n_cells() == 300  # opened, not regenerated
    again.close()


def test_a_project_is_named_after_its_screen_not_a_generic_folder(tmp_path):
    from labeling.workspace import suggested_project_folder

    assert suggested_project_folder(tmp_path, Path("/data/screen7/images")) == (
        tmp_path / "screen7_project"
    )
    assert suggested_project_folder(tmp_path, Path("/data/plate3")) == tmp_path / "plate3_project"

"""Issue 11.7: init all or nothing, one class-name rule, one rule for pseudo labels in exports,
distinct class folders in the crops ZIP, and links skipped without showing their target."""

from __future__ import annotations

import io
import shutil
import zipfile

import pandas as pd
import pytest

from datasets.cells import read_labels_csv
from datasets.config import CropSource, IngestConfig
from datasets.crops.ingest import ingest_crops
from datasets.errors import DataError
from labeling.cli.commands import main
from labeling.io.bundles import class_folders, crops_zip
from labeling.io.export import labels_table
from labeling.io.imports import import_labels
from labeling.loop import submit_labels
from labeling.project import open_project
from labeling.store.classes import UNSURE
from tests.unit.datasets.test_non_finite import _folder


def _init(project, crops, *extra) -> int:
    return main(
        ["init", str(project), "--crops", str(crops), "--crop-size", "32", *map(str, extra)]
    )


# ---------------------------------------------------------------- (a) init is all or nothing
def test_failed_import_labels_leaves_no_project_and_a_rerun_works(tmp_path, capsys):
    crops = _folder(tmp_path / "crops", n=8)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nno_such_cell.tif,a\n")
    project = tmp_path / "p"
    assert _init(project, crops, "--import-labels", bad) == 2
    assert "no_such_cell" in capsys.readouterr().err
    assert not project.exists()
    good = tmp_path / "good.csv"
    good.write_text("path,label\nc01.tif,a\n")
    assert _init(project, crops, "--import-labels", good) == 0
    assert open_project(project).store.current_labels() == {"c01.tif": "a"}


def test_imported_labels_that_contradict_each_other_import_nothing(tmp_path, capsys):
    crops = _folder(tmp_path / "crops", n=8)
    twice = tmp_path / "twice.csv"
    twice.write_text("path,label\nc01.tif,a\nc02.tif,b\nc01.tif,b\nc02.tif,b\n")
    project = tmp_path / "p"
    assert _init(project, crops, "--import-labels", twice) == 2
    err = capsys.readouterr().err
    assert "twice.csv: line 4: 'c01.tif' is 'b' but line 2 made the same cell 'a'" in err
    assert err.count("\n") == 1 and not project.exists()


def test_failed_init_keeps_an_empty_folder_the_user_made(tmp_path, capsys):
    crops = _folder(tmp_path / "crops", n=8)
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nc01.tif,\n")
    project = tmp_path / "mine"
    project.mkdir()
    assert _init(project, crops, "--import-labels", bad) == 2
    assert project.is_dir() and not any(project.iterdir())


# ---------------------------------------------------------------- (b) one class-name rule
@pytest.mark.parametrize(("label", "why"), [("  ", "is empty"), ("x" * 10_000, "characters")])
def test_ground_truth_and_imports_refuse_the_same_names(tmp_path, label, why):
    crops = _folder(tmp_path / "crops", n=4)
    csv = crops / "labels.csv"
    pd.DataFrame({"path": ["c00.tif", "c01.tif"], "label": ["a", label]}).to_csv(csv, index=False)
    with pytest.raises(DataError, match=rf"labels.csv: line 3: class name .*{why}") as err:
        read_labels_csv(csv)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=rf"labels.csv: line 3: class name .*{why}"):
        ingest_crops(CropSource(crops, labels_csv=csv), tmp_path / "p", IngestConfig(crop_size=32))
    assert not (tmp_path / "p").exists()
    assert _init(tmp_path / "q", _folder(tmp_path / "other", n=4)) == 0
    project = open_project(tmp_path / "q")
    with pytest.raises(DataError, match=rf"labels.csv: line 3: class name .*{why}"):
        import_labels(project, csv)
    project.close()


def test_empty_ground_truth_cell_is_refused_not_dropped(tmp_path):
    csv = tmp_path / "labels.csv"
    _folder(tmp_path / "crops", n=2)
    csv.write_text("path,label\ncrops/c00.tif,a\ncrops/c01.tif,\n")
    with pytest.raises(DataError, match=r"labels.csv: line 3: class name '' is empty"):
        read_labels_csv(csv)


# ---------------------------------------------------------------- (c) and (d): exports
@pytest.fixture
def dotted(tmp_path, small_project):
    path = shutil.copytree(small_project, tmp_path / "proj")
    project = open_project(path)
    ids = project.cells(columns=["cell_id"])["cell_id"].tolist()[:5]
    submit_labels(project, {ids[0]: ".", ids[1]: "..", ids[2]: "_2e", ids[3]: "ok"}, "ann")
    submit_labels(project, {ids[4]: UNSURE}, "ann")
    yield project, ids
    project.close()


def test_labels_export_and_crops_zip_both_keep_pseudo_labels_with_their_flag(dotted):
    project, ids = dotted
    table = labels_table(project).set_index("cell_id")
    assert table.loc[ids[4], "label"] == UNSURE and bool(table.loc[ids[4], "pseudo"])
    assert not table.loc[ids[:4], "pseudo"].any()
    with zipfile.ZipFile(io.BytesIO(crops_zip(project))) as zf:
        index = pd.read_csv(io.BytesIO(zf.read("index.csv")), keep_default_na=False)
    assert set(index["cell_id"]) == set(table.index)
    assert index.set_index("cell_id")["pseudo"].to_dict() == table["pseudo"].to_dict()


def test_dot_classes_get_distinct_safe_folders_named_in_the_index(dotted):
    project, ids = dotted
    with zipfile.ZipFile(io.BytesIO(crops_zip(project))) as zf:
        index = pd.read_csv(io.BytesIO(zf.read("index.csv")), keep_default_na=False, dtype=str)
        names = zf.namelist()
    folders = dict(zip(index["class"], index["folder"]))
    assert len(set(folders.values())) == len(folders) == 5
    assert all(f not in (".", "..", "") and not f.startswith(".") for f in folders.values())
    assert all(
        file.startswith(folder + "/") for folder, file in zip(index["folder"], index["file"])
    )
    assert len(set(names)) == len(names) == 6
    assert class_folders([".", "..", "_2e", "A", "a"]) == {
        ".": "_2e", "..": "_2e_2e", "_2e": "_2e-2", "A": "A", "a": "a-2",
    }  # fmt: skip


# ---------------------------------------------------------------- (e) links
def test_a_linked_file_is_skipped_without_showing_its_target(tmp_path):
    crops = _folder(tmp_path / "crops", n=4)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-content")
    (crops / "evil.tif").symlink_to(secret)
    (crops / "dup.tif").symlink_to(crops / "c00.tif")
    (crops / "elsewhere").symlink_to(tmp_path)
    report = ingest_crops(crops, tmp_path / "p", IngestConfig(crop_size=32))
    assert report.n_cells == 4
    reasons = dict(report.skipped)
    assert set(reasons) == {"evil.tif", "dup.tif", "elsewhere"}
    assert all(r == "a symbolic link (links are not followed)" for r in reasons.values())
    assert "TOPS" not in report.summary()


def test_read_errors_quote_no_file_content(tmp_path):
    from datasets.crops.readers import read_header

    bad = tmp_path / "x.tif"
    bad.write_text("TOPSECRET-content")
    with pytest.raises(DataError) as err:
        read_header(bad)
    assert "TOPS" not in str(err.value) and str(err.value).startswith(f"{bad}: cannot read")


def test_crops_of_tiff_files_are_named_once_tif_in_the_zip(tmp_path):
    crops = _folder(tmp_path / "crops", n=4)
    assert _init(tmp_path / "p", crops) == 0
    project = open_project(tmp_path / "p")
    submit_labels(project, {"c01.tif": "a", "c02.tif": "b"}, "ann")
    with zipfile.ZipFile(io.BytesIO(crops_zip(project))) as zf:
        names = sorted(n for n in zf.namelist() if n != "index.csv")
    project.close()
    assert names == ["a/c01.tif", "b/c02.tif"]  # not c01.tif.tif

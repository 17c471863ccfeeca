"""CSV exports neutralise spreadsheet formulas; Parquet and --import-labels keep the raw value
(issue 11.4)."""

from __future__ import annotations

import io
import shutil
import zipfile

import pandas as pd
import pytest

from datasets.errors import DataError
from labeling.io.bundles import crops_zip
from labeling.io.export import csv_bytes, export_table, neutralise_formula, unquote_formula
from labeling.io.imports import import_labels
from labeling.loop import submit_labels
from labeling.project import open_project
from labeling.reports.report import write_report

HOSTILE = ["=SUM(1)", "+1+2", "-x", "@cmd", "\tt", "\rr", "'=q"]


@pytest.mark.parametrize("value", HOSTILE)
def test_text_starting_a_formula_gets_a_quote_that_import_strips(value):
    assert neutralise_formula(value) == "'" + value
    assert unquote_formula(neutralise_formula(value)) == value


@pytest.mark.parametrize("value", ["plain", "a=b", "-1.5", "+3", "1e-3", "", "'plain"])
def test_plain_text_and_numbers_in_text_stay(value):
    assert neutralise_formula(value) == value
    assert unquote_formula(value) == value


def test_numeric_columns_stay_numbers_header_and_index_are_quoted():
    df = pd.DataFrame({"dose": [-1.5, 2.0], "=h": ["=A1", "ok"]}, index=["-i", "j"])
    text = csv_bytes(df, index=True).decode()
    assert text.splitlines() == [",dose,'=h", "'-i,-1.5,'=A1", "j,2.0,ok"]


@pytest.fixture
def hostile_project(tmp_path, small_project):
    path = shutil.copytree(small_project, tmp_path / "proj")
    project = open_project(path)
    ids = project.cells(columns=["cell_id"])["cell_id"].tolist()[:4]
    submit_labels(project, {ids[0]: "=SUM(1)", ids[1]: "@evil"}, "+ann")
    submit_labels(project, {ids[2]: "=SUM(1)", ids[3]: "plain"}, "-ann")
    yield project
    project.close()


def test_labels_csv_is_neutralised_parquet_raw_and_import_round_trips(hostile_project, tmp_path):
    project = hostile_project
    export_table(project, tmp_path / "labels.csv", "labels")
    export_table(project, tmp_path / "labels.parquet", "labels")
    raw = (tmp_path / "labels.csv").read_text()
    assert "'=SUM(1)" in raw and "'@evil" in raw and "'+ann" in raw and "'-ann" in raw
    for line in raw.splitlines():
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in line.split(","))
    parquet = pd.read_parquet(tmp_path / "labels.parquet")
    assert set(parquet["label"]) == {"=SUM(1)", "@evil", "plain"}
    assert set(parquet["annotator"]) == {"+ann", "-ann"}
    before = project.store.current_labels()
    submit_labels(project, {c: "other" for c in before}, "x")
    with pytest.raises(DataError, match="already with another label"):
        import_labels(project, tmp_path / "labels.csv")  # labels change on purpose only
    assert import_labels(project, tmp_path / "labels.csv", relabel=True) == 4
    assert project.store.current_labels() == before


def test_crops_zip_index_and_report_csvs_are_neutralised(hostile_project, tmp_path):
    with zipfile.ZipFile(io.BytesIO(crops_zip(hostile_project))) as zf:
        index = zf.read("index.csv").decode()
    assert "'=SUM(1)" in index and "'+ann" in index and ",=SUM" not in index
    write_report(hostile_project, tmp_path / "report")
    counts = (tmp_path / "report" / "counts.csv").read_text()
    assert "'=SUM(1)" in counts and "\n=SUM" not in counts and ",=SUM" not in counts


def test_a_labels_header_in_other_case_or_with_spaces_is_read(tmp_path):
    from labeling.io.imports import _read_label_csv

    path = tmp_path / "labels.csv"
    path.write_text("Path, Label\na.tif,G1\n")
    df = _read_label_csv(path)
    assert df[["path", "label"]].values.tolist() == [["a.tif", "G1"]]

"""Projects from whole fields (folder of fields, CellProfiler export) and their command line."""

from __future__ import annotations

import re
import shutil
import sys
import types

import numpy as np
import pandas as pd
import pytest
import tifffile

from datasets.cells import read_parts
from datasets.fields.demo import FILENAME_PATTERN, generate_demo_fields
from datasets.fields.files import find_fields
from datasets.fields.store import read_fields
from labeling.cli.commands import main
from labeling.loop import next_batch, submit_labels
from labeling.project import FieldSource, create_project_from_fields, open_project


@pytest.fixture(scope="module")
def demo_fields(tmp_path_factory):
    out = tmp_path_factory.mktemp("fields") / "demo"
    generate_demo_fields(out, n_fields=3, size=192, seed=2)
    return out


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_project_from_fields_opens_and_batches_work(tmp_path, demo_fields):
    fields, _ = find_fields(demo_fields, FILENAME_PATTERN, demo_fields / "masks")
    source = FieldSource(fields, segment="given", truth_csv=demo_fields / "objects.csv")
    project, report = create_project_from_fields(tmp_path / "p", source)
    project.close()
    project = open_project(tmp_path / "p")
    cells = project.cells()
    assert len(cells) == report.n_cells == read_fields(project.path)["n_kept"].sum() > 20
    assert project.pixels.read(cells["cell_id"][:3].tolist()).shape == (3, 2, 64, 64)
    batch = next_batch(project, 8, annotator="ann")
    ids = [x["cell_id"] for x in batch]
    assert len(set(ids)) == 8 and all(x["path"].split("#")[0] in set(cells["field"]) for x in batch)
    truth = cells.set_index("cell_id")["truth"]
    submit_labels(project, {c: truth[c] for c in ids}, annotator="ann")
    assert not {x["cell_id"] for x in next_batch(project, 8, annotator="ann")} & set(ids)
    project.close()


def test_classical_segmentation_and_a_failed_create_leaves_nothing(tmp_path, demo_fields):
    fields, _ = find_fields(demo_fields, FILENAME_PATTERN)  # no masks: segmented
    project, report = create_project_from_fields(
        tmp_path / "p", FieldSource(fields, keep_border=True)
    )
    table = read_fields(project.path)
    assert report.n_cells == table["n_objects"].sum() > 20 and (table["n_border"] == 0).all()
    without, report_without = create_project_from_fields(tmp_path / "r", FieldSource(fields))
    without.close()
    touching = report.n_cells - report_without.n_cells  # kept here, left out there
    assert touching > 0 and f"{touching} objects touching the field border left out" in (
        report_without.summary()
    )
    assert f"{touching} objects touching the field border kept (keep_border)" in report.summary()
    assert (table["mask_file"] == "").all()
    assert (project.path / table["mask"].iloc[0] / "zarr.json").is_file()  # OME-Zarr labels
    project.close()
    with pytest.raises(Exception, match="no mask or object list"):
        create_project_from_fields(tmp_path / "q", FieldSource(fields, segment="given"))
    assert not (tmp_path / "q").exists()


def test_unet_trains_on_the_fields_with_masks_and_segments_the_others(
    tmp_path, demo_fields, monkeypatch
):
    fields, _ = find_fields(demo_fields, FILENAME_PATTERN, demo_fields / "masks")
    unmasked = [type(f)(f.key, f.channel_files, f.metadata) for f in fields[:1]]
    calls = {}

    def make_unet_segmenter(train_pairs, *, channel, seed, progress, cache):
        calls.update(n_pairs=len(train_pairs), channel=channel, seed=seed, cache=cache)
        return lambda field: (
            calls.setdefault("segmented", []).append(field.shape)
            or (np.zeros(field.shape[1:], np.int32))
        )

    fake = types.ModuleType("models.segmentation.segmentation")
    fake.make_unet_segmenter = make_unet_segmenter
    monkeypatch.setitem(sys.modules, "models.segmentation.segmentation", fake)
    source = FieldSource(unmasked + fields[1:], segment="unet")
    _, report = create_project_from_fields(tmp_path / "p", source, seed=5)
    assert calls["n_pairs"] == 2 and calls["seed"] == 5 and calls["channel"] == 0
    assert calls["cache"].name == "segmenters"  # trained once per masks and settings
    assert calls["segmented"] == [(2, 192, 192)]  # only the field without a mask
    assert (fields[0].key, "no objects found (empty field)") in report.skipped


def test_cli_init_from_fields_with_pattern_masks_and_truth(tmp_path, capsys, demo_fields):
    (demo_fields / "stray.tif").write_bytes(b"junk")
    try:
        code, out, err = run(
            capsys, "init", tmp_path / "p", "--fields", demo_fields, "--pattern",
            FILENAME_PATTERN, "--masks", demo_fields / "masks", "--truth",
            demo_fields / "objects.csv", "--crop-size", 48,
        )  # fmt: skip
    finally:
        (demo_fields / "stray.tif").unlink()
    assert code == 0, err
    assert "cells from 3 fields (part 0)" in out and "layout whole fields" in out  # 6 files
    assert "project ready" in out
    assert "stray.tif (does not match pattern" in out  # the report lists what was skipped
    run(capsys, "export", tmp_path / "p", "--out", tmp_path / "cells.csv", "--what", "cells")
    cells = pd.read_csv(tmp_path / "cells.csv")
    assert {"plate", "well", "site", "field", "object", "centroid_x", "truth"} <= set(cells.columns)
    assert cells["truth"].notna().all()


def test_cli_demo_fields(tmp_path, capsys):
    code, out, _ = run(capsys, "demo", "--fields", 1, "--size", 128, "--out", tmp_path / "d",
                       "--layout", "multichannel")  # fmt: skip
    assert code == 0 and "wrote 1 128x128 fields (multichannel)" in out
    assert "next: phenoscout init PROJECT --fields" in out  # the pattern names the metadata
    assert "--pattern '{plate}_{well}_s{site}.tif'" in out
    assert len(list((tmp_path / "d").glob("*.tif"))) == 1


def test_cli_init_from_a_cellprofiler_export(tmp_path, capsys):
    images = tmp_path / "cp" / "images"
    images.mkdir(parents=True)
    rows = []
    for n, well in enumerate(["A01", "A02", "A03"], start=1):
        row = {"ImageNumber": n, "Metadata_Plate": "P1", "Metadata_Well": well}
        for ch in ("DNA", "Actin"):
            row[f"FileName_{ch}"], row[f"PathName_{ch}"] = f"{well}_{ch}.tif", str(images)
            if well != "A03":  # A03's files are missing
                field = np.full((80, 80), 100, np.uint16)
                field[20:30, 20:30] = field[50:60, 40:50] = 900
                tifffile.imwrite(images / f"{well}_{ch}.tif", field)
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "cp" / "Image.csv", index=False)
    pd.DataFrame({"ImageNumber": [1, 1, 2, 2, 3], "ObjectNumber": [1, 2, 1, 2, 1],
                  "Location_Center_X": [24.5, 44.5, 24.5, 44.5, 10.0],
                  "Location_Center_Y": [24.5, 54.5, 24.5, 54.5, 10.0],
                  "AreaShape_Area": [100.0, 100.0, 100.0, 100.0, 5.0]}).to_csv(
        tmp_path / "cp" / "Nuclei.csv", index=False)  # fmt: skip
    code, out, err = run(capsys, "init", tmp_path / "p", "--cellprofiler",
                         tmp_path / "cp" / "Nuclei.csv", "--crop-size", 32)  # fmt: skip
    assert code == 0, err
    assert "Ingested 4 cells" in out and "Skipped" in out and "A03_" in out
    cells = open_project(tmp_path / "p").cells()
    assert cells["ImageNumber"].tolist() == [1, 1, 2, 2] and "cp_AreaShape_Area" in cells


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fields", "{tmp}/nowhere"], "fields folder does not exist"),
        (["--fields", "{tmp}/empty"], "empty: no fields found"),
        (["--fields", "{tmp}/empty", "--pattern", "{well}.tif"], "empty: no fields found"),
        (
            ["--cellprofiler", "{tmp}/Nuclei.csv", "--pattern", "{well}_w{channel}.tif"],
            "--pattern cannot be used with --cellprofiler",
        ),
        (["--fields", "{tmp}/empty", "--segment", "given"], "--segment given needs --masks"),
        (["--fields", "{tmp}/empty", "--truth", "{tmp}/none.csv"], "no fields found"),
        (["--cellprofiler", "{tmp}/Nuclei.csv"], "Nuclei.csv: not found"),
        (["--cellprofiler", "{tmp}/Nuclei.csv", "--scale", "2"], "--scale cannot be used"),
    ],
)
def test_cli_init_errors_are_one_line(tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = run(capsys, "init", tmp_path / "p", *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("phenoscout init: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "p").exists()


def test_cli_init_takes_exactly_one_source(tmp_path, capsys):
    for argv, message in (
        (["--crops", "a", "--fields", "b"], "argument --fields: not allowed with argument --crops"),
        ([], "one of the arguments --crops --fields --cellprofiler is required"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["init", str(tmp_path / "p"), *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_add_fields_to_a_project_keeps_labels_and_adds_cells(tmp_path, capsys, demo_fields):
    more = tmp_path / "plate_b"
    generate_demo_fields(more, n_fields=2, size=192, seed=7)
    project = tmp_path / "p"
    code, _, err = run(capsys, "init", project, "--fields", demo_fields, "--pattern",
                       FILENAME_PATTERN, "--masks", demo_fields / "masks", "--crop-size", 32)  # fmt: skip
    assert code == 0, err
    before = open_project(project)
    n_before = before.store.n_cells()
    first = before.cells(columns=["cell_id"])["cell_id"].iloc[0]
    submit_labels(before, [(first, "normal")], annotator="ann")
    before.close()
    code, out, err = run(capsys, "add", project, "--fields", more, "--pattern", FILENAME_PATTERN,
                         "--masks", more / "masks", "--truth", more / "objects.csv")  # fmt: skip
    assert code == 0, err
    after = open_project(project)
    cells = after.cells()
    assert after.store.n_cells() == len(cells) > n_before
    assert after.store.current_labels() == {first: "normal"}
    assert len(read_fields(project)) == 3 + 2 and cells["field"].nunique() == 5
    assert cells.loc[cells["part"] == 1, "truth"].notna().all()  # truth of the added plate
    assert read_parts(project)[1]["normalise_by"] == "plate"  # a plate of its own: own ranges
    assert len(next_batch(after, 10, "ann")) == 10  # the loop works over both parts
    code, _, err = run(capsys, "add", project, "--crops", more, "--pattern", "x")
    assert code == 2 and "has no {channel}" in err  # crops take a pattern too: it is checked


def test_fields_added_to_a_dataset_normalised_project_take_its_scale(tmp_path, capsys, demo_fields):
    project, more = tmp_path / "p", tmp_path / "plate_b"
    generate_demo_fields(more, n_fields=2, size=192, seed=7)
    code, _, err = run(capsys, "init", project, "--fields", demo_fields, "--pattern",
                       FILENAME_PATTERN, "--masks", demo_fields / "masks", "--crop-size", 32,
                       "--normalise-by", "dataset")  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "add", project, "--fields", more, "--pattern", FILENAME_PATTERN,
                         "--masks", more / "masks")  # fmt: skip
    assert code == 0, err
    parts = read_parts(project)
    assert [p["normalise_by"] for p in parts] == ["dataset", "dataset"]
    assert parts[1]["ranges"] == parts[0]["ranges"]
    assert "on the project's scale (the ranges of part 0)" in out


def test_predict_scores_a_new_plate_of_fields(tmp_path, capsys, demo_fields):
    project = tmp_path / "p"
    code, _, err = run(capsys, "init", project, "--fields", demo_fields, "--pattern",
                       FILENAME_PATTERN, "--masks", demo_fields / "masks", "--truth",
                       demo_fields / "objects.csv", "--crop-size", 32)  # fmt: skip
    assert code == 0, err
    opened = open_project(project)
    cells = opened.cells(columns=["cell_id", "truth"])
    submit_labels(opened, list(zip(cells["cell_id"], cells["truth"], strict=True)), "ann")
    opened.close()
    more = tmp_path / "plate_b"
    generate_demo_fields(more, n_fields=6, size=256, seed=7)
    out = tmp_path / "pred.csv"
    code, stdout, err = run(capsys, "predict", project, "--fields", more, "--pattern",
                            FILENAME_PATTERN, "--masks", more / "masks", "--out", out)  # fmt: skip
    assert code == 0, err
    pred = pd.read_csv(out)
    truth = pd.read_csv(more / "objects.csv")
    assert len(pred) >= 10 and f"wrote {len(pred)} predictions" in stdout
    assert {"field", "object", "centroid_x", "predicted", "confidence"} <= set(pred.columns)
    scored = pred.merge(truth, on=["field", "object"])  # border objects are left out, as by add
    assert len(scored) == len(pred) and pred["field"].nunique() == 6
    # the project's own fields, predicted as a new screen: the project's own predictions
    code, _, err = run(capsys, "predict", project, "--fields", demo_fields, "--pattern",
                       FILENAME_PATTERN, "--masks", demo_fields / "masks", "--out", out)  # fmt: skip
    assert code == 0, err
    again = pd.read_csv(out).set_index(["field", "object"])["predicted"].sort_index()
    run(capsys, "export", project, "--what", "predictions", "--out", tmp_path / "own.csv")
    own = pd.read_csv(tmp_path / "own.csv").set_index(["field", "object"])["predicted"]
    assert len(again) == len(own) and again.equals(own.sort_index())
    code, _, err = run(capsys, "predict", project, "--crops", more, "--masks", more / "masks",
                       "--out", out)  # fmt: skip
    assert code == 2 and "--masks cannot be used with --crops" in err


def test_fields_live_in_the_project_as_ome_zarr_plates(tmp_path, capsys, demo_fields):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Plate, Reader

    from datasets.fields.render import cell_in_field
    from datasets.fields.store import read_field_image

    source = tmp_path / "moved"
    shutil.copytree(demo_fields, source)
    project = tmp_path / "p"
    code, _, err = run(capsys, "init", project, "--fields", source, "--pattern",
                       FILENAME_PATTERN, "--masks", source / "masks", "--crop-size", 32)  # fmt: skip
    assert code == 0, err
    table = read_fields(project)
    key = table["key"].iloc[0]
    image = tifffile.imread(source / f"{key}_w1.tif")
    cell = open_project(project).cells(columns=["cell_id"])["cell_id"].iloc[0]
    before = cell_in_field(project, cell, context_px=16)
    shutil.rmtree(source)  # the field view no longer needs the source files
    np.testing.assert_array_equal(read_field_image(project, key)[0], image)
    np.testing.assert_array_equal(cell_in_field(project, cell, context_px=16), before)
    plates = sorted((project / "fields" / "ome").glob("*.ome.zarr"))
    assert [p.name for p in plates] == sorted(f"{p}.ome.zarr" for p in set(table["plate"]))
    assert any(isinstance(s, Plate) for s in next(iter(Reader(parse_url(plates[0]))())).specs)


def test_cell_channel_segments_whole_cells_larger_than_nuclei(tmp_path, capsys, demo_fields):
    areas = {}
    for name, extra in (("nuclei", ()), ("cells", ("--cell-channel", 1))):
        code, _, err = run(capsys, "init", tmp_path / name, "--fields", demo_fields, "--pattern",
                           FILENAME_PATTERN, "--crop-size", 32, *extra)  # fmt: skip
        assert code == 0, err
        areas[name] = open_project(tmp_path / name).cells()["area"].median()
    assert areas["cells"] > 1.5 * areas["nuclei"]
    code, _, err = run(capsys, "init", tmp_path / "c", "--crops", demo_fields, "--cell-channel", 0)
    assert code == 2 and "--cell-channel cannot be used with --crops" in err

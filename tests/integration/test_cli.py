"""The `phenoscout` command line end to end on a small demo screen."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from labeling.cli.commands import build_parser, main
from labeling.project import open_project
from tests.conftest import JURKAT
from tests.integration.cli import run


def test_every_subcommand_explains_itself(capsys):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {
        "demo",
        "init",
        "add",
        "export",
        "info",
        "classes",
        "next",
        "label",
        "simulate",
        "report",
        "review",
        "train",
        "app",
    } <= set(sub.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: phenoscout {name}" in out
        usage_and_args = out.split("\n\n")
        assert len(usage_and_args) > 2 and not usage_and_args[1].startswith(
            ("positional", "options")
        ), f"{name} --help has no description line"
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    export_help = " ".join(capsys.readouterr().out.split())
    assert "source bit depth" in export_help and "16-bit TIFF" not in export_help
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "--what crops" in top and "--what model" in top and "--classes" in top


def test_console_script_runs():
    exe = shutil.which("phenoscout", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "the phenoscout console script is not installed in this environment"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "active-learning" in out.stdout


def test_init_info_export_import_add(tmp_path, capsys, small_demo):
    proj = tmp_path / "proj"
    code, out, _ = run(capsys, "init", proj, "--crops", small_demo, "--channels", "DNA,Cyto")
    assert code == 0, out
    assert "600 cells" in out and "project ready" in out

    code, out, _ = run(capsys, "info", proj)
    assert code == 0 and "cells     600" in out and "DNA" in out
    assert "labels    0 labels on 0 cells" in out

    # no labels yet: a header-only labels export
    code, out, _ = run(capsys, "export", proj, "--out", tmp_path / "labels.csv")
    assert code == 0 and "wrote 0 rows" in out
    assert list(pd.read_csv(tmp_path / "labels.csv").columns[:4]) == [
        "cell_id",
        "label",
        "annotator",
        "labeled_at",
    ]

    # the cell table carries metadata and ground truth
    run(capsys, "export", proj, "--out", tmp_path / "cells.parquet", "--what", "cells")
    cells = pd.read_parquet(tmp_path / "cells.parquet")
    truth = pd.read_csv(small_demo / "labels.csv")
    assert len(cells) == 600 and {"plate", "well", "site", "truth"} <= set(cells.columns)
    assert cells["truth"].value_counts().to_dict() == truth["label"].value_counts().to_dict()

    # import 30 existing labels as real labels, then export them with metadata
    old = tmp_path / "old_labels.csv"
    truth.iloc[:30].assign(path=lambda d: [str(small_demo / p) for p in d["path"]]).to_csv(
        old, index=False
    )
    proj2 = tmp_path / "proj2"
    code, out, err = run(capsys, "init", proj2, "--crops", small_demo, "--import-labels", old)
    assert code == 0, err
    assert "imported 30 labels" in out
    run(capsys, "export", proj2, "--out", tmp_path / "labels.parquet")
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    assert len(labels) == 30 and set(labels["annotator"]) == {"import"}
    assert {"plate", "well", "path"} <= set(labels.columns)
    assert dict(zip(labels["path"], labels["label"])) == dict(
        zip(truth["path"].iloc[:30], truth["label"].iloc[:30])
    )

    # a second plate: 600 more cells, cell ids stay unique
    from datasets.crops.demo import generate_demo

    plate2 = tmp_path / "plate2"
    generate_demo(plate2, n_cells=600, seed=4)
    code, out, err = run(capsys, "add", proj, "--crops", plate2)
    assert code == 0, err
    assert "Normalised per channel over each plate" in out
    assert "Plate name(s) plate1, plate2 are the project's already" in out  # demo names again
    code, out, _ = run(capsys, "info", proj)
    assert "cells     1200" in out
    ids = pd.read_parquet(proj / "cells.parquet", columns=["cell_id"])["cell_id"]
    assert ids.is_unique
    # the same relative paths in two folders: the export names each cell's folder
    run(capsys, "export", proj, "--out", tmp_path / "cells2.csv", "--what", "cells")
    both = pd.read_csv(tmp_path / "cells2.csv")
    assert list(both.columns[:3]) == ["cell_id", "path", "folder"]
    assert both.groupby("folder").size().to_dict() == {
        str(small_demo.resolve()): 600, str(plate2.resolve()): 600
    }  # fmt: skip

    # crops without a plate column added to this per-plate project: a plate of their own, said so
    loose = tmp_path / "loose"
    generate_demo(loose, n_cells=100, seed=5)
    (loose / "metadata.csv").unlink()
    code, out, err = run(capsys, "add", proj, "--crops", loose)
    assert code == 0, err
    assert "over these crops alone, as one new plate" in out
    assert "over the whole dataset" not in out


@pytest.mark.slow
@pytest.mark.skipif(not JURKAT.exists(), reason="shared Jurkat data not present")
def test_jurkat_loads_with_its_class_counts(tmp_path, capsys):
    code, out, err = run(capsys, "init", tmp_path / "jurkat", "--crops", JURKAT)
    assert code == 0, err
    assert "3419 cells" in out
    cells = pd.read_parquet(tmp_path / "jurkat" / "cells.parquet")
    assert cells["truth"].value_counts().to_dict() == {
        "G1": 900,
        "S_phase": 900,
        "G2": 900,
        "Prophase": 606,
        "Metaphase": 69,
        "Telophase": 28,
        "Anaphase": 16,
    }


def test_init_classes_first_with_keys_and_info_counts_as_the_app(tmp_path, capsys, small_demo):
    proj = tmp_path / "proj"
    code, _, err = run(capsys, "init", proj, "--crops", small_demo, "--classes", "a, b, A")
    assert code == 2 and "given twice" in err and not proj.exists()  # before any ingest
    names = ",".join(f"class {i}" for i in range(14))
    code, out, err = run(capsys, "init", proj, "--crops", small_demo, "--classes", names)
    assert code == 0, err
    assert "classes: class 0 [1], class 1 [2]" in out and "class 10 [a]" in out
    from labeling.store import LabelStore

    with LabelStore(proj / "labels.db") as store:
        classes = store.classes(include_pseudo=False)
        assert [c.name for c in classes] == [f"class {i}" for i in range(14)]
        assert all(c.key for c in classes)  # 14 classes, every one with a key
        ids = [c for c in pd.read_parquet(proj / "cells.parquet")["cell_id"][:3]]
        store.submit({ids[0]: "class 0", ids[1]: "unsure"}, annotator="a", source="cli")
        store.submit({ids[0]: "class 1"}, annotator="a", source="cli")  # a relabel
    code, out, _ = run(capsys, "info", proj)
    assert "labels    3 labels on 2 cells (1 unsure or bad segmentation)" in out


def test_classes_add_rename_merge(tmp_path, capsys, small_project):
    proj = tmp_path / "p"
    shutil.copytree(small_project, proj)
    ids = pd.read_parquet(proj / "cells.parquet", columns=["cell_id"])["cell_id"].tolist()
    assert (
        run(capsys, "label", proj, "--no-refit", f"{ids[0]}=mitotic", f"{ids[1]}=Mitosis")[0] == 0
    )
    code, out, _ = run(capsys, "classes", proj, "--add", "große Zelle = 🦠")
    assert code == 0 and "große Zelle = 🦠" in out
    code, out, _ = run(capsys, "classes", proj, "--merge", "Mitosis", "mitotic")
    assert code == 0 and "(1 cells)" in out
    code, out, _ = run(capsys, "classes", proj, "--rename", "mitotic", "mitotic (M)")
    assert code == 0 and "mitotic (M)" in out and "Mitosis" not in out.split("renamed")[1]
    for blank in ("  ", ""):
        code, _, err = run(capsys, "classes", proj, "--add", blank)
        assert code == 2 and "empty" in err


def test_export_predictions_and_wells(tmp_path, capsys, small_project):
    from labeling.loop import next_batch, submit_labels

    proj = shutil.copytree(small_project, tmp_path / "p")
    code, _, err = run(capsys, "export", proj, "--what", "predictions", "--out", tmp_path / "x.csv")
    assert code == 2 and "at least 2 classes" in err and not (tmp_path / "x.csv").exists()
    project = open_project(proj)
    truth = project.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    batch = next_batch(project, 40, annotator="ann")
    submit_labels(project, {b["cell_id"]: truth[b["cell_id"]] for b in batch}, "ann")
    project.close()
    code, out, _ = run(
        capsys, "export", proj, "--what", "predictions", "--out", tmp_path / "pred.parquet"
    )
    assert code == 0 and "wrote 600 rows" in out
    pred = pd.read_parquet(tmp_path / "pred.parquet")
    p_cols = [c for c in pred.columns if c.startswith("p_")]
    assert {"cell_id", "path", "plate", "well", "predicted", "confidence"} <= set(pred.columns)
    assert len(p_cols) == truth[[b["cell_id"] for b in batch]].nunique()
    assert (pred[p_cols].idxmax(axis=1).str[2:] == pred["predicted"]).all()
    code, out, _ = run(capsys, "export", proj, "--what", "wells", "--out", tmp_path / "wells.csv")
    wells = pd.read_csv(tmp_path / "wells.csv")
    assert code == 0 and len(wells) == 4 * len(p_cols)
    counts = pred.groupby(["plate", "well", "predicted"]).size()
    got = wells.set_index(["plate", "well", "label"])["n_cells"]
    assert (got[got > 0].sort_index() == counts.sort_index()).all()


# ---------------------------------------------------------------- crops, model, predict
def test_review_lists_the_review_pages_cells(labeled_copy, tmp_path, capsys):
    import pandas as pd

    from labeling.review import disagreements

    proj = open_project(labeled_copy)
    labels, expected = proj.store.current_labels(), disagreements(proj)
    proj.close()
    cls = pd.Series(labels).mode()[0]
    code, out, _ = run(capsys, "review", labeled_copy, "disagreements", "--out", tmp_path / "d.csv")
    assert code == 0 and f"wrote {len(expected)} rows" in out
    written = pd.read_csv(tmp_path / "d.csv")
    assert written["cell_id"].tolist() == expected["cell_id"].tolist()
    code, out, _ = run(capsys, "review", labeled_copy, "class", "--class", cls, "--n", "3")
    shown = out.split()[1:]
    assert code == 0 and out.split()[0] == "cell_id" and len(shown) == 3
    assert all(labels[c] == cls for c in shown)
    code, out, _ = run(capsys, "review", labeled_copy, "similar", "--cell", shown[0], "--n", "4")
    near = out.split()[1:]
    assert code == 0 and len(near) == 4 and not set(near) & set(labels)
    code, _, err = run(capsys, "review", labeled_copy, "confident")
    assert code == 2 and "review confident needs --class" in err and err.count("\n") == 1
    code, _, err = run(capsys, "review", labeled_copy, "confident", "--class", "nope")
    assert code == 2 and "'nope'" in err and "Traceback" not in err


def test_export_crops_zip_one_folder_per_class(labeled_copy, tmp_path, capsys):
    import io
    import zipfile

    import numpy as np
    import pandas as pd
    import tifffile

    from labeling.io.bundles import safe_name

    out = tmp_path / "out" / "crops.zip"
    code, stdout, err = run(capsys, "export", labeled_copy, "--what", "crops", "--out", out)
    assert code == 0, err
    assert "wrote 40 labeled crops" in stdout and not list(out.parent.glob(".*tmp"))
    proj = open_project(labeled_copy)
    labels = proj.store.current_labels(include_pseudo=True)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        index = pd.read_csv(io.BytesIO(zf.read("index.csv")))
        images = {f: zf.read(f) for f in index["file"]}
    assert len(names) == 41 and set(names) == {"index.csv", *index["file"]}
    assert {n.split("/")[0] for n in names if n != "index.csv"} == {
        safe_name(v) for v in labels.values()
    }
    assert "odd_class_name" in {n.split("/")[0] for n in names}
    assert dict(zip(index["cell_id"], index["class"])) == labels
    assert {"annotator", "labeled_at", "label_source", "path", "plate", "well"} <= set(
        index.columns
    )
    cells = proj.cells().set_index("cell_id")
    assert (index.set_index("cell_id")["well"] == cells.loc[index["cell_id"], "well"]).all()
    raw = proj.pixels.read_raw(index["cell_id"].tolist())  # the source depth, not normalised
    for (cell_id, label, file), crop in zip(
        index[["cell_id", "class", "file"]].itertuples(index=False), raw
    ):
        assert file == f"{safe_name(label)}/{safe_name(cell_id)}.tif"
        with tifffile.TiffFile(io.BytesIO(images[file])) as tif:
            image = tif.asarray()
            assert tif.series[0].axes == "CYX"
            assert tif.imagej_metadata["Labels"] == proj.channel_names
            assert tif.imagej_metadata["mode"] == "composite"
        assert image.dtype == raw.dtype == np.uint16 and np.array_equal(image, crop)


def test_export_model_copies_the_newest_checkpoint_or_says_there_is_none(
    labeled_copy, tmp_path, capsys
):
    import json

    import numpy as np

    code, _, err = run(
        capsys, "export", labeled_copy, "--what", "model", "--out", tmp_path / "m.pt"
    )
    assert code == 2 and "no trained model yet" in err and "phenoscout train" in err
    for v in (1, 2):
        d = labeled_copy / "models" / f"v{v:04d}"
        d.mkdir(parents=True)
        (d / "checkpoint.pt").write_bytes(f"weights {v}".encode())
        np.save(d / "embeddings.npy", np.zeros((1, 2), np.float32))
        (d / "meta.json").write_text(json.dumps({"classes": []}))
    code, out, err = run(
        capsys, "export", labeled_copy, "--what", "model", "--out", tmp_path / "m.pt"
    )
    assert code == 0, err
    assert "v0002" in out and (tmp_path / "m.pt").read_bytes() == b"weights 2"


def test_report_prints_a_summary_and_writes_files_only_with_out(tmp_path, capsys, small_project):
    import json

    path = shutil.copytree(small_project, tmp_path / "proj")
    code, out, _ = run(capsys, "next", path, "--n", "6", "--annotator", "ann")
    assert code == 0
    ids = [json.loads(line)["cell_id"] for line in out.splitlines() if line.startswith("{")]
    given = ["interphase", "mitotic"] * 3
    pairs = [f"{c}={g}" for c, g in zip(ids, given, strict=True)]
    assert run(capsys, "label", path, "--annotator", "ann", *pairs)[0] == 0
    code, out, err = run(capsys, "report", path)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("6 labels, 2 classes found")
    counts = {ln.split()[0]: int(ln.split()[1]) for ln in lines if ln.startswith(("inter", "mito"))}
    assert counts == {"interphase": 3, "mitotic": 3}
    assert not (path / "report").exists()
    code, out, err = run(capsys, "report", path, "--out", tmp_path / "rep")
    assert code == 0, err
    assert out.startswith("6 labels") and "wrote 10 files to" in out  # curves, PNGs, CV tables
    assert (tmp_path / "rep" / "discovery.png").exists()


def test_app_binds_localhost_without_file_watcher_and_honours_root(
    tmp_path, capsys, monkeypatch, small_project
):
    seen = {}

    def fake_execv(exe, cmd):
        seen["cmd"] = cmd
        seen["root"] = __import__("os").environ.get("PHENOSCOUT_ROOT")

    monkeypatch.setattr("os.execv", fake_execv)
    monkeypatch.delenv("PHENOSCOUT_ROOT", raising=False)
    code, _, err = run(capsys, "app", small_project, "--root", tmp_path, "--port", "8999")
    assert code == 0, err
    cmd = seen["cmd"]
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.fileWatcherType") + 1] == "none"
    assert cmd[cmd.index("--client.toolbarMode") + 1] == "viewer"  # no Deploy button
    assert cmd[cmd.index("--server.port") + 1] == "8999"
    assert seen["root"] == str(tmp_path.resolve())
    code, _, err = run(capsys, "app", small_project, "--root", tmp_path / "missing")
    assert code == 2 and "no such folder" in err and "Traceback" not in err

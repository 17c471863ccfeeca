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


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


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
    from labeling.project import open_project

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
@pytest.fixture
def labeled_copy(tmp_path, small_project):
    """A copy of the small project with 40 cells labeled from ground truth (one odd class
    name that is not filesystem-safe)."""
    from labeling.loop import next_batch, submit_labels
    from labeling.project import open_project

    path = shutil.copytree(small_project, tmp_path / "proj")
    proj = open_project(path)
    truth = proj.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    for _ in range(2):
        batch = next_batch(proj, 20, annotator="ann")
        submit_labels(proj, {b["cell_id"]: truth[b["cell_id"]] for b in batch}, "ann")
    first = next(iter(proj.store.current_labels()))
    submit_labels(proj, {first: "odd/class:name"}, "ann")
    proj.close()
    return path


def test_review_lists_the_review_pages_cells(labeled_copy, tmp_path, capsys):
    import pandas as pd

    from labeling.project import open_project
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
    from labeling.project import open_project

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


def test_predict_scores_a_new_screen_with_the_project_head(labeled_copy, tmp_path, capsys):
    from datasets.crops.demo import generate_demo

    screen = tmp_path / "screen2"
    generate_demo(screen, n_cells=200, seed=9)
    out = tmp_path / "pred.csv"
    code, stdout, err = run(capsys, "predict", labeled_copy, "--crops", screen, "--out", out)
    assert code == 0, err
    pred = pd.read_csv(out)
    p_cols = [c for c in pred.columns if c.startswith("p_")]
    assert len(pred) == 200 and "wrote 200 predictions" in stdout
    assert {"cell_id", "path", "plate", "well", "predicted", "confidence"} <= set(pred.columns)
    assert len(p_cols) >= 3 and (pred[p_cols].sum(axis=1) - 1).abs().max() < 1e-4
    assert (pred["predicted"] == pred[p_cols].idxmax(axis=1).str[2:]).all()
    truth = pd.read_csv(screen / "labels.csv").set_index("path")["label"]
    common = pred["path"].map(lambda p: truth.get(p, truth.get(str(p).split("/")[-1])))
    assert common.notna().mean() > 0.9
    assert (pred["predicted"] == common).mean() > 0.4  # far above chance over >= 3 classes


def test_predict_groups_a_screen_saved_one_file_per_channel(labeled_copy, tmp_path, capsys):
    import numpy as np
    import tifffile

    from datasets.crops.demo import generate_demo

    screen, split, whole = tmp_path / "screen2", tmp_path / "per_channel", tmp_path / "whole"
    generate_demo(screen, n_cells=100, seed=9)
    split.mkdir()
    whole.mkdir()
    names = []
    for npz in sorted(screen.rglob("*.npz")):
        for i, crop in enumerate(np.load(npz)["images"]):
            name = f"{npz.parent.name}-{npz.stem}-{i}"
            for c, plane in enumerate(crop, start=1):
                tifffile.imwrite(split / f"{name}_w{c}.tif", plane)
            tifffile.imwrite(whole / f"{name}.tif", crop)
            names.append(name)
    outs = {}
    for key, args in {
        "split": ["--crops", split, "--pattern", "{cell}_w{channel}.tif"],
        "whole": ["--crops", whole],
    }.items():
        out = tmp_path / f"{key}.csv"
        code, stdout, err = run(capsys, "predict", labeled_copy, *args, "--out", out)
        assert code == 0, err
        outs[key] = pd.read_csv(out)
    assert len(outs["split"]) == len(names) == 100
    by_cell = outs["split"].set_index("cell")["predicted"]
    by_path = outs["whole"].assign(cell=outs["whole"]["path"].str.removesuffix(".tif"))
    assert by_path.set_index("cell")["predicted"].reindex(by_cell.index).equals(by_cell)


def test_predict_measures_a_new_screen_as_the_project_was_measured(labeled_copy, tmp_path, capsys):
    """Flat crops would choose other channels to segment (other feature columns) if their own
    channel profile were detected; predict measures them with the project's."""
    import numpy as np
    import tifffile

    for name, n_channels in (("flat", 2), ("three", 3)):
        (tmp_path / name).mkdir()
        for i in range(4):
            plane = np.full((n_channels, 40, 40), 100 + 10 * i, np.uint16)
            tifffile.imwrite(tmp_path / name / f"c{i}.tif", plane, photometric="minisblack")
    out = tmp_path / "flat.csv"
    code, _, err = run(capsys, "predict", labeled_copy, "--crops", tmp_path / "flat", "--out", out)
    assert code == 0, err
    assert len(pd.read_csv(out)) == 4
    out = tmp_path / "three.csv"
    code, _, err = run(capsys, "predict", labeled_copy, "--crops", tmp_path / "three", "--out", out)
    assert code == 2 and "3 channel(s)" in err and "need the project's channels" in err
    assert f"{tmp_path / 'three'} (e.g. c0.tif)" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(not JURKAT.exists(), reason="shared Jurkat data not present")
def test_predict_keeps_the_intensity_of_a_screen_of_one_phenotype(tmp_path, capsys):
    """A folder of G2 cells alone (more DNA than the screen) predicted as a new screen: scaled
    with the project's ranges, each cell gets the prediction it has inside the project; scaled
    to its own range, most became Prophase."""
    project, out = tmp_path / "jurkat", tmp_path / "g2.csv"
    code, _, err = run(capsys, "init", project, "--crops", JURKAT / "images", "--import-labels",
                       JURKAT / "labels.csv")  # fmt: skip
    assert code == 0, err
    code, _, err = run(
        capsys, "predict", project, "--crops", JURKAT / "images" / "G2", "--out", out
    )
    assert code == 0, err
    alone = pd.read_csv(out).set_index("path")["predicted"]
    run(capsys, "export", project, "--what", "predictions", "--out", tmp_path / "own.csv")
    own = pd.read_csv(tmp_path / "own.csv").set_index("path")["predicted"]
    inside = own.rename(lambda p: p.removeprefix("G2/")).reindex(alone.index)
    assert len(alone) == 900 and inside.notna().all()
    assert (alone == inside).all()
    assert (alone == "G2").mean() > 0.7


@pytest.mark.skipif(not JURKAT.exists(), reason="shared Jurkat data not present")
def test_add_keeps_the_intensity_of_a_folder_of_one_phenotype(tmp_path, capsys):
    """G2 cells (twice G1's DNA) added to a project of G1 cells take the project's ranges: their
    DNA stays about twice G1's. Scaled to its own range the folder was stretched (1.34x)."""
    import json

    import numpy as np

    from datasets.features import read_features
    from labeling.project import open_project

    project = tmp_path / "jurkat"
    code, _, err = run(capsys, "init", project, "--crops", JURKAT / "images" / "G1")
    assert code == 0, err
    code, out, err = run(capsys, "add", project, "--crops", JURKAT / "images" / "G2")
    assert code == 0, err
    assert "on the project's scale (the ranges of part 0)" in out
    parts = json.loads((project / "pixels" / "parts.json").read_text())["parts"]
    assert parts[1]["ranges"] == parts[0]["ranges"]
    ids, feats, names = read_features(project)
    part = open_project(project).cells(columns=["cell_id", "part"]).set_index("cell_id")
    in_g2 = part.loc[ids.astype(str), "part"].to_numpy() == 1
    dna = feats[:, list(names).index("ch1_integrated")]
    assert in_g2.sum() == 900
    assert np.median(dna[in_g2]) > 1.6 * np.median(dna[~in_g2])


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


def test_predict_needs_two_classes(tmp_path, small_project, small_demo, capsys):
    path = shutil.copytree(small_project, tmp_path / "proj")
    code, _, err = run(capsys, "predict", path, "--crops", small_demo, "--out", tmp_path / "p.csv")
    assert code == 2 and "at least 2 classes" in err


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
    assert code == 2 and "already carry another label" in err and "line 2" in err
    assert open_project(proj).store.current_labels()[old_id] == "mine"
    code, out, err = run(capsys, "import-labels", proj, tmp_path / "over.csv", "--relabel",
                         "--no-refit")  # fmt: skip
    assert code == 0 and "imported 1 labels" in out, err
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

"""`phenoscout predict` (and `add`) on a new screen: measured and scaled as the project was."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from labeling.project import open_project
from tests.conftest import JURKAT
from tests.integration.cli import run


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


def test_predict_needs_two_classes(tmp_path, small_project, small_demo, capsys):
    path = shutil.copytree(small_project, tmp_path / "proj")
    code, _, err = run(capsys, "predict", path, "--crops", small_demo, "--out", tmp_path / "p.csv")
    assert code == 2 and "at least 2 classes" in err


def test_predict_refuses_images_of_another_bit_depth(labeled_copy, tmp_path, capsys):
    import numpy as np
    import tifffile

    from datasets.crops.demo import generate_demo

    screen, eight = tmp_path / "screen2", tmp_path / "eight_bit"
    generate_demo(screen, n_cells=100, seed=9)
    eight.mkdir()
    for npz in sorted(screen.rglob("*.npz")):
        for i, crop in enumerate(np.load(npz)["images"]):
            tifffile.imwrite(
                eight / f"{npz.parent.name}-{npz.stem}-{i}.tif", (crop // 257).astype(np.uint8)
            )
    out = tmp_path / "pred.csv"
    code, _, err = run(capsys, "predict", labeled_copy, "--crops", eight, "--out", out)
    assert code != 0 and not out.exists()
    assert "bit depth uint8 (the project's: uint16)" in err and str(eight) in err
    assert len(err.strip().splitlines()) == 1
    code, stdout, err = run(
        capsys, "predict", labeled_copy, "--crops", eight, "--out", out, "--allow-other-kind"
    )
    assert code == 0, err
    assert len(pd.read_csv(out)) == 100

"""``phenoscout export --what anndata``: the screen as an .h5ad that anndata reads back."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from datasets.features import read_features
from labeling.cli.commands import main
from labeling.errors import ConfigError
from labeling.io.anndata_export import export_anndata
from labeling.project import open_project

ad = pytest.importorskip("anndata")


@pytest.fixture
def project(tmp_path, small_project):
    path = tmp_path / "p"
    shutil.copytree(small_project, path)
    proj = open_project(path)
    yield proj
    proj.close()


def _label(project, n_per_class=4):
    cells = project.cells(columns=["cell_id", "truth"])
    picked = {}
    for cls, grp in cells.groupby("truth"):
        for cid in grp["cell_id"].head(n_per_class):
            picked[cid] = str(cls)
    project.store.submit(picked, "ann", "cli")
    return picked


def _publish(project, emb):
    folder = project.path / "models" / "v0001"
    folder.mkdir(parents=True)
    ids = project.cells(columns=["cell_id"])["cell_id"].to_numpy(str)
    np.save(folder / "cell_ids.npy", ids)
    np.save(folder / "embeddings.npy", emb.astype(np.float32))
    (folder / "classes.json").write_text("[]")
    meta = {"n_labels": 0, "kind": "unet", "classes": [], "version": 1,
            "created": "2025-01-01T00:00:00+00:00"}  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))


def test_round_trip_features_labels_predictions_and_embedding(project, tmp_path):
    picked = _label(project)
    n = len(project.cells(columns=["cell_id"]))
    emb = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    _publish(project, emb)
    out = tmp_path / "out" / "screen.h5ad"
    assert export_anndata(project, out) == n
    back = ad.read_h5ad(out)
    ids, feats, names = read_features(project.path)
    assert back.shape == (n, len(names)) and list(back.var_names) == names
    channel = dict(zip(back.var_names, back.var["channel"]))  # the user's channel names
    assert channel["ch1_mean"] == project.channel_names[1] and channel[names[0]] in (
        "",
        *project.channel_names,
    )
    order = {c: i for i, c in enumerate(ids)}
    rows = [order[c] for c in back.obs_names]
    np.testing.assert_allclose(back.X, feats[rows], rtol=0, atol=1e-6)
    labeled = back.obs[back.obs["labeled"]]
    assert dict(zip(labeled.index, labeled["label"].astype(str))) == picked
    assert set(labeled["annotator"].astype(str)) == {"ann"}
    assert back.obs["label"].isna().sum() == n - len(picked)
    assert back.obs["predicted"].notna().all() and (back.obs["confidence"] > 0).all()
    assert {"plate", "well", "path"} <= set(back.obs.columns)
    assert back.obs["path"].dtype == "category"
    np.testing.assert_allclose(
        back.obsm["X_embedding"],
        emb[[list(project.cells(columns=["cell_id"])["cell_id"]).index(c) for c in back.obs_names]],
    )
    assert back.obsm["p_classes"].shape == (n, len(set(picked.values())))
    assert sorted(back.uns["classes"]) == sorted(set(picked.values()))
    assert back.uns["model_version"] == 1 and back.uns["embedding_version"] == 1


def test_embedding_as_x_and_no_model_yet(project, tmp_path):
    with pytest.raises(ConfigError, match="no[ne]* .*published model version|there is none"):
        export_anndata(project, tmp_path / "e.h5ad", features="embedding")
    back_path = tmp_path / "m.h5ad"
    export_anndata(project, back_path)  # no labels, no model: still a valid file
    back = ad.read_h5ad(back_path)
    assert back.uns["model_version"] == -1 and "X_embedding" not in back.obsm
    assert not back.obs["labeled"].any() and "predicted" not in back.obs
    n = back.n_obs
    _publish(project, np.arange(n * 4, dtype=np.float32).reshape(n, 4))
    export_anndata(project, back_path, features="embedding")
    back = ad.read_h5ad(back_path)
    assert list(back.var_names) == ["emb_000", "emb_001", "emb_002", "emb_003"]


def test_cli_refuses_project_files_and_wrong_suffix(project, tmp_path, capsys):
    db = project.path / "labels.db"
    before = db.read_bytes()
    for target in (project.path / "labels.db.h5ad", project.path / "features" / "f.h5ad"):
        assert main(["export", str(project.path), "--what", "anndata", "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert "part of the PhenoScout project" in err and len(err.splitlines()) == 1
        assert not target.exists()
    assert main(["export", str(project.path), "--what", "anndata", "--out", str(db)]) == 2
    assert ".h5ad" in capsys.readouterr().err
    assert db.read_bytes() == before
    assert main(["export", str(project.path), "--what", "anndata", "--out",
                 str(tmp_path / "x.csv")]) == 2  # fmt: skip
    assert ".h5ad" in capsys.readouterr().err
    out = tmp_path / "s.h5ad"
    assert main(["export", str(project.path), "--what", "anndata", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and ad.read_h5ad(out).n_obs > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.h5ad")] == []


def test_mixed_metadata_columns_are_written(project, tmp_path):
    from datasets.cells import read_cells, write_cells

    cells = read_cells(project.path)
    cells["dose"] = [1.5 if i % 3 else None for i in range(len(cells))]
    cells["note"] = [None if i % 2 else f"n{i % 5}" for i in range(len(cells))]
    write_cells(project.path, cells)
    out = tmp_path / "mixed.h5ad"
    export_anndata(project, out)
    back = ad.read_h5ad(out)
    assert back.obs["dose"].isna().sum() == (np.arange(len(cells)) % 3 == 0).sum()
    assert set(back.obs["note"].dropna().astype(str)) == {f"n{i}" for i in range(0, 5)}

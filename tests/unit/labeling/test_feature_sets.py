"""The loop's feature sets: published model versions picked up (never half-written ones), "auto"
deciding by cross-validation, and the CellProfiler sets. Versions are written by hand here in
the layout ``models.versions`` publishes (no torch)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from datasets.cells import read_cells, write_cells
from labeling.config import LoopConfig
from labeling.errors import ConfigError
from labeling.feature_sets import AUTO_MIN_PER_CLASS, CHOICE_FILE, choose_features
from labeling.loop import fit_head, next_batch, pool_data
from labeling.project import Project, open_project
from models.folder import latest_backbone_embeddings, latest_version


@pytest.fixture
def project(tmp_path, small_project):
    path = tmp_path / "p"
    shutil.copytree(small_project, path)
    proj = open_project(path)
    yield proj
    proj.close()


def _with_features(project: Project, features: str) -> Project:
    cfg = project.config
    return Project(project.path, dataclasses.replace(cfg, loop=LoopConfig(features=features)))


def _publish(
    project: Project, number: int, emb: np.ndarray, *, tmp: bool = False, classifier: bool = False
) -> None:
    """A version folder as the trainer writes it (``.tmp-vNNNN`` when ``tmp``)."""
    name = f"v{number:04d}"
    folder = project.path / "models" / (f".tmp-{name}" if tmp else name)
    folder.mkdir(parents=True)
    ids = read_cells(project.path, ["cell_id"])["cell_id"].to_numpy(str)
    np.save(folder / "cell_ids.npy", ids)
    noise = np.random.default_rng(number).normal(size=emb.shape).astype(np.float32)
    if classifier:  # its own embeddings have seen the labels; the backbone's have not
        np.save(folder / "embeddings.npy", noise)
        np.save(folder / "backbone_embeddings.npy", emb.astype(np.float32))
        np.save(folder / "predictions.npy", np.full((len(ids), 2), 0.5, np.float32))
    else:
        np.save(folder / "embeddings.npy", emb.astype(np.float32))
    classes = ["a", "b"] if classifier else []
    (folder / "classes.json").write_text(json.dumps(classes))
    meta = {
        "n_labels": 0,
        "kind": "classifier" if classifier else "unet",
        "classes": classes,
        "version": number,
        "created": "2025-01-01T00:00:00+00:00",
    }
    (folder / "meta.json").write_text(json.dumps(meta))


def _truth(project: Project) -> tuple[np.ndarray, np.ndarray]:
    cells = read_cells(project.path, ["cell_id", "truth"])
    return cells["cell_id"].to_numpy(str), cells["truth"].to_numpy(str)


def _label(project: Project, per_class: int = 12) -> None:
    ids, truth = _truth(project)
    rng = np.random.default_rng(0)
    picked = {}
    for cls in np.unique(truth):
        rows = np.flatnonzero(truth == cls)
        for r in rng.permutation(rows)[:per_class]:
            picked[ids[r]] = truth[r]
    project.store.submit(picked, "tester", "cli")


def _informative(project: Project) -> np.ndarray:
    """64-d embeddings that carry the true class (one-hot, lightly noised)."""
    _, truth = _truth(project)
    codes = np.unique(truth, return_inverse=True)[1]
    emb = np.random.default_rng(1).normal(scale=0.05, size=(len(truth), 64))
    emb[np.arange(len(truth)), codes] += 3.0
    return emb.astype(np.float32)


def test_morphology_until_a_version_is_published(project):
    _label(project)
    head = fit_head(project)
    assert head.features == "morphology" and "no model version yet" in head.features_reason


def test_loop_picks_up_a_published_version(project):
    _label(project)
    first = fit_head(project)
    _publish(project, 1, _informative(project))
    head = fit_head(project)
    assert head.features == "morphology+embedding@1"
    assert "auto: morphology+embedding" in head.features_reason
    assert head.version != first.version
    # the round records which set it used and why
    next_batch(project, 8, annotator="t", resume=False)
    timings = project.store.rounds()[-1]["timings"]
    assert timings["features"] == "morphology+embedding@1"
    assert "CV balanced accuracy" in timings["features_why"]


def test_auto_keeps_morphology_when_the_embedding_is_noise(project):
    _label(project)
    noise = np.random.default_rng(5).normal(size=(len(_truth(project)[0]), 64))
    _publish(project, 1, noise.astype(np.float32))
    choice = choose_features(
        project, pool_data(project), project.store.current_labels(include_pseudo=False)
    )
    assert choice.name == "morphology" and choice.model_version is None
    assert choice.scores["morphology"] > choice.scores["morphology+embedding"] - 0.01
    saved = json.loads((project.path / "cache" / CHOICE_FILE).read_text())
    assert saved["version"] == 1 and saved["name"] == "morphology"


def test_auto_waits_for_enough_labels(project):
    _label(project, per_class=AUTO_MIN_PER_CLASS - 1)
    _publish(project, 1, _informative(project))
    head = fit_head(project)
    assert head.features == "morphology" and "until 2 classes have" in head.features_reason


def test_auto_decides_again_for_a_new_version(project):
    _label(project)
    noise = np.random.default_rng(5).normal(size=(len(_truth(project)[0]), 64))
    _publish(project, 1, noise.astype(np.float32))
    assert fit_head(project).features == "morphology"
    _publish(project, 2, _informative(project), classifier=True)
    assert fit_head(project).features == "morphology+embedding@2"


def test_a_half_written_version_is_never_used(project):
    _label(project)
    _publish(project, 1, np.random.default_rng(5).normal(size=(600, 64)).astype(np.float32))
    _publish(project, 2, _informative(project), tmp=True)  # a publish in progress
    assert latest_version(project.path).version == 1
    assert latest_backbone_embeddings(project.path)[0].version == 1
    assert fit_head(_with_features(project, "morphology+embedding")).features == (
        "morphology+embedding@1"
    )


def test_classifier_embeddings_are_not_used_without_backbone_ones(project):
    _label(project)
    _publish(project, 1, _informative(project), classifier=True)
    (project.path / "models" / "v0001" / "backbone_embeddings.npy").unlink()
    assert latest_backbone_embeddings(project.path) is None
    assert fit_head(project).features == "morphology"


def test_explicit_embedding_set_without_version_falls_back(project):
    _label(project)
    head = fit_head(_with_features(project, "embedding"))
    assert head.features == "morphology" and "no model version yet" in head.features_reason


def test_cellprofiler_without_columns_is_a_clear_error(project):
    _label(project)
    for name in ("cellprofiler", "morphology+cellprofiler"):
        with pytest.raises(ConfigError, match=r"cells\.parquet: .*cp_\* columns"):
            fit_head(_with_features(project, name))


def test_cellprofiler_columns_are_used(project):
    _label(project)
    cells = read_cells(project.path)
    _, truth = _truth(project)
    cells["cp_AreaShape_Area"] = np.unique(truth, return_inverse=True)[1].astype(float)
    cells.loc[3, "cp_AreaShape_Area"] = np.nan
    cells["cp_Intensity_Mean"] = np.random.default_rng(0).normal(size=len(cells))
    cells["cp_Label"] = "text"  # not numeric: ignored
    write_cells(project.path, cells)
    head = fit_head(_with_features(project, "morphology+cellprofiler"))
    assert head.features == "morphology+cellprofiler" and head.proba is not None
    only = fit_head(_with_features(project, "cellprofiler"))
    assert only.features == "cellprofiler" and np.isfinite(only.proba).all()

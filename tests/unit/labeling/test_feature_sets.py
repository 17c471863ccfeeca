"""The loop's feature sets: published model versions picked up (never half-written ones), "auto"
deciding by cross-validation, and the CellProfiler sets. Versions are written by hand here in
the layout ``models.trainer.versions`` publishes (no torch)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from datasets.cells import read_cells, write_cells
from labeling.config import LoopConfig
from labeling.errors import ConfigError
from labeling.feature_sets import (
    AUTO_MIN_FRESH,
    AUTO_MIN_PER_CLASS,
    CHOICE_FILE,
    choose_features,
    cv_balanced_accuracy,
    fresh_balanced_accuracy,
)
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
    project: Project,
    number: int,
    emb: np.ndarray,
    *,
    tmp: bool = False,
    classifier: bool = False,
    trained: list[str] | None = None,
    finetuned: np.ndarray | None = None,
) -> None:
    """A version folder as the trainer writes it (``.tmp-vNNNN`` when ``tmp``)."""
    name = f"v{number:04d}"
    folder = project.path / "models" / (f".tmp-{name}" if tmp else name)
    folder.mkdir(parents=True)
    ids = read_cells(project.path, ["cell_id"])["cell_id"].to_numpy(str)
    np.save(folder / "cell_ids.npy", ids)
    noise = np.random.default_rng(number).normal(size=emb.shape).astype(np.float32)
    if classifier:  # its own embeddings have seen the labels; the backbone's have not
        np.save(folder / "embeddings.npy", noise if finetuned is None else finetuned)
        if trained is not None:
            np.save(folder / "trained_cells.npy", np.array(sorted(trained), dtype=str))
        np.save(folder / "backbone_embeddings.npy", emb.astype(np.float32))
        np.save(folder / "predictions.npy", np.full((len(ids), 2), 0.5, np.float32))
    else:
        np.save(folder / "embeddings.npy", emb.astype(np.float32))
    classes = ["a", "b"] if classifier else []
    (folder / "classes.json").write_text(json.dumps(classes))
    meta = {
        "n_labels": len(trained or []),
        "kind": "classifier" if classifier else "unet",
        "classes": classes,
        "version": number,
        "created": "2025-01-01T00:00:00+00:00",
    }
    (folder / "meta.json").write_text(json.dumps(meta))


def _truth(project: Project) -> tuple[np.ndarray, np.ndarray]:
    cells = read_cells(project.path, ["cell_id", "truth"])
    return cells["cell_id"].to_numpy(str), cells["truth"].to_numpy(str)


def _label(project: Project, per_class: int = 12, seed: int = 0) -> dict[str, str]:
    """Label ``per_class`` unlabeled cells of each class; returns the new labels."""
    ids, truth = _truth(project)
    rng = np.random.default_rng(seed)
    done = project.store.current_labels()
    picked = {}
    for cls in np.unique(truth):
        rows = [r for r in np.flatnonzero(truth == cls) if ids[r] not in done]
        for r in rng.permutation(rows)[:per_class]:
            picked[ids[r]] = truth[r]
    project.store.submit(picked, "tester", "cli")
    return picked


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
    _label(project, per_class=30)
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
    assert "cross-validated on" in timings["features_why"]
    assert timings["embedding_version"] == 1
    assert timings["chosen_by"] == (
        "the classifier on morphology + the self-supervised embedding of v0001"
    )


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
    _label(project, per_class=30)
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


def _memorised(project: Project, trained: dict[str, str]) -> np.ndarray:
    """What an encoder that memorised its training labels embeds: the class of each trained
    cell, noise for every other cell."""
    ids, truth = _truth(project)
    classes = sorted(set(truth))
    emb = np.random.default_rng(2).normal(size=(len(ids), 64)).astype(np.float32)
    for i, cell in enumerate(ids):
        if cell in trained:
            emb[i, classes.index(trained[cell])] += 6.0
    return emb


def _noise(project: Project, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(len(_truth(project)[0]), 64)).astype(np.float32)


def test_memorised_finetuned_embedding_never_wins_on_its_own_labels(project):
    trained = _label(project)
    memorised = _memorised(project, trained)
    # judged by plain cross-validation on its training labels it would win by far
    pool = pool_data(project)
    rows = np.array([pool.position[c] for c in trained])
    y = np.array(list(trained.values()), dtype=object)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(rows, y))
    x_mem = np.hstack([pool.features, memorised])
    leaky = cv_balanced_accuracy(x_mem[rows], y, folds, 0)
    assert leaky > cv_balanced_accuracy(pool.features[rows], y, folds, 0) + 0.05
    _publish(project, 1, _noise(project), classifier=True, trained=list(trained),
             finetuned=memorised)  # fmt: skip
    labels = project.store.current_labels(include_pseudo=False)
    choice = choose_features(project, pool, labels)
    assert choice.name == "morphology", choice  # no fresh labels: not judged at all
    _label(project, per_class=AUTO_MIN_FRESH // 2 + 2, seed=1)  # fresh labels: it is noise there
    labels = project.store.current_labels(include_pseudo=False)
    choice = choose_features(project, pool, labels)
    assert choice.name == "morphology", choice
    assert choice.scores["morphology+finetuned"] <= choice.scores["morphology (fresh labels)"]


def test_finetuned_embedding_is_used_when_it_wins_on_fresh_labels(project):
    trained = _label(project)
    _publish(project, 1, _noise(project), classifier=True, trained=list(trained),
             finetuned=_informative(project))  # fmt: skip
    fresh = _label(project, per_class=AUTO_MIN_FRESH // 2 + 2, seed=1)
    head = fit_head(project)
    assert head.features == "morphology+finetuned@1", head.features_reason
    assert f"on {len(fresh)} labels given after it was trained" in head.features_reason
    assert f"v0001 (fine-tuned on {len(trained)} labels)" in head.features_reason
    next_batch(project, 8, annotator="t", resume=False)
    timings = project.store.rounds()[-1]["timings"]
    assert timings["embedding_version"] == 1
    assert timings["chosen_by"] == (
        f"the classifier on morphology + the embedding of v0001 (fine-tuned on {len(trained)} "
        "labels)"
    )


def test_a_finetuned_version_without_its_training_cells_is_not_judged(project):
    trained = _label(project)
    _publish(project, 1, _noise(project), classifier=True, finetuned=_informative(project))
    _label(project, per_class=AUTO_MIN_FRESH // 2 + 2, seed=1)
    assert fit_head(project).features == "morphology"
    assert (project.path / "models" / "v0001").is_dir() and trained


def test_explicit_embedding_set_uses_the_newest_finetuned_embedding(project):
    trained = _label(project)
    _publish(project, 1, _noise(project), classifier=True, trained=list(trained),
             finetuned=_informative(project))  # fmt: skip
    head = fit_head(_with_features(project, "morphology+embedding"))
    assert head.features == "morphology+finetuned@1"


def test_fresh_accuracy_scores_only_fresh_rows():
    rng = np.random.default_rng(0)
    y = np.array(["a", "b"] * 30, dtype=object)
    fresh = np.zeros(60, dtype=bool)
    fresh[40:] = True
    base = rng.normal(size=(60, 4)).astype(np.float32)
    cand = base.copy()
    cand[:40, 0] = np.where(y[:40] == "a", 5.0, -5.0)  # separates only the trained rows
    b, c = fresh_balanced_accuracy(base, cand, y, fresh, seed=0)
    assert abs(c - b) < 0.2 and c < 0.8
    cand[40:, 0] = np.where(y[40:] == "a", 5.0, -5.0)  # and now the fresh ones too
    assert fresh_balanced_accuracy(base, cand, y, fresh, seed=0)[1] == 1.0


def test_the_judges_cap_the_labels_and_keep_every_fresh_one(monkeypatch):
    import labeling.feature_sets as fs

    rng = np.random.default_rng(0)
    y = np.array(["a"] * 40 + ["b"] * 20, dtype=object)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    x[:, 0] += (y == "b") * 3.0
    fresh = np.zeros(60, dtype=bool)
    fresh[rng.choice(60, 20, replace=False)] = True
    monkeypatch.setattr(fs, "AUTO_MAX_LABELS", 30)
    seen = {}

    def spy_fresh(xb, xc, yy, ff, seed):
        seen["fresh"] = (len(yy), int(ff.sum()))
        return 0.5, 0.6

    def spy_cv(xx, yy, folds, seed):
        seen.setdefault("cv", []).append((len(yy), int(np.sum(yy == "b"))))
        return 0.5

    monkeypatch.setattr(fs, "fresh_balanced_accuracy", spy_fresh)
    monkeypatch.setattr(fs, "cv_balanced_accuracy", spy_cv)
    assert fs.judge_finetuned(x, x, y, fresh, 0) == (0.5, 0.6)
    assert seen["fresh"] == (30, 20)  # every fresh label, older ones sampled to the cap
    fs.judge_backbone(x, x, y, 0)
    assert seen["cv"] == [(30, 10), (30, 10)]  # a stratified sample, the same for both sets

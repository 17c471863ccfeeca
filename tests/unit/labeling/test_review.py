"""labeling.review on a copy of the small demo project labeled from its ground truth."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from labeling.errors import ConfigError, NotTrainedError
from labeling.loop import fit_head, next_batch, pool_data, submit_labels
from labeling.project import open_project
from labeling.review import cells_of_class, confident_unlabeled, disagreements, similar_cells


@pytest.fixture
def project(tmp_path, small_project):
    proj = open_project(shutil.copytree(small_project, tmp_path / "proj"))
    yield proj
    proj.close()


@pytest.fixture
def labeled(project):
    truth = project.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    for _ in range(2):
        batch = next_batch(project, 20, annotator="ann")
        submit_labels(project, {b["cell_id"]: truth[b["cell_id"]] for b in batch}, "ann")
    return project


def test_cells_of_class_in_labeling_order(project):
    ids = project.cells(columns=["cell_id"])["cell_id"].tolist()[:3]
    submit_labels(project, {ids[2]: "a"}, "ann")
    submit_labels(project, {ids[0]: "a", ids[1]: "b"}, "ann")
    assert cells_of_class(project, "a") == [ids[2], ids[0]]
    assert cells_of_class(project, "none") == []


def test_disagreements_are_labels_the_head_trained_without_them_does_not_predict(labeled):
    labels = labeled.store.current_labels()
    big = pd.Series(labels).value_counts()
    victim = next(c for c, lab in labels.items() if lab == big.index[0])
    submit_labels(labeled, {victim: big.index[1]}, "ann", source="review")  # a mislabel
    frame = disagreements(labeled)
    assert list(frame.columns) == ["cell_id", "label", "predicted", "confidence"]
    assert (frame["label"] != frame["predicted"]).all()
    assert frame["confidence"].is_monotonic_decreasing
    assert frame["confidence"].between(0, 1).all()
    now = labeled.store.current_labels()
    assert all(now[c] == lab for c, lab in zip(frame["cell_id"], frame["label"]))
    # the mislabeled cell is caught: trained without it, the head says what it is
    row = frame.set_index("cell_id").loc[victim]
    assert row["label"] == big.index[1] and row["predicted"] == big.index[0]


def test_disagreements_empty_without_a_model(project):
    assert disagreements(project).empty


def test_confident_unlabeled_ranks_unlabeled_cells_by_class_probability(labeled):
    cls = labeled.store.current_labels_frame()["label"].mode()[0]
    frame = confident_unlabeled(labeled, cls, 10)
    assert len(frame) == 10 and frame["probability"].is_monotonic_decreasing
    labels = labeled.store.current_labels(include_pseudo=True)
    assert not set(frame["cell_id"]) & set(labels)
    pool, head = pool_data(labeled), fit_head(labeled)
    p = head.proba[:, head.classes.index(cls)]
    free = np.array([c not in labels for c in pool.cell_ids])
    assert frame["probability"].iloc[0] == pytest.approx(float(p[free].max()))


def test_confident_unlabeled_errors(project, labeled):
    with pytest.raises(ConfigError, match="no labels"):
        confident_unlabeled(labeled, "never seen", 5)
    with pytest.raises(ConfigError):
        confident_unlabeled(labeled, "x", 0)


def test_confident_unlabeled_needs_a_model(project):
    with pytest.raises(NotTrainedError):
        confident_unlabeled(project, "a", 5)


def test_similar_cells_are_the_nearest_unlabeled_neighbours(project):
    pool = pool_data(project)
    query = str(pool.cell_ids[0])
    near = similar_cells(project, query, 5)
    assert len(near) == 5 and query not in near
    dist = np.linalg.norm(pool.features - pool.features[0], axis=1)
    dist[0] = np.inf
    assert near[0] == str(pool.cell_ids[int(dist.argmin())])
    submit_labels(project, {near[0]: "a"}, "ann")
    again = similar_cells(project, query, 5)
    assert near[0] not in again and again[0] == near[1]

"""Publishing versions atomically and reading them back with numpy only."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from labeling.errors import ProjectError
from models.folder import latest_version, list_versions, load_embeddings, load_predictions

versions = pytest.importorskip("models.trainer.versions")


def _publish(project, n=5, d=3, classes=(), n_labels=0):
    number, tmp = versions.begin_version(project)
    np.save(tmp / "embeddings.npy", np.full((n, d), number, np.float32))
    np.save(tmp / "cell_ids.npy", np.array([f"c{i}" for i in range(n)]))
    if classes:
        np.save(tmp / "predictions.npy", np.full((n, len(classes)), 1 / len(classes), np.float32))
    return versions.publish_version(tmp, {"n_labels": n_labels}, classes)


def test_publish_and_read(tmp_path):
    assert latest_version(tmp_path) is None
    _publish(tmp_path)
    path = _publish(tmp_path, classes=("a", "b"), n_labels=7)
    info = latest_version(tmp_path)
    assert (info.version, info.path, info.classes, info.n_labels) == (2, path, ("a", "b"), 7)
    assert info.has_predictions and info.created
    ids, emb = load_embeddings(tmp_path, info)
    assert ids.tolist() == [f"c{i}" for i in range(5)] and emb.shape == (5, 3)
    assert emb.dtype == np.float32 and float(emb[0, 0]) == 2.0
    _, classes, probs = load_predictions(tmp_path, 2)
    assert classes == ("a", "b") and probs.shape == (5, 2)
    assert load_predictions(tmp_path, 1) is None


def test_prune_keeps_newest_three(tmp_path):
    for _ in range(5):
        _publish(tmp_path)
    assert [v.version for v in list_versions(tmp_path)] == [3, 4, 5]


def test_killed_publish_leaves_previous_version(tmp_path):
    _publish(tmp_path)
    number, tmp = versions.begin_version(tmp_path)  # a publish that dies half-way
    np.save(tmp / "embeddings.npy", np.zeros((2, 2), np.float32))
    assert number == 2 and latest_version(tmp_path).version == 1
    assert versions.begin_version(tmp_path)[0] == 3  # never reuses a started number
    assert len(versions.remove_stale_tmp(tmp_path)) == 2
    assert latest_version(tmp_path).version == 1


def test_missing_version_is_a_clear_error(tmp_path):
    with pytest.raises(ProjectError, match="v0009.*missing or incomplete"):
        load_embeddings(tmp_path, 9)


def test_model_versions_does_not_import_torch():
    code = "import sys, models.folder; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_models_errors_does_not_import_torch():
    code = "import sys, models.errors, models; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

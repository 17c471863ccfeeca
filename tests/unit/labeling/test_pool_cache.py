"""The pool's standardised features are cached per feature version, so a fresh process (a
``phenoscout next``) does not re-read and standardise every feature file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from datasets.features import read_features
from labeling import loop
from labeling.project import open_project
from labeling.simulate import standardise


@pytest.fixture
def project(tmp_path, small_project):
    path = tmp_path / "p"
    shutil.copytree(small_project, path)
    shutil.rmtree(path / "cache", ignore_errors=True)
    proj = open_project(path)
    yield proj
    proj.close()


def _fresh_pool(project):
    loop._POOLS.clear()  # what a new process starts with
    return loop.pool_data(project)


def test_cache_written_then_used_with_the_same_values(project, monkeypatch):
    first = _fresh_pool(project)
    ids, feats, _ = read_features(project.path)
    np.testing.assert_array_equal(first.features, standardise(feats))
    cached = sorted(p.name for p in (project.path / "cache").glob("pool-*.npy"))
    assert cached == [f"pool-{first.version}-features.npy", f"pool-{first.version}-ids.npy"]

    def no_reading(*args, **kwargs):
        raise AssertionError("the feature files were read again")

    monkeypatch.setattr("datasets.features.read_features", no_reading)
    second = _fresh_pool(project)
    np.testing.assert_array_equal(second.features, first.features)
    assert second.cell_ids.tolist() == ids.tolist() and second.position == first.position


def test_a_bad_cache_is_ignored_and_replaced(project):
    first = _fresh_pool(project)
    feats_path = project.path / "cache" / f"pool-{first.version}-features.npy"
    feats_path.write_bytes(b"not an array")
    second = _fresh_pool(project)
    np.testing.assert_array_equal(second.features, first.features)
    assert np.load(feats_path).shape == first.features.shape

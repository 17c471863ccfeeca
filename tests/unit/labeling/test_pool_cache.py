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


def test_a_head_cache_damaged_mid_write_is_refitted_not_raised(project):
    from datasets.cells import read_cells

    cells = read_cells(project.path, ["cell_id", "truth"])
    project.store.submit(dict(zip(cells["cell_id"][:40], cells["truth"][:40])), "ann", "cli")
    first = loop.fit_head(project)
    cache = project.path / "cache" / "head.npz"
    data = bytearray(cache.read_bytes())
    data[len(data) // 3] ^= 0xFF  # what a reader saw when two writers shared a temporary file
    cache.write_bytes(bytes(data))
    again = loop.fit_head(project)
    assert again.classes == first.classes
    np.testing.assert_allclose(again.proba, first.proba, atol=1e-6)


def test_two_threads_replacing_one_file_never_collide(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from datasets.files import replace_file

    out = tmp_path / "cache" / "head.npz"
    arrays = [np.full(50_000, k, np.float32) for k in range(2)]

    def write(k: int) -> None:
        for _ in range(20):
            replace_file(out, lambda fh: np.savez(fh, x=arrays[k]))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(write, range(2)))  # raises when a writer's file vanished under it
    with np.load(out) as z:
        assert len(np.unique(z["x"])) == 1  # one writer's whole file, never a mix
    assert [p.name for p in out.parent.iterdir()] == ["head.npz"]  # no temporary left


def test_a_replaced_file_keeps_its_permissions_and_a_new_one_follows_its_folder(tmp_path):
    from datasets.files import replace_file

    folder = tmp_path / "shared"
    folder.mkdir(mode=0o775)
    folder.chmod(0o775)
    new = folder / "config.toml"
    replace_file(new, lambda fh: fh.write(b"a"))
    assert new.stat().st_mode & 0o777 == 0o664
    new.chmod(0o640)
    replace_file(new, lambda fh: fh.write(b"b"))
    assert new.stat().st_mode & 0o777 == 0o640 and new.read_bytes() == b"b"

"""Work on Dask: a 2-worker LocalCluster (processes) gives the same cells and features as one
process, and a worker killed mid-task costs a retry, never a missing or doubled cell."""

from __future__ import annotations

import functools
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

import datasets.features as features_mod
from datasets.errors import DataError
from datasets.features import compute_morphology, read_features
from datasets.parallel import ParallelConfig, Runner

pytestmark = pytest.mark.slow
pytest.importorskip("distributed")


def _claim(marker: str) -> bool:
    """True for exactly one caller: the one that creates ``marker``."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _kill_once(marker: str, when: str, fn, item):
    """Run ``fn(item)``; the first task to get here SIGKILLs its own worker process, before
    (``when="before"``) or after (``"after"``) the task's work, so the task runs again."""
    if when == "before" and _claim(marker):
        os.kill(os.getpid(), signal.SIGKILL)
    out = fn(item)
    if when == "after" and _claim(marker):
        os.kill(os.getpid(), signal.SIGKILL)
    return out


class _KillingRunner(Runner):
    def __init__(self, config: ParallelConfig, marker: Path, when: str) -> None:
        super().__init__(config)
        self.marker, self.when = str(marker), when

    def map(self, fn, items, **kwargs):
        return super().map(functools.partial(_kill_once, self.marker, self.when, fn), items,
                           **kwargs)  # fmt: skip


def _fresh_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for path in (dst / "features").glob("morphology-*.parquet"):
        path.unlink()
    return dst


@pytest.fixture(scope="module")
def reference(small_project):
    return read_features(small_project)


@pytest.mark.parametrize("when", ["before", "after"])
def test_two_workers_equal_one_process_even_when_a_worker_is_killed(
    small_project, reference, tmp_path, monkeypatch, when
):
    monkeypatch.setattr(features_mod, "CHUNK_CELLS", 128)  # 600 cells: 5 tasks
    project = _fresh_copy(small_project, tmp_path / "p")
    marker = tmp_path / "killed"
    seen = []
    with _KillingRunner(ParallelConfig(workers=2), marker, when) as runner:
        n = compute_morphology(project, progress=lambda d, t: seen.append((d, t)),
                               runner=runner)  # fmt: skip
        assert not runner.local
    assert marker.exists()  # a worker really died
    ids, feats, names = read_features(project)
    ref_ids, ref_feats, ref_names = reference
    assert n == len(ref_ids) and names == ref_names
    assert ids.tolist() == ref_ids.tolist()  # same cells, same order, none doubled
    np.testing.assert_allclose(feats, ref_feats, rtol=0, atol=1e-6)
    assert seen[-1] == (n, n) and len(seen) == 5
    assert not list((project / "features").glob(".chunks-*"))


def test_in_process_for_one_worker_and_small_inputs():
    assert ParallelConfig(workers=1).in_process(10**7)
    assert ParallelConfig().in_process(100)
    assert not ParallelConfig(workers=2).in_process(100)
    assert not ParallelConfig(scheduler="tcp://127.0.0.1:1").in_process(1)
    with pytest.raises(DataError, match="workers=0"):
        ParallelConfig(workers=0)


def test_scheduler_from_the_environment(monkeypatch):
    monkeypatch.setenv("PHENOSCOUT_SCHEDULER", "tcp://10.0.0.1:8786")
    assert ParallelConfig.from_env().scheduler == "tcp://10.0.0.1:8786"
    assert ParallelConfig.from_env(scheduler="tcp://h:1").scheduler == "tcp://h:1"


def _fails(item):
    if item == 2:
        raise DataError(f"item {item}: bad")
    return item * 10


def test_existing_scheduler_results_in_order_and_one_line_errors():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:  # fmt: skip
        with Runner(ParallelConfig(scheduler=cluster.scheduler_address)) as runner:
            assert runner.map(_fails, [0, 1, 3, 4, 5]) == [0, 10, 30, 40, 50]
            with pytest.raises(DataError, match=r"^item 2: bad$"):
                runner.map(_fails, [1, 2, 3])


def test_unreachable_scheduler_is_one_line():
    with Runner(ParallelConfig(scheduler="tcp://127.0.0.1:9")) as runner:
        with pytest.raises(DataError, match="cannot connect"):
            runner.map(_fails, [1])


def test_crop_ingest_on_two_workers_equals_one_process(small_demo, tmp_path, monkeypatch):
    import datasets.crops.tasks as crop_tasks
    from datasets.cells import read_cells
    from datasets.crops.ingest import ingest_crops
    from datasets.pixels.store import PixelStore

    monkeypatch.setattr(crop_tasks, "CHUNK_CELLS", 100)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    ingest_crops(small_demo, one)
    marker = tmp_path / "killed"
    with _KillingRunner(ParallelConfig(workers=2), marker, "after") as runner:
        report = ingest_crops(small_demo, two, runner=runner)
    assert marker.exists() and report.n_cells == 600
    a, b = read_cells(one), read_cells(two)
    assert a.equals(b)
    ids = a["cell_id"].tolist()
    assert np.array_equal(PixelStore(one).read_raw(ids), PixelStore(two).read_raw(ids))
    assert (one / "pixels" / "parts.json").read_text() == (
        two / "pixels" / "parts.json"
    ).read_text().replace(str(two), str(one))


def test_demo_on_two_workers_has_the_same_bytes(tmp_path):
    from datasets.crops.demo import generate_demo

    generate_demo(tmp_path / "one", n_cells=300, seed=5)
    with Runner(ParallelConfig(workers=2)) as runner:
        generate_demo(tmp_path / "two", n_cells=300, seed=5, runner=runner)
        assert not runner.local
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*"))
    assert one == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*"))
    for rel in one:
        if (tmp_path / "one" / rel).is_file():
            assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()


def _slow_first(item):
    import time

    time.sleep(0.5 if item == 0 else 0.0)
    return item * 2


@pytest.mark.parametrize("workers", [1, 2])
def test_consume_sees_results_in_item_order(workers):
    seen = []
    with Runner(ParallelConfig(workers=workers)) as runner:
        out = runner.map(_slow_first, list(range(6)), consume=lambda i, r: seen.append((i, r)))
    assert seen == [(i, 2 * i) for i in range(6)] and out == [None] * 6


def test_field_ingest_on_two_workers_equals_one_process(tmp_path):
    from datasets.cells import read_cells
    from datasets.fields.demo import generate_demo_fields
    from datasets.fields.files import find_fields
    from datasets.fields.ingest import ingest_fields
    from datasets.fields.store import existing_fields
    from datasets.pixels.store import PixelStore

    generate_demo_fields(tmp_path / "demo", n_fields=4, size=256, seed=2)
    specs, _ = find_fields(tmp_path / "demo", "{plate}_{well}_s{site}_w{channel}.tif", None)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    ingest_fields(specs, one)
    marker = tmp_path / "killed"
    with _KillingRunner(ParallelConfig(workers=2), marker, "after") as runner:
        report = ingest_fields(specs, two, runner=runner)
        assert not runner.local
    assert marker.exists() and report.n_cells > 0
    a, b = read_cells(one), read_cells(two)
    assert a.equals(b)
    ids = a["cell_id"].tolist()
    assert np.array_equal(PixelStore(one).read_raw(ids), PixelStore(two).read_raw(ids))
    assert existing_fields(one).drop(columns=[]).equals(existing_fields(two))
    ome = sorted(p for p in (one / "fields" / "ome").rglob("*") if p.is_file())
    assert len(ome) > 4 * 4  # the fields' OME-Zarr: metadata and chunks, the same bytes
    for path in ome:
        assert path.read_bytes() == (two / path.relative_to(one)).read_bytes()
    stored = sorted(p.relative_to(one) for p in (one / "pixels").rglob("*")
                    if p.is_file() and ".zarr" in str(p))  # fmt: skip
    assert len(stored) >= 4  # crops and masks: metadata and shard of each
    for rel in stored:  # the Zarr arrays (crops, masks) are the same bytes
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    assert not (two / "pixels" / ".field-chunks").exists()

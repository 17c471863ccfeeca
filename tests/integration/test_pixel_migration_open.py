"""A project saved by an earlier version (.npy pixel parts) is converted when it is opened."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from datasets.cells import read_cells, read_manifest
from datasets.pixels.store import PixelStore
from labeling.project import open_project
from tests.unit.datasets.test_pixel_migration import make_old_format


def test_opening_an_old_project_converts_its_pixels_once(tmp_path, small_project):
    project = Path(shutil.copytree(small_project, tmp_path / "proj"))
    ids = read_cells(project)["cell_id"].tolist()
    raw = PixelStore(project).read_raw(ids)
    make_old_format(project)
    open_project(project).close()
    backup = project / "pixels" / "backup-npy"
    assert [p.name for p in backup.iterdir()] == ["part-0000.npy"]
    assert read_manifest(project)["format"] == 3  # then laid out one array per plate
    assert [p.name for p in (project / "pixels" / "backup-format2").iterdir()] == [
        "part-0000.zarr"  # every demo cell has a plate
    ]
    assert len(list((project / "pixels" / "plates").glob("*.zarr"))) == 2  # the demo's plates
    np.testing.assert_array_equal(PixelStore(project).read_raw(ids), raw)
    np.testing.assert_array_equal(np.load(backup / "part-0000.npy"), raw)
    before = sorted((p, p.stat().st_mtime_ns) for p in (project / "pixels").rglob("*"))
    open_project(project).close()  # a second opening does nothing
    assert sorted((p, p.stat().st_mtime_ns) for p in (project / "pixels").rglob("*")) == before

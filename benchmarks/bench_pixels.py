"""Pixel store speed on a project: reading in table order, scattered cold reads, writing.

Usage: ``python benchmarks/bench_pixels.py PROJECT [--repeat 3] [--write-cells 20000]
[--module PATH]`` (``--module`` loads another version of ``datasets/pixels/arrays.py``, or of
the older ``datasets/pixels.py``, e.g. the one of an earlier commit, to compare). Prints
medians:

1. all cells in table order, normalised (``PixelStore.iter_batches(1024)``), crops/s, warm cache;
2. 24 crops scattered over the screen, cold page cache (``posix_fadvise(DONTNEED)``) and a
   fresh store, ms (median of 9 draws);
3. the ingest's last copy (``copy_npy_to_zarr``) of the first ``--write-cells`` crops, ms per
   crop, with one thread and with the default threads (``_WRITE_THREADS``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_module(path: str | None) -> ModuleType:
    if path is None:
        import datasets.pixels.arrays

        return datasets.pixels.arrays
    spec = importlib.util.spec_from_file_location("pixels_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def store_of(px: ModuleType, project: Path):  # noqa: ANN201 - either version's store
    """The project's PixelStore: ``px``'s when it has one (before datasets.pixels.store)."""
    if hasattr(px, "PixelStore"):
        return px.PixelStore(project)
    from datasets.pixels.store import PixelStore

    return PixelStore(project)


def table_order(px: ModuleType, project: Path) -> float:
    store = store_of(px, project)
    t0 = time.perf_counter()
    n = sum(len(ids) for ids, _ in store.iter_batches(1024))
    return n / (time.perf_counter() - t0)


def cold(px: ModuleType, project: Path, draws: int = 9) -> list[float]:
    ids = store_of(px, project)._ids.to_numpy()  # noqa: SLF001 - a benchmark may look inside
    rng = np.random.default_rng(1)
    times = []
    for _ in range(draws):
        for path in (project / "pixels").rglob("*"):
            if path.is_file():
                fd = os.open(path, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
        pick = list(ids[rng.choice(len(ids), 24, replace=False)])
        store = store_of(px, project)
        t0 = time.perf_counter()
        store.read(pick)
        times.append(time.perf_counter() - t0)
    return times


def write(px: ModuleType, project: Path, cells: int, threads: int) -> float:
    store = store_of(px, project)
    rows = store.read_raw(store._ids[: min(cells, store.n_cells)].tolist())  # noqa: SLF001
    with tempfile.TemporaryDirectory(dir=project) as tmp:
        np.save(Path(tmp) / "src.npy", rows)
        if hasattr(px, "copy_npy_to_zarr"):  # a version before datasets.pixels.writer and .npy
            copy, writer = px.copy_npy_to_zarr, px
        else:
            import datasets.pixels.npy
            import datasets.pixels.writer

            copy, writer = datasets.pixels.npy.copy_npy_to_zarr, datasets.pixels.writer
        if hasattr(writer, "_WRITE_THREADS"):
            setattr(writer, "_WRITE_THREADS", threads)  # noqa: B010 - another version may lack it
        t0 = time.perf_counter()
        copy(Path(tmp) / "src.npy", Path(tmp) / "dst.zarr")
        return (time.perf_counter() - t0) / len(rows) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write-cells", type=int, default=20000)
    parser.add_argument("--module", default=None)
    args = parser.parse_args()
    px = load_module(args.module)
    print(f"module {px.__file__}, {os.cpu_count()} CPUs")
    table_order(px, args.project)  # warm the page cache
    speeds = [table_order(px, args.project) for _ in range(args.repeat)]
    print(f"table order, normalised: median {statistics.median(speeds):,.0f} crops/s "
          f"({', '.join(f'{s:,.0f}' for s in speeds)})")  # fmt: skip
    times = cold(px, args.project)
    print(f"24 scattered crops, cold: median {statistics.median(times) * 1000:.0f} ms, "
          f"max {max(times) * 1000:.0f} ms")  # fmt: skip
    default = getattr(px, "_WRITE_THREADS", 1)
    for threads in sorted({1, default}):
        ms = [write(px, args.project, args.write_cells, threads) for _ in range(args.repeat)]
        print(f"copy into Zarr, {threads} thread(s): median {statistics.median(ms):.3f} ms/crop "
              f"({', '.join(f'{m:.3f}' for m in ms)})")  # fmt: skip


if __name__ == "__main__":
    main()

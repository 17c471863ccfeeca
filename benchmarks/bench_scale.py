"""The scale table of issue 16: a big demo screen from generation to a batch, on this machine.

Steps (each timed with a wall clock; the trainer is off, ``PHENOSCOUT_TRAINER=off``):

1. ``phenoscout demo --cells N`` (a fresh process);
2. ``phenoscout init --workers W`` (read, normalise, features), with the peak of the summed
   resident memory of the process and all its children (Dask workers), sampled every 0.2 s;
3. one round in process (refit, score all, select; ``next_batch`` after labeling ~200 cells
   with the truth), median over ``--rounds`` after one warm-up round (which builds the pool
   index, reported apart);
4. ``phenoscout next --n 24`` in a fresh process, median of 3;
5. 24 crops scattered over the screen read with the page cache of the pixel files dropped
   first (``posix_fadvise(DONTNEED)``) and a fresh pixel store, median of 5 draws;
6. ingest speed-up 1 -> 2 workers on the first ``--speedup-cells`` cells of the demo
   (hard links to its site files), ``init`` with ``--workers 1`` and ``--workers 2``.

Usage::

    nice -n 10 python benchmarks/bench_scale.py --cells 1000000 --workdir /tmp/ps_scale
    python benchmarks/bench_scale.py --cells 20000 --speedup-cells 20000   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PHENOSCOUT = [sys.executable, "-m", "labeling.cli.commands"]
ENV = {**os.environ, "PHENOSCOUT_TRAINER": "off"}


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run(cmd: list[str], what: str, quiet: bool = True) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak summed RSS of it and its children in bytes)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=subprocess.PIPE if quiet else None,
                            stderr=subprocess.PIPE if quiet else None, text=True)  # fmt: skip
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {(err or '')[-2000:]}")
    return seconds, peak[0]


def demo(workdir: Path, n_cells: int, workers: int | None) -> tuple[Path, float | None]:
    data = workdir / f"demo_{n_cells}"
    if (data / "labels.csv").exists():
        return data, None
    cmd = [*PHENOSCOUT, "demo", "--out", str(data), "--cells", str(n_cells), "--seed", "0"]
    if workers:
        cmd += ["--workers", str(workers)]
    seconds, _ = run(cmd, "demo")
    return data, seconds


def init(data: Path, project: Path, workers: int) -> tuple[float, int]:
    if project.exists():
        import shutil

        shutil.rmtree(project)
    cmd = [*PHENOSCOUT, "init", str(project), "--crops", str(data), "--workers", str(workers)]
    return run(cmd, "init")


def rounds_in_process(project_dir: Path, n_rounds: int) -> tuple[float, list[float], int]:
    """(first round incl. pool index, later round totals, feature count)."""
    from labeling.loop import next_batch, pool_data
    from labeling.project import open_project

    project = open_project(project_dir)
    truth = project.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    rng = np.random.default_rng(0)
    store = project.store
    store.release("bench")
    if len(store.current_labels()) < 100:  # a labeled start: ~200 cells, every class
        picked = {}
        for cls, ids in truth.groupby(truth).groups.items():
            ids = list(ids)
            take = rng.choice(len(ids), min(len(ids), 30), replace=False)
            picked.update({ids[i]: cls for i in take})
        store.submit(picked, "bench", "import")
    t0 = time.perf_counter()
    batch = next_batch(project, 24, annotator="bench", resume=False)
    first = time.perf_counter() - t0
    store.submit({b["cell_id"]: truth[b["cell_id"]] for b in batch}, "bench", "batch")
    totals = []
    for _ in range(n_rounds):
        t0 = time.perf_counter()
        batch = next_batch(project, 24, annotator="bench", resume=False)
        totals.append(time.perf_counter() - t0)
        store.submit({b["cell_id"]: truth[b["cell_id"]] for b in batch}, "bench", "batch")
    n_features = pool_data(project).features.shape[1]
    project.close()
    return first, totals, n_features


def next_fresh(project_dir: Path, repeats: int = 3) -> list[float]:
    times = []
    for _ in range(repeats):
        cmd = [*PHENOSCOUT, "next", str(project_dir), "--n", "24", "--annotator", "fresh"]
        times.append(run(cmd, "next")[0])
    return times


def crops_cold(project_dir: Path, draws: int = 5) -> list[float]:
    """Seconds to read 24 scattered crops after evicting the pixel files from the page cache,
    each draw with a fresh store (so the Zarr shard indexes are read from disk too) whose
    cell-id map is built first (a hash of every id, once per process: not pixel I/O)."""
    from datasets.pixels.store import PixelStore

    ids = PixelStore(project_dir)._ids.to_numpy()  # noqa: SLF001 - a benchmark may look inside
    rng = np.random.default_rng(1)
    files = sorted((project_dir / "pixels").rglob("*"))
    times = []
    for _ in range(draws):
        for path in files:
            if path.is_file():
                fd = os.open(path, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
        pick = ids[rng.choice(len(ids), 24, replace=False)]
        store = PixelStore(project_dir)
        store._positions(ids[:1])  # noqa: SLF001 - builds the id map, once per process (0.3-0.4 s at 10^6)
        t0 = time.perf_counter()
        store.read(list(pick))
        times.append(time.perf_counter() - t0)
    return times


def subset(data: Path, n_cells: int, out: Path) -> Path:
    """A crops folder with the first site files of ``data`` holding ``n_cells`` cells or more
    (hard links: no copy), with the matching labels.csv and metadata.csv rows."""
    import pandas as pd

    if (out / "labels.csv").exists():
        return out
    labels = pd.read_csv(data / "labels.csv")
    files = labels["path"].str.split("#").str[0]
    order = list(dict.fromkeys(files))
    counts = files.value_counts()
    keep, n = [], 0
    for name in order:
        if n >= n_cells:
            break
        keep.append(name)
        n += int(counts[name])
    for name in keep:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        os.link(data / name, out / name)
    rows = files.isin(set(keep))
    labels[rows].to_csv(out / "labels.csv", index=False)
    meta = pd.read_csv(data / "metadata.csv", dtype=str)
    meta[rows.to_numpy()].to_csv(out / "metadata.csv", index=False)
    return out


def tile_project(src: Path, dst: Path, n_cells: int) -> Path:
    """A project of ``n_cells`` cells for the loop steps (round, ``next``) only: ``src``'s cell
    table and morphology features repeated, each copy with its own cell ids and 2% Gaussian
    jitter on every feature (so no two cells are identical); no pixels. Built once."""
    import shutil

    import pandas as pd
    import pyarrow.parquet as pq

    from datasets.cells import read_cells, write_cells
    from labeling.store.labels import LabelStore

    if (dst / "labels.db").exists():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    (dst / "features").mkdir(parents=True)
    shutil.copy(src / "project.toml", dst / "project.toml")
    shutil.copy(src / "features" / "channels.json", dst / "features" / "channels.json")
    cells = read_cells(src)
    feats = [pq.read_table(p).to_pandas() for p in sorted((src / "features").glob("morph*"))]
    feats = pd.concat(feats, ignore_index=True)
    name = sorted((src / "features").glob("morph*"))[0].name.rsplit("-part-", 1)[0]
    rng = np.random.default_rng(0)
    copies, k, n = [], 0, 0
    while n < n_cells:
        take = min(len(cells), n_cells - n)
        part = cells.iloc[:take].copy()
        part["cell_id"] = f"t{k}." + part["cell_id"].astype(str)
        part["part"], part["row"] = k, np.arange(take)
        f = feats.iloc[:take].copy()
        f["cell_id"] = part["cell_id"].to_numpy()
        cols = [c for c in f.columns if c != "cell_id"]
        values = f[cols].to_numpy(np.float32)
        sd = values.std(axis=0, keepdims=True)
        f[cols] = values + rng.normal(0, 0.02, values.shape).astype(np.float32) * sd
        f.to_parquet(dst / "features" / f"{name}-part-{k:04d}.parquet", index=False)
        copies.append(part)
        n, k = n + take, k + 1
    table = pd.concat(copies, ignore_index=True)
    write_cells(dst, table)
    with LabelStore(dst / "labels.db", create=True) as store:
        store.add_cells(table["cell_id"].tolist())
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2, help="init's workers (default 2)")
    parser.add_argument("--demo-workers", type=int, default=None,
                        help="demo --workers (default: the demo's own default)")  # fmt: skip
    parser.add_argument("--speedup-cells", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ps_scale")
    parser.add_argument("--skip-speedup", action="store_true")
    parser.add_argument("--skip-init", action="store_true", help="reuse the project if built")
    parser.add_argument(
        "--loop-cells",
        type=int,
        default=0,
        help="run the round and next steps on a project of this many cells made by repeating "
        "the demo's cells and features (see tile_project)",
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str]] = []

    def show(step: str, value: str, goal: str) -> None:
        rows.append((step, value, goal))
        print(f"{step}: {value}   (goal {goal})", flush=True)

    n = args.cells
    data, seconds = demo(args.workdir, n, args.demo_workers)
    show(
        f"`phenoscout demo --cells {n}`",
        f"{seconds:.0f} s ({n / seconds:,.0f} cells/s)" if seconds else "reused",
        "<= 5 min",
    )
    project = args.workdir / f"project_{n}"
    if args.skip_init and (project / "labels.db").exists():
        seconds, peak = float("nan"), 0
    else:
        seconds, peak = init(data, project, args.workers)
    show(f"`phenoscout init` ({args.workers} workers)",
         f"{seconds:.0f} s ({n / seconds:,.0f} cells/s), peak memory {peak / 2**30:.2f} GiB "
         "(summed RSS of all processes)", "<= 15 min, <= 6 GB")  # fmt: skip
    loop_project = project
    if args.loop_cells and args.loop_cells != n:
        loop_project = tile_project(project, args.workdir / f"tiled_{args.loop_cells}",
                                    args.loop_cells)  # fmt: skip
        print(f"loop steps on {args.loop_cells:,} cells: the {n:,}-cell project's cells and "
              "features repeated with 2% jitter (no pixels)", flush=True)  # fmt: skip
    first, totals, n_features = rounds_in_process(loop_project, args.rounds)
    show(f"one round in process (refit, score all, select), {args.loop_cells or n:,} cells",
         f"median {statistics.median(totals):.2f} s, max {max(totals):.2f} s over "
         f"{len(totals)} rounds ({n_features} morphology features); first round with the pool "
         f"index {first:.1f} s", "median <= 1 s")  # fmt: skip
    times = next_fresh(loop_project)
    show(f"`phenoscout next --n 24`, fresh process, {args.loop_cells or n:,} cells",
         f"median {statistics.median(times):.2f} s (of {', '.join(f'{t:.2f}' for t in times)})",
         "median <= 3 s")  # fmt: skip
    cold = crops_cold(project)
    show("24 scattered crops read, cold page cache",
         f"median {statistics.median(cold) * 1000:.0f} ms, max {max(cold) * 1000:.0f} ms",
         "<= 50 ms")  # fmt: skip
    show("app: next batch drawn", "not measured here (bench_browser.py at 20,000 cells)",
         "<= 2 s")  # fmt: skip
    if not args.skip_speedup:
        m = min(args.speedup_cells, n)
        part = subset(data, m, args.workdir / f"subset_{m}")
        one, _ = init(part, args.workdir / "speedup_1", 1)
        two, _ = init(part, args.workdir / "speedup_2", 2)
        show(f"ingest speed-up 1 -> 2 workers ({m:,} cells)",
             f"{one / two:.2f}x ({one:.0f} s -> {two:.0f} s)", ">= 1.6x")  # fmt: skip
    print(f"\n| step, {n:,}-cell demo | measured | goal |\n|---|---|---|")
    for step, value, goal in rows:
        print(f"| {step} | {value} | {goal} |")


if __name__ == "__main__":
    main()

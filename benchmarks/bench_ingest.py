"""Benchmark ``ingest_crops``: crops per second and peak memory at 10^4 and 10^5 cells.

Each size is ingested in a fresh subprocess, which reports its wall time and its peak resident
set size (``VmHWM`` from /proc/self/status, falling back to ``getrusage``). Peak RSS should stay
flat from 10^4 to 10^5 cells: pixels stream through a memory-mapped window, so only the cell
table grows with n.

Usage::

    python benchmarks/bench_ingest.py                       # 10^4 and 10^5 cells
    python benchmarks/bench_ingest.py --sizes 2000 --generator synthetic
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CELLS_PER_FILE = 200


def synthetic_cells(out_dir: Path, n_cells: int, seed: int = 0) -> None:
    """Stand-in generator: npz files of 200 cells, (n, 2, 64, 64) uint16, with ``labels``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, n_cells, CELLS_PER_FILE)):
        n = min(CELLS_PER_FILE, n_cells - start)
        radius = rng.uniform(8, 20, size=(n, 1, 1))
        disc = ((yy - 32) ** 2 + (xx - 32) ** 2)[None] < radius**2  # (n, 64, 64)
        images = rng.poisson(40.0, size=(n, 2, 64, 64)).astype(np.float32)
        images += disc[:, None] * rng.uniform(200, 3000, size=(n, 2, 1, 1))
        labels = rng.choice(np.array(["a", "b", "rare"]), size=n, p=[0.6, 0.39, 0.01])
        np.savez(out_dir / f"batch{k:05d}.npz", images=images.astype(np.uint16), labels=labels)


def generate(out_dir: Path, n_cells: int, generator: str) -> str:
    """Write ``n_cells`` cells into ``out_dir`` (reused when already there); returns the name."""
    marker = out_dir / ".complete"
    if generator == "auto":
        try:
            import datasets.crops.demo  # noqa: F401

            generator = "demo"
        except ImportError:
            generator = "synthetic"
    if marker.is_file() and marker.read_text() == generator:
        return generator
    shutil.rmtree(out_dir, ignore_errors=True)
    if generator == "demo":
        from datasets.crops.demo import generate_demo

        generate_demo(out_dir, n_cells=n_cells, seed=0)
    else:
        synthetic_cells(out_dir, n_cells)
    marker.write_text(generator)
    return generator


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(src: Path, project: Path) -> None:
    """Ingest ``src`` into ``project`` and print one JSON line with the measurements."""
    from datasets.crops.ingest import ingest_crops

    rss_before = peak_rss_mib()
    project.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = ingest_crops(src, project)
    seconds = time.perf_counter() - start
    result = {
        "n_cells": report.n_cells,
        "seconds": seconds,
        "rss_after_imports_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
        "normalise_by": report.normalise_by,
    }
    print(json.dumps(result))


def run_size(workdir: Path, n_cells: int, generator: str) -> dict:
    src = workdir / f"cells_{n_cells}"
    t0 = time.perf_counter()
    used = generate(src, n_cells, generator)
    gen_s = time.perf_counter() - t0
    project = workdir / f"project_{n_cells}"
    shutil.rmtree(project, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", str(src), str(project)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result.update(generator=used, generate_s=gen_s, rusage_children_max_mib=children)
    shutil.rmtree(project, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--generator", choices=["auto", "demo", "synthetic"], default="auto")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps generated inputs")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.child:
        child(*args.child)
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    rows = [run_size(workdir, n, args.generator) for n in args.sizes]
    print(f"{'cells':>8} {'generator':>9} {'ingest s':>9} {'crops/s':>9} {'peak RSS MiB':>13}")
    for r in rows:
        print(
            f"{r['n_cells']:>8} {r['generator']:>9} {r['seconds']:>9.1f} "
            f"{r['n_cells'] / r['seconds']:>9.0f} {r['peak_rss_mib']:>13.0f}"
        )
    if len(rows) > 1:
        growth = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"] - 1
        print(f"peak RSS growth {rows[0]['n_cells']} -> {rows[-1]['n_cells']}: {growth:+.0%}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

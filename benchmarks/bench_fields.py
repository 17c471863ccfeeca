"""Benchmark field ingest: 2048x2048 2-channel fields per second and peak memory.

Two demo fields are generated once (``datasets.fields.demo``) and copied under new names to
make screens of N fields (the ingest does the same work per copy). Each run ingests one screen
in a fresh subprocess, which reports its wall time and peak resident set size (``VmHWM``). Peak
RSS should stay flat as N grows: fields stream one at a time. Two modes: the true masks used as
given, and classical segmentation (``datasets.segmentation``). Features are not part of the timing.

Usage::

    python benchmarks/bench_fields.py                     # 4 and 16 fields, both modes
    python benchmarks/bench_fields.py --fields 4 --size 1024 --modes given
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATTERN = "{plate}_{well}_s{site}_w{channel}.tif"


def make_screen(src: Path, out: Path, n_fields: int) -> None:
    """``n_fields`` fields in ``out``: copies of the fields in ``src`` under new well names."""
    keys = sorted(p.stem for p in (src / "masks").glob("*.tif"))
    (out / "masks").mkdir(parents=True)
    for i in range(n_fields):
        key = keys[i % len(keys)]
        new = f"P9_X{i:03d}_s1"
        for channel in (1, 2):
            shutil.copy(src / f"{key}_w{channel}.tif", out / f"{new}_w{channel}.tif")
        shutil.copy(src / "masks" / f"{key}.tif", out / "masks" / f"{new}.tif")


def child(folder: Path, project: Path, mode: str) -> None:
    """Ingest ``folder`` into ``project`` and print wall time, cells and peak RSS as JSON."""
    sys.path.insert(0, str(REPO))
    from bench_ingest import peak_rss_mib

    from datasets.fields.files import find_fields
    from datasets.fields.ingest import ingest_fields

    masks = folder / "masks" if mode == "given" else None
    start = time.perf_counter()
    fields, _ = find_fields(folder, PATTERN, masks)
    report = ingest_fields(fields, project)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "fields": len(fields), "cells": report.n_cells,
                      "peak_rss_mib": peak_rss_mib()}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--modes", nargs="+", default=["given", "classical"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.child[2])
        return
    from datasets.fields.demo import generate_demo_fields

    with tempfile.TemporaryDirectory(prefix="bench-fields-") as tmp:
        src = Path(tmp) / "src"
        generate_demo_fields(src, n_fields=2, size=args.size, seed=0)
        for n in args.fields:
            screen = Path(tmp) / f"screen{n}"
            make_screen(src, screen, n)
            for mode in args.modes:
                project = Path(tmp) / f"p-{n}-{mode}"
                project.mkdir()
                cmd = [sys.executable, __file__, "--child", str(screen), str(project), mode]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{n:>3} fields {args.size}x{args.size} {mode:<9} "
                      f"{r['fields'] / r['seconds']:.2f} fields/s  {r['cells']:>6} cells  "
                      f"peak RSS {r['peak_rss_mib']:.0f} MiB")  # fmt: skip
                shutil.rmtree(project)


if __name__ == "__main__":
    main()

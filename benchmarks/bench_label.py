"""Latency of `phenoscout label`: process start to the "committed N" line, and the full command.

Usage::

    python benchmarks/bench_label.py PROJECT [--repeats 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    from datasets.cells import read_cells

    exe = shutil.which("phenoscout", path=str(Path(sys.executable).parent))
    ids = read_cells(args.project, columns=["cell_id"])["cell_id"].tolist()
    to_commit, total = [], []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [exe, "label", str(args.project), "--annotator", "bench", f"{ids[i]}=bench class"],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = proc.stdout.readline()
        to_commit.append(time.perf_counter() - t0)
        proc.wait()
        total.append(time.perf_counter() - t0)
        assert line.startswith("committed 1"), line
    print(
        f"start -> 'committed': median {statistics.median(to_commit):.3f} s, "
        f"max {max(to_commit):.3f} s; whole command with head refit: median "
        f"{statistics.median(total):.3f} s ({len(ids):,} cells)"
    )


if __name__ == "__main__":
    main()

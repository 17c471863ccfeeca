"""Discovery benchmark: strategies x datasets x batch sizes, by simulated labeling.

For each dataset (the Jurkat cell-cycle crops in ../shared/data when present, and the built-in
demo screen) and batch size, runs ``simulate`` for every strategy over 5 seeds and compares the
median labels needed to find every class with random sampling's median over 2,000 random
orderings of the dataset. Writes a markdown table (and each run's curves, summary and
discovery.png) under --out.

Usage::

    python benchmarks/bench_simulate.py --out artifacts/bench_simulate
    python benchmarks/bench_simulate.py --datasets demo --batch-sizes 10 --seeds 2
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labeling.simulate import SimConfig, load_sim_data, random_labels_to_all, simulate  # noqa: E402

JURKAT = REPO.parent / "shared" / "data" / "jurkat_cellcycle_ifc"


def dataset_dirs(names: list[str], work: Path, demo_cells: int) -> dict[str, Path]:
    from datasets.crops.demo import generate_demo

    out = {}
    for name in names:
        if name == "jurkat":
            if JURKAT.exists():
                out["jurkat"] = JURKAT
            else:
                print(f"skipping jurkat: {JURKAT} not found")
        elif name == "demo":
            path = work / f"demo_{demo_cells}"
            if not (path / "labels.csv").exists():
                generate_demo(path, n_cells=demo_cells, seed=0)
            out["demo"] = path
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench_simulate")
    parser.add_argument("--datasets", nargs="+", default=["jurkat", "demo"])
    parser.add_argument("--strategies", default="discover,random,margin,entropy")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--demo-cells", type=int, default=20_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, path in dataset_dirs(args.datasets, args.out, args.demo_cells).items():
        truth = load_sim_data(path).truth
        for bs in args.batch_sizes:
            random_need = np.median(random_labels_to_all(truth, bs, n_orderings=2000))
            cfg = SimConfig(strategies=tuple(args.strategies.split(",")), budget=args.budget,
                            batch_size=bs, seeds=args.seeds)
            t0 = time.perf_counter()
            summary = simulate(path, cfg, args.out / f"{name}_b{bs}")
            print(f"{name} batch {bs}: {time.perf_counter() - t0:.0f} s")
            for strategy, grp in summary.groupby("strategy", sort=False):
                need = grp["labels_to_all_classes"]
                rows.append({
                    "dataset": name, "n_cells": len(truth), "batch": bs, "strategy": strategy,
                    "labels_to_all (median)": need.median() if need.notna().all() else None,
                    "runs finding all": f"{int(need.notna().sum())}/{len(grp)}",
                    "random median (2000 orderings)": random_need,
                    "macro_f1 @budget": round(grp["macro_f1"].median(), 3),
                    "bal_acc @budget": round(grp["balanced_accuracy"].median(), 3),
                    "round s": round(grp["mean_round_seconds"].mean(), 3),
                })  # fmt: skip
    table = pd.DataFrame(rows)
    (args.out / "table.md").write_text(table.to_markdown(index=False) + "\n")
    table.to_csv(args.out / "table.csv", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()

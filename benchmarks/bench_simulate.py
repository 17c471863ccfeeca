"""Discovery benchmark: discover against its peers (random, margin, entropy) on every screen.

For each screen, runs ``simulate`` (one stratified held-out split per seed, 25% of each class,
the same for every strategy of the seed; whole movies for MitoCheck) and prints the peer table:
median labels to all classes and held-out macro-F1 per strategy, the F1 gap of discover minus
the best other strategy (paired by seed, 95% t-interval), random sampling's median over
orderings of the pools rounded up to a batch, and whether discover meets the goal (issue 14).

Screens: Jurkat cell cycle, MitoCheck H2B phenotypes, MP-IDB falciparum stages (all in
../shared/data when present), the built-in demo, ``jurkat-bf`` (Jurkat's brightfield channel
alone, label-free imaging: written into the work folder once), and rare-class screens built from
them by subsampling (``*-rare``: the smallest classes cut to 0.5% of the screen, at least 4 cells).

Usage::

    nice -n 10 python benchmarks/bench_simulate.py --out artifacts/bench_simulate
    python benchmarks/bench_simulate.py --datasets jurkat demo --seeds 3 --budget 100
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

from labeling.simulate import SimConfig, SimData, load_sim_data, simulate  # noqa: E402

DATA = REPO.parent / "shared" / "data"
REAL = {
    "jurkat": ("jurkat_cellcycle_ifc", None),
    "mitocheck": ("mitocheck_h2b_phenotypes", r"([^/]+___P\d+)_"),  # group by movie
    "mpidb": ("mpidb_falciparum_stages", None),
}
RARE_SHARE = 0.005  # default share of each cut class in a *-rare screen (--rare-share)
RARE_CLASSES = 3  # classes cut in a *-rare screen


def rare_subsample(data: SimData, seed: int = 0, share: float = RARE_SHARE) -> SimData:
    """The screen with its :data:`RARE_CLASSES` smallest classes of over 1% cut to ``share``
    of the screen (at least 4 cells each)."""
    rng = np.random.default_rng(seed)
    counts = pd.Series(data.truth).value_counts()
    big = counts[counts > 0.01 * len(data.truth)]
    cut = list(big.index[1:][-RARE_CLASSES:])  # never the largest class
    keep = np.ones(len(data.truth), dtype=bool)
    n_rest = int(counts.drop(cut).sum())
    for name in cut:
        members = np.flatnonzero(data.truth == name)
        k = max(4, round(share * n_rest / (1 - share * len(cut))))
        keep[rng.choice(members, size=len(members) - min(k, len(members)), replace=False)] = False
    return data.subset(keep)


def brightfield_jurkat(work: Path) -> Path:
    """Jurkat with its brightfield channel only (channel 0 of each crop, the rest dropped), as
    a label-free screen would be imaged; written under ``work`` once, with the same labels.csv."""
    import tifffile

    src, out = DATA / REAL["jurkat"][0], work / "jurkat_brightfield"
    if (out / "labels.csv").exists():
        return out
    labels = pd.read_csv(src / "labels.csv")
    for rel in labels["path"]:
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(dst, tifffile.imread(src / rel)[0])  # crops are (3, h, w)
    labels.to_csv(out / "labels.csv", index=False)
    return out


def screens(
    names: list[str], work: Path, demo_cells: int, rare_share: float = RARE_SHARE
) -> dict[str, tuple[SimData, str | None]]:
    from datasets.crops.demo import generate_demo

    out: dict[str, tuple[SimData, str | None]] = {}
    for name in names:
        base = name.removesuffix("-rare")
        if base == "demo":
            path = work / f"demo_{demo_cells}"
            if not (path / "labels.csv").exists():
                generate_demo(path, n_cells=demo_cells, seed=0)
            pattern = None
        elif base == "jurkat-bf":
            if not (DATA / REAL["jurkat"][0]).exists():
                print(f"skipping {name}: Jurkat not found in {DATA}")
                continue
            path, pattern = brightfield_jurkat(work), None
        elif base in REAL:
            path, pattern = DATA / REAL[base][0], REAL[base][1]
            if not path.exists():
                print(f"skipping {name}: {path} not found")
                continue
        else:
            raise SystemExit(f"unknown dataset {name!r}")
        data = load_sim_data(path)
        rare = name.endswith("-rare")
        out[name] = (rare_subsample(data, share=rare_share) if rare else data, pattern)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench_simulate")
    parser.add_argument(
        "--datasets", nargs="+",
        default=["jurkat", "mitocheck", "mpidb", "demo", "jurkat-rare", "mitocheck-rare"],
    )  # fmt: skip
    parser.add_argument("--strategies", default="discover,random,margin,entropy")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--demo-cells", type=int, default=20_000)
    parser.add_argument("--rare-share", type=float, default=RARE_SHARE,
                        help="share of each cut class in the *-rare screens")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    chosen = screens(args.datasets, args.out, args.demo_cells, args.rare_share)
    for name, (data, pattern) in chosen.items():
        cfg = SimConfig(
            strategies=tuple(args.strategies.split(",")),
            budget=args.budget,
            batch_size=args.batch_size,
            seeds=args.seeds,
            group_pattern=pattern,
        )
        t0 = time.perf_counter()
        summary = simulate(data, cfg, args.out / name, title=name)
        share = pd.Series(data.truth).value_counts(normalize=True)
        print(f"\n== {name}: {len(data.truth)} cells, {len(share)} classes, rarest "
              f"{100 * share.min():.2f}% ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
        print(summary.attrs["text"], flush=True)
        found = pd.read_csv(args.out / name / "found.csv")
        last = found[found["strategy"] == cfg.strategies[0]].groupby("seed").tail(1)
        last_by = last["found_by"].value_counts()
        peers = summary.attrs["peers"].set_index("strategy")
        verdict = summary.attrs["verdict"]
        strategies = list(peers.index)
        rows.append({
            "screen": name, "cells": len(data.truth), "classes": len(share),
            "rarest %": round(100 * share.min(), 2), "seeds": args.seeds,
            "labels to all: " + " / ".join(strategies): " / ".join(
                f"{peers.loc[s, 'labels_to_all']:.0f}" for s in strategies),
            "random, orderings": verdict["random_orderings"],
            "held-out macro-F1: " + " / ".join(strategies): " / ".join(
                f"{peers.loc[s, 'macro_f1']:.3f}" for s in strategies),
            "F1 gap vs best other": (
                f"{verdict['f1_gap']:+.3f} +- {verdict['f1_gap_ci']:.3f} ({verdict['best_other']})"
                if "f1_gap" in verdict else "-"),  # one strategy: no peer to compare with
            "goal (labels, F1)": (
                f"{'yes' if verdict['labels_ok'] else 'no'}, {'yes' if verdict['f1_ok'] else 'no'}"
                if "f1_ok" in verdict else "-"),
            "round s": round(float(summary["mean_round_seconds"].mean()), 3),
            f"{cfg.strategies[0]}'s last class found by": ", ".join(
                f"{k} {v}/{len(last)}" for k, v in last_by.items()),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    (args.out / "table.md").write_text(table.to_markdown(index=False) + "\n")
    table.to_csv(args.out / "table.csv", index=False)
    print()
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()

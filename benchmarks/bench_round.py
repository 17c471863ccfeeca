"""Round time on a big demo screen: head refit + scoring every cell + selection, per batch.

Builds (once, under --workdir) a demo screen of --cells cells and its project, then runs
--rounds rounds of ``next_batch`` (annotator "bench", batch 24, strategy discover) answering
each batch with the ground truth, and reports the per-round timings the loop records, the
one-off pool index time, and head refit times at 100 / 1,000 / 5,000 labels.

``--features`` overrides the project's ``loop.features`` for the run; ``--fake-embedding D``
first publishes a model version with random D-dimensional backbone embeddings (when the project
has none), to time the rounds that use embeddings without running the trainer.

Usage::

    python benchmarks/bench_round.py --cells 100000 --workdir /tmp/phenoscout_bench
    python benchmarks/bench_round.py --cells 100000 --features morphology+embedding \
        --fake-embedding 56
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build(workdir: Path, n_cells: int) -> Path:
    from datasets.crops.demo import generate_demo
    from labeling.project import create_project

    data, proj = workdir / f"demo_{n_cells}", workdir / f"project_{n_cells}"
    if not (data / "labels.csv").exists():
        t0 = time.perf_counter()
        generate_demo(data, n_cells=n_cells, seed=0)
        print(f"demo generated: {n_cells} cells in {time.perf_counter() - t0:.1f} s")
    if not (proj / "labels.db").exists():
        t0 = time.perf_counter()
        create_project(proj, data)
        print(f"project created (ingest + features): {time.perf_counter() - t0:.1f} s")
    return proj


def fake_version(project_dir: Path, dim: int) -> None:
    """Publish a version with random embeddings, as the trainer would (no torch)."""
    import json

    from datasets.cells import read_cells
    from models.folder import latest_version

    if latest_version(project_dir) is not None:
        return
    folder = project_dir / "models" / "v0001"
    folder.mkdir(parents=True)
    ids = read_cells(project_dir, ["cell_id"])["cell_id"].to_numpy(str)
    emb = np.random.default_rng(0).normal(size=(len(ids), dim)).astype(np.float32)
    np.save(folder / "cell_ids.npy", ids)
    np.save(folder / "embeddings.npy", emb)
    (folder / "classes.json").write_text("[]")
    (folder / "meta.json").write_text(json.dumps({"n_labels": 0, "kind": "unet", "fake": True}))
    print(f"published a stand-in version with {dim}-d random embeddings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/phenoscout_bench"))
    parser.add_argument("--features", default=None, help="loop.features for this run")
    parser.add_argument(
        "--fake-embedding",
        type=int,
        default=0,
        metavar="D",
        help="publish a stand-in version with D-dim random embeddings first",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from labeling.head import HeadConfig, SklearnHead
    from labeling.loop import next_batch, pool_data
    from labeling.project import open_project

    project = open_project(build(args.workdir, args.cells))
    if args.fake_embedding:
        fake_version(project.path, args.fake_embedding)
    if args.features:
        import dataclasses

        loop = dataclasses.replace(project.config.loop, features=args.features)
        project = type(project)(project.path, dataclasses.replace(project.config, loop=loop))
    t0 = time.perf_counter()
    pool = pool_data(project)
    print(
        f"features + pool index (once per feature version): {time.perf_counter() - t0:.1f} s "
        f"({pool.features.shape[1]} features)"
    )
    truth = project.cells(columns=["cell_id", "truth"]).set_index("cell_id")["truth"]
    y = truth.reindex(pool.cell_ids).to_numpy()
    rng = np.random.default_rng(0)
    for n in (100, 1000, 5000):
        rows = rng.choice(len(y), n, replace=False)
        t = time.perf_counter()
        SklearnHead(HeadConfig()).fit(pool.features[rows], list(y[rows]))
        print(f"head refit at {n:>5} labels: {time.perf_counter() - t:.3f} s")
    store = project.store
    store.release("bench")
    totals = []
    for _ in range(args.rounds):
        batch = next_batch(project, 24, annotator="bench", resume=False)
        store.submit({b["cell_id"]: truth[b["cell_id"]] for b in batch}, "bench", "batch")
        timings = store.rounds()[-1]["timings"]
        totals.append(timings["total_s"])
        print(
            f"round: fit {timings['fit_s']:.3f} s, select {timings['select_s']:.3f} s, "
            f"total {timings['total_s']:.3f} s, features {timings.get('features')}"
        )
    print(
        f"mean round {np.mean(totals):.3f} s, max {np.max(totals):.3f} s "
        f"over {len(totals)} rounds at {len(pool.cell_ids):,} cells"
    )


if __name__ == "__main__":
    main()

"""Fine-tune variants on a project with ground truth and a pretrained backbone.

For each variant (a JSON object of ``FinetuneConfig`` fields over the device's shipped
schedule), per stratified fold: fine-tune the backbone's encoder + a linear head on the training
fold (all labels, or ``--per-class N`` of each class), then score the classifier on the test
fold, and linear probes on morphology + the fine-tuned embedding and on that embedding alone
(trained on the same training fold: no leakage). Prints one row per variant (means over folds)
and the morphology probe on the same folds.

Usage (the variants measured for the README's supervised contrastive rows)::

    python benchmarks/bench_finetune.py /tmp/q/jurkat '{}' '{"supcon": 1.0}' '{"supcon": 0.2}'
    python benchmarks/bench_finetune.py /tmp/q/jurkat '{}' '{"supcon": 1.0}' --per-class 10
    python benchmarks/bench_finetune.py /tmp/q/mito '{}' --group movie
    python benchmarks/bench_finetune.py /tmp/q/jurkat '{}' --embed-views 8

The project needs ``models/backbone.pt`` (``phenoscout train`` writes it) and a ``truth`` column
(``init`` reads it from labels.csv).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("variants", nargs="+", help="JSON objects of FinetuneConfig fields")
    parser.add_argument("--per-class", type=int, default=0, help="labels per class (0: all)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--group", help="cell-table column whose groups stay in one fold")
    parser.add_argument("--seed", type=int, default=0, help="fold shuffle and fine-tune seed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--embed-views", type=int, default=1, help="embedding averaged over 1, 2, 4 or 8 views"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")

    import torch
    from bench_models import _fmt, _ft_cv, _one_fold
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    from datasets.cells import read_cells
    from datasets.features import read_features
    from datasets.pixels.store import PixelStore
    from labeling.evaluate import few_per_class
    from models.backbone.checkpoint import build_model, load_checkpoint
    from models.device import resolve_device
    from models.trainer.trainer import TrainerConfig

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    pixels = PixelStore(args.project)
    cells = read_cells(args.project, ["cell_id", "truth", *([args.group] if args.group else [])])
    ids, y = cells["cell_id"].to_numpy(str), cells["truth"].to_numpy(str)
    feat_ids, morph, _ = read_features(args.project)
    if not (feat_ids == ids).all():
        raise SystemExit(f"{args.project}: features and cell table disagree; run init again")
    backbone = build_model(load_checkpoint(args.project / "models" / "backbone.pt"))
    shipped = TrainerConfig.for_device(device).finetune
    per_class = args.per_class or None
    if args.group:
        groups = cells[args.group].to_numpy(str)
        split = StratifiedGroupKFold(args.folds, shuffle=True, random_state=args.seed)
        folds = list(split.split(ids, y, groups))
    else:
        folds = list(
            StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(ids, y)
        )
    rows = np.arange(len(ids))
    probe = [
        _one_fold(morph, y, few_per_class(train, y, per_class, args.seed + k), test)
        for k, (train, test) in enumerate(folds)
    ]
    print(
        f"{len(ids)} cells, {len(set(y))} classes, device {device}, "
        f"{'all labels' if per_class is None else f'{per_class} per class'}"
        f"{f', folds grouped by {args.group}' if args.group else ''}; "
        "balanced accuracy / macro-F1, means over folds",
        flush=True,
    )
    print(
        f"| morphology | {np.mean([a for a, _ in probe]):.3f} / "
        f"{np.mean([b for _, b in probe]):.3f} |",
        flush=True,
    )
    for text in args.variants:
        cfg = dataclasses.replace(shipped, seed=args.seed, **json.loads(text))
        t0 = time.perf_counter()
        clf, comb, alone, secs = _ft_cv(
            pixels,
            backbone,
            ids,
            y,
            morph,
            folds,
            per_class,
            cfg,
            device,
            args.seed,
            rows,
            args.embed_views,
        )
        print(
            f"| {text} | classifier {_fmt(clf)} | morphology + fine-tuned {_fmt(comb)} | "
            f"fine-tuned alone {_fmt(alone)} | {secs:.0f} s per fine-tune, "
            f"{time.perf_counter() - t0:.0f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()

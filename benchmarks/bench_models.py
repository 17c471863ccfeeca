"""Model speed and quality on this machine.

Speed (any project, e.g. the 20,000-cell demo and Jurkat): pretraining crops/s and minutes
with the shipped schedule of the device (``TrainerConfig.for_device``), embedding cells/s in
fp32 and bf16, fine-tune seconds per round.
Quality (a project with ground truth, e.g. Jurkat): stratified 5-fold CV of a balanced
logistic regression on (a) raw-pixel PCA-64, (b) morphology features, (c) the self-supervised
U-Net embedding, (d) (b)+(c), and (e) the fine-tuned classifier itself; with all training
labels and with 10 labels per class (drawn from each training fold).

Usage::

    python benchmarks/bench_models.py /tmp/jurkat_proj --quality --ft-epochs 4
    python benchmarks/bench_models.py /tmp/demo_project --threads 1
    python benchmarks/bench_models.py /tmp/jurkat_proj --quality \\
        --backbone /tmp/jurkat_proj/models/backbone.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def speed(project: Path, device, steps: int, backbone: Path | None) -> tuple[object, dict]:
    """Pretrain with the shipped schedule of ``device`` (or load ``backbone``) and time
    embedding in fp32 and bf16; returns the model and the embedding folder of each."""
    from datasets.pixels.store import PixelStore
    from models.backbone.checkpoint import build_model, load_checkpoint
    from models.backbone.embed import EmbedConfig, embed_cells
    from models.backbone.pretrain import pretrain
    from models.backbone.unet import UNet, UNetConfig
    from models.trainer.trainer import TrainerConfig

    pixels = PixelStore(project)
    shipped = TrainerConfig.for_device(device)
    if backbone is not None:
        model = build_model(load_checkpoint(backbone))
        print(f"pretrain: loaded {backbone}")
    else:
        cfg = dataclasses.replace(shipped.pretrain, max_steps=steps) if steps else shipped.pretrain
        model = UNet(UNetConfig(pixels.n_channels, width=shipped.width, depth=shipped.depth))
        t0 = time.perf_counter()
        history = pretrain(model, pixels, cfg, device)
        sec, last = time.perf_counter() - t0, history[-1]
        print(
            f"pretrain: {pixels.n_cells} cells, {last['step']} steps ({last['stopped']}), "
            f"{last['crops']} crops in {sec:.1f} s = {last['crops'] / sec:.0f} crops/s; "
            f"loss {history[0]['loss']:.4f} -> {last['loss']:.4f}"
        )
    dirs = {}
    for bf16 in (False, True):
        dirs[bf16] = Path(tempfile.mkdtemp(prefix="bench_embed_"))
        res = embed_cells(model, pixels, dirs[bf16], device, EmbedConfig(shipped.embed_batch, bf16))
        print(
            f"embed {'bf16' if bf16 else 'fp32'}: {res.n_cells / res.seconds:.0f} cells/s "
            f"({res.n_cells} cells, d={res.dim}, {pixels.crop_size}x{pixels.crop_size}x"
            f"{pixels.n_channels})",
            flush=True,
        )
    return model, dirs


def cv_scores(x: np.ndarray, y: np.ndarray, folds, per_class: int | None, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    bal, f1 = [], []
    for k, (train, test) in enumerate(folds):
        train = subsample(train, y, per_class, seed + k)
        clf = make_pipeline(
            StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000)
        )
        clf.fit(np.nan_to_num(x[train]), y[train])
        pred = clf.predict(np.nan_to_num(x[test]))
        bal.append(balanced_accuracy_score(y[test], pred))
        f1.append(f1_score(y[test], pred, average="macro"))
    return float(np.mean(bal)), float(np.mean(f1))


def subsample(train: np.ndarray, y: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    if per_class is None:
        return train
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(train[y[train] == c])[:per_class] for c in np.unique(y[train])]
    return np.sort(np.concatenate(keep))


def finetuned_scores(project, backbone, ids, y, folds, per_class, ft, device, seed):
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from datasets.pixels.store import PixelStore
    from models.backbone.finetune import LabeledCells, finetune, predict_logits
    from models.backbone.unet import Classifier

    pixels, classes = PixelStore(project), tuple(sorted(set(y)))
    bal, f1, secs = [], [], []
    for k, (train, test) in enumerate(folds):
        train = subsample(train, y, per_class, seed + k)
        model = Classifier(backbone.config, len(classes))
        model.encoder.load_state_dict(backbone.encoder.state_dict())
        t0 = time.perf_counter()
        finetune(model, pixels, LabeledCells(dict(zip(ids[train], y[train])), classes), ft, device)
        secs.append(time.perf_counter() - t0)
        pred = np.array(classes)[predict_logits(model, pixels, list(ids[test]), device).argmax(1)]
        bal.append(balanced_accuracy_score(y[test], pred))
        f1.append(f1_score(y[test], pred, average="macro"))
    return float(np.mean(bal)), float(np.mean(f1)), float(np.mean(secs))


def quality(project: Path, backbone, dirs: dict, device, epochs: int, seed: int = 0) -> None:
    from sklearn.decomposition import PCA
    from sklearn.model_selection import StratifiedKFold

    from datasets.cells import read_cells
    from datasets.features import read_features
    from datasets.pixels.store import PixelStore

    cells = read_cells(project, ["cell_id", "truth"])
    ids, y = cells["cell_id"].to_numpy(str), cells["truth"].to_numpy(str)
    raw = np.concatenate([b.reshape(len(b), -1) for _, b in PixelStore(project).iter_batches(1024)])
    feat_ids, morph, _ = read_features(project)
    assert (feat_ids == ids).all(), "features are not in cell-table order"
    emb = np.load(dirs[False] / "embeddings.npy")
    sets = {
        "(a) raw-pixel PCA-64": PCA(64, random_state=seed).fit_transform(raw),
        "(b) morphology": morph,
        "(c) U-Net embedding (self-supervised)": emb,
        "(d) morphology + embedding": np.hstack([morph, emb]),
    }
    folds = list(StratifiedKFold(5, shuffle=True, random_state=seed).split(ids, y))
    print(
        "| features | bal. acc (all) | macro-F1 (all) | bal. acc (10/class) | macro-F1 (10/class) |"
    )
    print("|---|---|---|---|---|")
    for name, x in sets.items():
        a, b = cv_scores(x, y, folds, None, seed), cv_scores(x, y, folds, 10, seed)
        print(f"| {name} | {a[0]:.3f} | {a[1]:.3f} | {b[0]:.3f} | {b[1]:.3f} |", flush=True)
    bf16 = np.load(dirs[True] / "embeddings.npy")
    c32, c16 = cv_scores(emb, y, folds, None, seed), cv_scores(bf16, y, folds, None, seed)
    print(
        f"bf16 embedding: bal. acc {c16[0]:.3f} vs fp32 {c32[0]:.3f} "
        f"(drop {c32[0] - c16[0]:+.3f}), macro-F1 {c16[1]:.3f} vs {c32[1]:.3f}",
        flush=True,
    )
    from models.trainer.trainer import TrainerConfig

    ft = TrainerConfig.for_device(device).finetune
    if epochs:
        ft = dataclasses.replace(ft, max_epochs=epochs, short_epochs=epochs)
    ft = dataclasses.replace(ft, seed=seed)
    a = finetuned_scores(project, backbone, ids, y, folds, None, ft, device, seed)
    print(f"(e) all labels: {a[0]:.3f} / {a[1]:.3f}, {a[2]:.1f} s per fine-tune", flush=True)
    b = finetuned_scores(project, backbone, ids, y, folds, 10, ft, device, seed)
    print(
        f"| (e) fine-tuned classifier ({ft.max_epochs} epochs max, {ft.short_epochs} below "
        f"{ft.min_per_class}/class) | {a[0]:.3f} | {a[1]:.3f} | {b[0]:.3f} | {b[1]:.3f} |"
    )
    print(f"fine-tune seconds per round: {a[2]:.1f} (all labels), {b[2]:.1f} (10 per class)")


def main() -> None:
    import torch

    from models.device import resolve_device, seed_everything

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, nargs="?", help="project (not with --check)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=0, help="pretrain steps (0: shipped cap)")
    parser.add_argument("--quality", action="store_true", help="also the CV quality table")
    parser.add_argument(
        "--ft-epochs",
        type=int,
        default=0,
        help="fine-tune epochs (0: the shipped schedule of the device)",
    )
    parser.add_argument(
        "--backbone",
        type=Path,
        default=None,
        help="a pretrained backbone.pt to use instead of pretraining",
    )
    check_args = parser.add_argument_group("the GPU check (benchmarks/gpu_check.sh)")
    check_args.add_argument("--check", action="store_true", help="every figure of the table")
    check_args.add_argument("--prepare-demo", type=Path, help="build the demo project here")
    check_args.add_argument("--cells", type=int, default=100_000, help="demo cells")
    check_args.add_argument("--data", help="Jurkat folder (crops + labels.csv)")
    check_args.add_argument("--work", help="folder for the Jurkat project")
    check_args.add_argument("--demo", help="folder --prepare-demo builds")
    check_args.add_argument("--demo-wait", type=float, default=300, help="seconds to wait")
    check_args.add_argument("--labels", type=int, default=5000, help="demo fine-tune labels")
    check_args.add_argument(
        "--pretrain-seconds", type=float, default=90, help="time budget of the demo's pretraining"
    )
    check_args.add_argument("--repeats", type=int, default=5, help="probe repeats")
    check_args.add_argument("--jobs", type=int, default=1, help="probe processes")
    check_args.add_argument("--tiny", action="store_true", help="tiny network, few steps")
    check_args.add_argument(
        "--old-lr", action="store_true", help="also fine-tune with the old GPU head lr 1e-3"
    )
    check_args.add_argument(
        "--ft-variants",
        action="store_true",
        help="only fine-tune schedule variants on Jurkat (all labels)",
    )
    check_args.add_argument(
        "--nondeterministic",
        action="store_true",
        help="cudnn.benchmark and non-deterministic kernels",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.prepare_demo:
        prepare_demo(args.prepare_demo, args.cells, args.jobs)
        return
    if args.check:
        check(args)
        return
    if args.project is None:
        parser.error("a project is needed (or --check / --prepare-demo)")
    seed_everything(0)
    device = resolve_device(args.device)
    print(
        f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}),"
        f" torch threads {torch.get_num_threads()}"
    )
    model, dirs = speed(args.project, device, args.steps, args.backbone)
    if args.quality:
        quality(args.project, model.cpu(), dirs, device, args.ft_epochs)


# ---------------------------------------------------------------------------------------------
# The GPU check (benchmarks/gpu_check.sh): every figure of the models table in one run.


def _demo_part(args: tuple[str, int, int]) -> str:
    from datasets.crops.demo import generate_demo

    out, n, seed = args
    generate_demo(Path(out), n_cells=n, seed=seed)
    return out


def _morph_chunk(args: tuple[str, list[str]]) -> np.ndarray:
    from datasets.morphology import morphology_features
    from datasets.pixels.store import PixelStore

    project, ids = args
    return morphology_features(PixelStore(Path(project)).read(ids))[0]


def prepare_demo(out: Path, n_cells: int, workers: int) -> None:
    """A demo project of ``n_cells`` without the app's single-process path: the screen is
    generated in ``workers`` processes (parts of one screen, one labels.csv), ingested, and its
    morphology features computed in parallel into ``out/morphology.npy``; ``out/READY`` last."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    import pandas as pd

    from datasets.config import CropSource
    from datasets.crops.ingest import ingest_crops
    from datasets.pixels.store import PixelStore
    from models.backbone.training import all_cell_ids

    t0 = time.perf_counter()
    screen, project = out / "screen", out / "project"
    parts = max(1, min(workers, n_cells // 1000))
    sizes = [n_cells // parts + (i < n_cells % parts) for i in range(parts)]
    with ProcessPoolExecutor(parts) as pool:
        list(pool.map(_demo_part, [(str(screen / f"part{i}"), s, i) for i, s in enumerate(sizes)]))
    labels = pd.concat(
        [
            pd.read_csv(screen / f"part{i}" / "labels.csv").assign(
                path=lambda t, i=i: f"part{i}/" + t["path"]
            )
            for i in range(parts)
        ]
    )
    labels.to_csv(screen / "labels.csv", index=False)
    gen = time.perf_counter() - t0
    project.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TQDM_DISABLE", "1")
    ingest_crops(CropSource(screen, labels_csv=screen / "labels.csv"), project)
    ing = time.perf_counter() - t0 - gen
    ids = all_cell_ids(PixelStore(project))
    chunks = [(str(project), ids[i : i + 2000]) for i in range(0, len(ids), 2000)]
    with ProcessPoolExecutor(workers) as pool:
        morph = np.concatenate(list(pool.map(_morph_chunk, chunks)))
    np.save(out / "morphology.npy", morph.astype(np.float32))
    (out / "READY").write_text(
        f"generate {gen:.1f} s ({parts} processes), ingest {ing:.1f} s, "
        f"morphology {time.perf_counter() - t0 - gen - ing:.1f} s "
        f"({workers} processes): {len(ids)} cells"
    )


def _fmt(pair) -> str:
    return f"{pair[0]:.3f} / {pair[1]:.3f}"


def _ft_cv(pixels, backbone, ids, y, morph, folds, per_class, ft, device, seed, rows, views=1):
    """Per fold: fine-tune on the training fold (all labels or ``per_class``), then score the
    classifier on the test fold and a linear probe on morphology + the fine-tuned embedding
    (trained on the same training fold only: no leakage). Returns means over folds."""
    import tempfile

    from sklearn.metrics import balanced_accuracy_score, f1_score

    from labeling.evaluate import few_per_class
    from models.backbone.embed import EmbedConfig, embed_cells
    from models.backbone.finetune import LabeledCells, finetune, predict_logits
    from models.backbone.unet import Classifier

    classes = tuple(sorted(set(y)))
    clf, comb, ft_only, secs = [], [], [], []
    for k, (train, test) in enumerate(folds):
        train = few_per_class(train, y, per_class, seed + k)
        model = Classifier(backbone.config, len(classes))
        model.encoder.load_state_dict(backbone.encoder.state_dict())
        t0 = time.perf_counter()
        finetune(model, pixels, LabeledCells(dict(zip(ids[train], y[train])), classes), ft, device)
        secs.append(time.perf_counter() - t0)
        pred = np.array(classes)[predict_logits(model, pixels, list(ids[test]), device).argmax(1)]
        clf.append(
            (balanced_accuracy_score(y[test], pred), f1_score(y[test], pred, average="macro"))
        )
        with tempfile.TemporaryDirectory() as tmp:
            embed_cells(model.encoder, pixels, Path(tmp), device, EmbedConfig(views=views))
            emb = np.load(Path(tmp) / "embeddings.npy")[rows]
        both = np.hstack([morph, emb])
        # the probe's train part is exactly the fine-tune's: one custom fold
        comb.append(_one_fold(both, y, train, test))
        ft_only.append(_one_fold(emb, y, train, test))
    mean = lambda v: (float(np.mean([a for a, _ in v])), float(np.mean([b for _, b in v])))  # noqa: E731
    return mean(clf), mean(comb), mean(ft_only), float(np.mean(secs))


def _one_fold(x, y, train, test):
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.nan_to_num(x.astype(np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = make_pipeline(
            StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000)
        )
        pred = m.fit(x[train], y[train]).predict(x[test])
        return (
            balanced_accuracy_score(y[test], pred),
            f1_score(y[test], pred, average="macro", labels=np.unique(y[test])),
        )


def check(args) -> None:
    """Every figure of the models table (see benchmarks/gpu_check.sh)."""
    import os
    import tempfile

    import torch

    from datasets.cells import read_cells
    from datasets.features import read_features
    from datasets.pixels.store import PixelStore
    from labeling.evaluate import ProbeConfig, quality_table
    from models.backbone.embed import EmbedConfig, embed_cells
    from models.backbone.finetune import LabeledCells, finetune
    from models.backbone.pretrain import pretrain
    from models.backbone.unet import UNet, UNetConfig
    from models.device import resolve_device, seed_everything
    from models.trainer.trainer import TrainerConfig

    os.environ.setdefault("TQDM_DISABLE", "1")
    device = resolve_device(args.device)
    deterministic = not args.nondeterministic
    seed_everything(0, deterministic)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"torch {torch.__version__}, device {device} ({name}), deterministic "
        f"{deterministic}, {'tiny' if args.tiny else 'full'} run",
        flush=True,
    )
    shipped = TrainerConfig.for_device(device)
    pre = dataclasses.replace(shipped.pretrain, deterministic=deterministic)
    ft = dataclasses.replace(shipped.finetune, deterministic=deterministic, seed=0)
    width, depth = shipped.width, shipped.depth
    if args.tiny:
        pre = dataclasses.replace(pre, max_steps=10, batch_size=32, max_seconds=0)
        ft = dataclasses.replace(ft, max_epochs=2, short_epochs=2, steps_per_epoch=3, batch_size=32)
        width = 4
    repeats = 1 if args.tiny else args.repeats
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check_"))
    # 1) Jurkat project (ingest + morphology), unless one is there already
    from labeling.project import create_project

    jk = work / "jurkat"
    t0 = time.perf_counter()
    if not (jk / "cells.parquet").exists():
        project, _ = create_project(jk, Path(args.data))
        project.close()
    print(f"jurkat project: {time.perf_counter() - t0:.1f} s", flush=True)
    pixels = PixelStore(jk)
    cells = read_cells(jk, ["cell_id", "truth"])
    ids, y = cells["cell_id"].to_numpy(str), cells["truth"].to_numpy(str)
    feat_ids, morph, _ = read_features(jk)
    assert (feat_ids == ids).all()
    rows = np.arange(len(ids))
    if args.tiny:  # a stratified 20 % of the cells for the probes and fine-tunes
        from sklearn.model_selection import train_test_split

        rows = np.sort(train_test_split(rows, train_size=0.2, stratify=y, random_state=0)[0])
    ids, y, morph = ids[rows], y[rows], morph[rows]
    # 2) pretrain (shipped schedule of the device), embed
    torch.manual_seed(0)
    backbone = UNet(UNetConfig(pixels.n_channels, width=width, depth=depth))
    hist = pretrain(backbone, pixels, pre, device)
    last = hist[-1]
    print(
        f"pretrain jurkat: {last['step']} steps x {pre.batch_size}, {last['crops']} crops in "
        f"{last['seconds']:.1f} s = {last['crops'] / last['seconds']:,.0f} crops/s "
        f"(resident {last['resident']}), loss {hist[0]['loss']:.4f} -> {last['loss']:.4f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        res = embed_cells(backbone, pixels, Path(tmp), device, EmbedConfig(shipped.embed_batch))
        emb = np.load(Path(tmp) / "embeddings.npy")[rows]
    print(f"embed jurkat: {res.n_cells / res.seconds:,.0f} cells/s", flush=True)
    if args.ft_variants:  # fine-tune schedule variants on all labels, then stop
        from sklearn.model_selection import StratifiedKFold

        folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(ids, y))
        variants = {
            "shipped": {},
            "fp32 (no autocast)": {"amp": False},
            "freeze_bn": {"freeze_bn": True},
            "no shift": {"shift": 0},
            "head lr 1e-3, no split": {"lr": 1e-3, "holdout_min_per_class": 10**6},
            "+ supervised contrastive 1.0": {"supcon": 1.0},
            "+ supervised contrastive 0.2": {"supcon": 0.2},
        }
        backbone = backbone.cpu()
        for label, kw in variants.items():
            cfg = dataclasses.replace(ft, **kw)
            clf, comb, fte, sec = _ft_cv(
                pixels, backbone, ids, y, morph, folds, None, cfg, device, 0, rows
            )
            print(
                f"| variant {label} | classifier {_fmt(clf)} | morphology + fine-tuned "
                f"embedding {_fmt(comb)} | embedding alone {_fmt(fte)} | {sec:.1f} s |",
                flush=True,
            )
        return
    # 3) linear-probe quality table (labeling.evaluate), median of repeats
    t0 = time.perf_counter()
    table = quality_table(
        {
            "morphology": morph,
            "embedding (self-supervised)": emb,
            "morphology + embedding": np.hstack([morph, emb]),
        },
        y,
        probe=ProbeConfig(repeats=repeats),
        n_jobs=args.jobs,
    )
    print(f"| features (Jurkat, median of {repeats}) | bal. acc / macro-F1 all | 10 per class |")
    print("|---|---|---|")
    for feat, part in table.groupby("features", sort=False):
        a, b = part.iloc[0], part.iloc[1]
        print(
            f"| {feat} | {a.balanced_accuracy:.3f} / {a.macro_f1:.3f} | "
            f"{b.balanced_accuracy:.3f} / {b.macro_f1:.3f} |",
            flush=True,
        )
    print(f"(probe table {time.perf_counter() - t0:.1f} s)", flush=True)
    # 4) fine-tuned classifier and morphology + fine-tuned embedding, per fold (no leakage)
    from sklearn.model_selection import StratifiedKFold

    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(ids, y))
    if args.tiny:
        folds = folds[:1]
    backbone = backbone.cpu()
    for label, per in (("all labels", None), ("10 per class", 10)):
        clf, comb, fte, sec = _ft_cv(
            pixels, backbone, ids, y, morph, folds, per, ft, device, 0, rows
        )
        print(
            f"| fine-tuned, {label} (head lr {ft.lr:g}, {len(folds)} folds) | classifier "
            f"{_fmt(clf)} | morphology + fine-tuned embedding {_fmt(comb)} | fine-tuned "
            f"embedding alone {_fmt(fte)} | {sec:.1f} s per fine-tune |",
            flush=True,
        )
    if not args.tiny and args.old_lr:
        old = dataclasses.replace(ft, lr=1e-3)
        clf, comb, fte, sec = _ft_cv(
            pixels, backbone, ids, y, morph, folds, None, old, device, 0, rows
        )
        print(
            f"| fine-tuned, all labels, head lr 1e-3 (the old GPU schedule) | classifier "
            f"{_fmt(clf)} | morphology + fine-tuned embedding {_fmt(comb)} | {sec:.1f} s |",
            flush=True,
        )
    # 5) the demo: pretrain, embed all, fine-tune after a batch (5,000 labels), re-score all
    demo = Path(args.demo)
    t0 = time.perf_counter()
    while not (demo / "READY").exists():
        if time.perf_counter() - t0 > args.demo_wait:
            print(f"demo: not ready after {args.demo_wait} s; skipped")
            return
        time.sleep(1)
    print(
        f"demo ready after waiting {time.perf_counter() - t0:.1f} s: "
        f"{(demo / 'READY').read_text()}",
        flush=True,
    )
    dp = PixelStore(demo / "project")
    torch.manual_seed(0)
    net = UNet(UNetConfig(dp.n_channels, width=width, depth=depth))
    budget = dataclasses.replace(pre, max_seconds=args.pretrain_seconds)
    hist = pretrain(net, dp, budget, device)
    last = hist[-1]
    print(
        f"demo pretrain: {dp.n_cells:,} cells, {last['step']} steps x {pre.batch_size}, "
        f"{last['crops']:,} crops in {last['seconds']:.1f} s = "
        f"{last['crops'] / last['seconds']:,.0f} crops/s (resident {last['resident']}, "
        f"stopped by {last['stopped']})",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        res = embed_cells(net, dp, Path(tmp), device, EmbedConfig(shipped.embed_batch))
        demo_emb = np.load(Path(tmp) / "embeddings.npy")
    print(
        f"demo embed: {res.n_cells:,} cells in {res.seconds:.2f} s = "
        f"{res.n_cells / res.seconds:,.0f} cells/s (pixel store -> embeddings.npy)",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        views = EmbedConfig(shipped.embed_batch, views=8)
        res8 = embed_cells(net, dp, Path(tmp), device, views)
    print(
        f"demo embed, 8 views (--embed-views 8): {res8.n_cells:,} cells in {res8.seconds:.2f} s "
        f"= {res8.n_cells / res8.seconds:,.0f} cells/s",
        flush=True,
    )
    dcells = read_cells(demo / "project", ["cell_id", "truth"])
    d_ids, d_y = dcells["cell_id"].to_numpy(str), dcells["truth"].to_numpy(str)
    n_lab = min(args.labels, len(d_ids) // 2)
    pick = np.random.default_rng(0).choice(len(d_ids), n_lab, replace=False)
    from models.backbone.unet import Classifier

    classes = tuple(sorted(set(d_y)))
    model = Classifier(net.config, len(classes))
    model.encoder.load_state_dict(net.encoder.state_dict())
    t0 = time.perf_counter()
    h = finetune(model, dp, LabeledCells(dict(zip(d_ids[pick], d_y[pick])), classes), ft, device)
    ft_sec = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        res2 = embed_cells(model, dp, Path(tmp), device, EmbedConfig(shipped.embed_batch))
    print(
        f"demo fine-tune after a batch: {n_lab:,} labels, {len(h)} epochs, {ft_sec:.2f} s; "
        f"re-embed all {res2.n_cells:,} cells {res2.seconds:.2f} s",
        flush=True,
    )
    from labeling.head import HeadConfig, SklearnHead

    dmorph = np.load(demo / "morphology.npy")
    feats = np.hstack([dmorph, demo_emb]).astype(np.float32)
    t0 = time.perf_counter()
    head = SklearnHead(HeadConfig(seed=0)).fit(feats[pick], list(d_y[pick]))
    head.predict_proba(feats)
    print(
        f"demo re-score all: head refit on {n_lab:,} labels (morphology + embedding, "
        f"{feats.shape[1]} features) + scoring {len(feats):,} cells: "
        f"{time.perf_counter() - t0:.2f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()

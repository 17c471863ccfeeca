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
    from datasets.pixels import PixelStore
    from models.checkpoint import build_model, load_checkpoint
    from models.embed import embed_cells
    from models.pretrain import pretrain
    from models.trainer import TrainerConfig
    from models.unet import UNet, UNetConfig

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
        print(f"pretrain: {pixels.n_cells} cells, {last['step']} steps ({last['stopped']}), "
              f"{last['crops']} crops in {sec:.1f} s = {last['crops'] / sec:.0f} crops/s; "
              f"loss {history[0]['loss']:.4f} -> {last['loss']:.4f}")
    dirs = {}
    for bf16 in (False, True):
        dirs[bf16] = Path(tempfile.mkdtemp(prefix="bench_embed_"))
        res = embed_cells(model, pixels, dirs[bf16], device, shipped.embed_batch, bf16)
        print(f"embed {'bf16' if bf16 else 'fp32'}: {res.n_cells / res.seconds:.0f} cells/s "
              f"({res.n_cells} cells, d={res.dim}, {pixels.crop_size}x{pixels.crop_size}x"
              f"{pixels.n_channels})", flush=True)
    return model, dirs


def cv_scores(x: np.ndarray, y: np.ndarray, folds, per_class: int | None, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    bal, f1 = [], []
    for k, (train, test) in enumerate(folds):
        train = subsample(train, y, per_class, seed + k)
        clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced",
                                                                 max_iter=2000))
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

    from datasets.pixels import PixelStore
    from models.finetune import finetune, predict_logits
    from models.unet import Classifier

    pixels, classes = PixelStore(project), tuple(sorted(set(y)))
    bal, f1, secs = [], [], []
    for k, (train, test) in enumerate(folds):
        train = subsample(train, y, per_class, seed + k)
        model = Classifier(backbone.config, len(classes))
        model.encoder.load_state_dict(backbone.encoder.state_dict())
        t0 = time.perf_counter()
        finetune(model, pixels, dict(zip(ids[train], y[train])), classes, ft, device)
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
    from datasets.pixels import PixelStore

    cells = read_cells(project, ["cell_id", "truth"])
    ids, y = cells["cell_id"].to_numpy(str), cells["truth"].to_numpy(str)
    raw = np.concatenate([b.reshape(len(b), -1) for _, b in PixelStore(project).iter_batches(1024)])
    feat_ids, morph, _ = read_features(project)
    assert (feat_ids == ids).all(), "features are not in cell-table order"
    emb = np.load(dirs[False] / "embeddings.npy")
    sets = {"(a) raw-pixel PCA-64": PCA(64, random_state=seed).fit_transform(raw),
            "(b) morphology": morph, "(c) U-Net embedding (self-supervised)": emb,
            "(d) morphology + embedding": np.hstack([morph, emb])}
    folds = list(StratifiedKFold(5, shuffle=True, random_state=seed).split(ids, y))
    print("| features | bal. acc (all) | macro-F1 (all) | bal. acc (10/class) "
          "| macro-F1 (10/class) |")
    print("|---|---|---|---|---|")
    for name, x in sets.items():
        a, b = cv_scores(x, y, folds, None, seed), cv_scores(x, y, folds, 10, seed)
        print(f"| {name} | {a[0]:.3f} | {a[1]:.3f} | {b[0]:.3f} | {b[1]:.3f} |", flush=True)
    bf16 = np.load(dirs[True] / "embeddings.npy")
    c32, c16 = cv_scores(emb, y, folds, None, seed), cv_scores(bf16, y, folds, None, seed)
    print(f"bf16 embedding: bal. acc {c16[0]:.3f} vs fp32 {c32[0]:.3f} "
          f"(drop {c32[0] - c16[0]:+.3f}), macro-F1 {c16[1]:.3f} vs {c32[1]:.3f}", flush=True)
    from models.trainer import TrainerConfig

    ft = TrainerConfig.for_device(device).finetune
    if epochs:
        ft = dataclasses.replace(ft, max_epochs=epochs, short_epochs=epochs)
    ft = dataclasses.replace(ft, seed=seed)
    a = finetuned_scores(project, backbone, ids, y, folds, None, ft, device, seed)
    print(f"(e) all labels: {a[0]:.3f} / {a[1]:.3f}, {a[2]:.1f} s per fine-tune", flush=True)
    b = finetuned_scores(project, backbone, ids, y, folds, 10, ft, device, seed)
    print(f"| (e) fine-tuned classifier ({ft.max_epochs} epochs max, {ft.short_epochs} below "
          f"{ft.min_per_class}/class) | {a[0]:.3f} | {a[1]:.3f} | {b[0]:.3f} | {b[1]:.3f} |")
    print(f"fine-tune seconds per round: {a[2]:.1f} (all labels), {b[2]:.1f} (10 per class)")


def main() -> None:
    import torch

    from models.device import resolve_device, seed_everything

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=0, help="pretrain steps (0: shipped cap)")
    parser.add_argument("--quality", action="store_true", help="also the CV quality table")
    parser.add_argument("--ft-epochs", type=int, default=0,
                        help="fine-tune epochs (0: the shipped schedule of the device)")
    parser.add_argument("--backbone", type=Path, default=None,
                        help="a pretrained backbone.pt to use instead of pretraining")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(0)
    device = resolve_device(args.device)
    print(f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}),"
          f" torch threads {torch.get_num_threads()}")
    model, dirs = speed(args.project, device, args.steps, args.backbone)
    if args.quality:
        quality(args.project, model.cpu(), dirs, device, args.ft_epochs)


if __name__ == "__main__":
    main()

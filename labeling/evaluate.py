"""The quality table: how well each feature set of a project separates its classes.

A linear probe (standardised features, class-balanced logistic regression) in stratified
5-fold cross-validation, grouped (``StratifiedGroupKFold``) when a group column is given, with
all training labels and with 10 labels per class (drawn from each training fold); each figure
is the median over repeats (reshuffled folds and draws) of the fold mean. The truth is the
cell table's ``truth`` column when it has one, else the project's labels (pseudo-labels
excluded). Sets: morphology, the newest label-free backbone embedding, their combination, and
CellProfiler columns when the cell table has them; with ``FinetuneEval`` (``--finetune``) also
morphology + an embedding fine-tuned in each fold on that fold's training labels only.
``phenoscout evaluate PROJECT`` prints it and writes ``quality.csv``. Torch loads only for the
fine-tuned row, inside :func:`_finetuned_features`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from datasets.words import count
from labeling.errors import ConfigError
from labeling.project import open_project

logger = logging.getLogger(__name__)

FOLDS = 5
FINETUNED = "morphology+fine-tuned"  # the row of ``evaluate --finetune``
FEW_PER_CLASS = 10  # the "few labels" column: training labels per class
MIN_PER_CLASS = FOLDS  # classes with fewer cells than folds are left out (with a note)
COLUMNS = [
    "features",
    "labels",
    "balanced_accuracy",
    "macro_f1",
    "n_cells",
    "n_classes",
    "repeats",
    "grouped",
]


#: A fold's learned features: training rows -> (n, d) columns for every row.
FoldFeatures = Callable[[npt.NDArray[np.int64]], npt.NDArray]


@dataclass(frozen=True)
class PerFold:
    """Fixed columns ``base`` plus columns ``learn(train rows)`` learned in each fold from that
    fold's training labels only (no leakage into the test fold)."""

    base: npt.NDArray
    learn: FoldFeatures


@dataclass(frozen=True)
class Truth:
    """What the table is scored against."""

    cell_ids: npt.NDArray[np.str_]
    y: npt.NDArray[np.str_]
    groups: npt.NDArray | None
    source: str  # "truth column" or "labels"
    dropped: dict[str, int]  # classes left out (too few cells) -> count


@dataclass(frozen=True)
class ProbeConfig:
    """How the linear probe is cross-validated: each figure is the median over ``repeats``."""

    repeats: int = 5  # reshuffles of the folds (and draws); repeat r uses seed ``seed + r``
    seed: int = 0  # the first repeat's seed
    folds: int = FOLDS  # stratified folds per repeat (grouped when groups are given)


def probe_scores(
    x: npt.NDArray,
    y: npt.NDArray,
    *,
    groups: npt.NDArray | None = None,
    per_class: int | None = None,
    probe: ProbeConfig | None = None,
) -> tuple[float, float]:
    """``(balanced accuracy, macro-F1)`` of the linear probe on ``x``: medians over
    ``probe.repeats`` of the mean over ``probe.folds`` folds (stratified; grouped when
    ``groups`` is given).

    Args:
        x: (n, d) features (NaN and inf become 0).
        y: (n,) class of each row.
        groups: (n,) group of each row (cells of a group never split across train and test).
        per_class: training labels per class drawn from each training fold (None: all).
        probe: repeats, first seed and folds; :class:`ProbeConfig` defaults when None.
    """
    probe = probe or ProbeConfig()
    runs = [
        one_repeat(x, y, groups, per_class, probe.seed + r, probe.folds)
        for r in range(probe.repeats)
    ]
    return float(np.median([b for b, _ in runs])), float(np.median([f for _, f in runs]))


def one_repeat(
    x: npt.NDArray | PerFold,
    y: npt.NDArray,
    groups: npt.NDArray | None,
    per_class: int | None,
    seed: int,
    folds: int = FOLDS,
) -> tuple[float, float]:
    """Mean ``(balanced accuracy, macro-F1)`` over the folds of one shuffle (``seed``); with a
    :class:`PerFold` ``x``, each fold probes its base columns plus those learned from the fold's
    training rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    learn = x.learn if isinstance(x, PerFold) else None
    x = _finite(x.base if isinstance(x, PerFold) else x)
    y = np.asarray(y)
    if groups is None:
        split = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)
    else:
        split = StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(x, y, groups)
    bal, f1 = [], []
    for k, (train, test) in enumerate(split):
        train = few_per_class(train, y, per_class, 1000 * seed + k)
        if len(np.unique(y[train])) < 2 or len(test) == 0:
            continue
        xk = x if learn is None else np.hstack([x, _finite(learn(train))])
        clf = make_pipeline(
            StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(xk[train], y[train])
            pred = clf.predict(xk[test])
            bal.append(balanced_accuracy_score(y[test], pred))
            f1.append(f1_score(y[test], pred, average="macro", labels=np.unique(y[test])))
    return float(np.mean(bal)), float(np.mean(f1))


def _finite(x: npt.NDArray) -> npt.NDArray[np.float64]:
    return np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def few_per_class(
    train: npt.NDArray[np.int64], y: npt.NDArray, per_class: int | None, seed: int
) -> npt.NDArray[np.int64]:
    """``per_class`` random rows of each class among ``train`` (all of a smaller class)."""
    if per_class is None:
        return train
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(train[y[train] == c])[:per_class] for c in np.unique(y[train])]
    return np.sort(np.concatenate(keep))


def quality_table(
    sets: Mapping[str, npt.NDArray],
    y: npt.NDArray,
    *,
    groups: npt.NDArray | None = None,
    probe: ProbeConfig | None = None,
    per_class: int = FEW_PER_CLASS,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """One row per feature set and label setting (all, ``per_class`` per class): the
    :func:`probe_scores` of each matrix in ``sets`` (rows aligned with ``y``) with ``probe``
    (:class:`ProbeConfig` defaults when None), computed in ``n_jobs`` processes (joblib; -1:
    one per core)."""
    from joblib import Parallel, delayed

    probe = probe or ProbeConfig()
    repeats, seed = probe.repeats, probe.seed

    jobs = [
        (name, label, few)
        for name in sets
        for label, few in (("all", None), (f"{per_class} per class", per_class))
    ]
    runs = Parallel(n_jobs=n_jobs)(
        delayed(one_repeat)(sets[name], y, groups, few, seed + r, probe.folds)
        for name, _, few in jobs
        for r in range(repeats)
    )
    rows = [
        _row(name, label, runs[j * repeats : (j + 1) * repeats], y, groups)
        for j, (name, label, _) in enumerate(jobs)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def fold_feature_rows(
    features: PerFold,
    y: npt.NDArray,
    *,
    name: str,
    groups: npt.NDArray | None = None,
    probe: ProbeConfig | None = None,
    per_class: int = FEW_PER_CLASS,
) -> pd.DataFrame:
    """The rows of :func:`quality_table` for fixed columns plus columns learned per fold
    (``features``, e.g. morphology + a fine-tuned embedding), in this process: the learning may
    hold a GPU."""
    probe = probe or ProbeConfig()
    rows = []
    for label, few in (("all", None), (f"{per_class} per class", per_class)):
        runs = [
            one_repeat(features, y, groups, few, probe.seed + r, probe.folds)
            for r in range(probe.repeats)
        ]
        rows.append(_row(name, label, runs, y, groups))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(
    name: str,
    label: str,
    runs: list[tuple[float, float]],
    y: npt.NDArray,
    groups: npt.NDArray | None,
) -> dict:
    return {
        "features": name,
        "labels": label,
        "balanced_accuracy": round(float(np.median([b for b, _ in runs])), 4),
        "macro_f1": round(float(np.median([f for _, f in runs])), 4),
        "n_cells": len(y),
        "n_classes": len(np.unique(y)),
        "repeats": len(runs),
        "grouped": groups is not None,
    }


def project_truth(project_dir: Path, group: str | None = None) -> Truth:
    """The cells with ground truth (``truth`` column) or, without one, the project's labels;
    classes with fewer than :data:`MIN_PER_CLASS` cells are left out.

    Raises:
        ConfigError: no truth and too few labels (2 classes of MIN_PER_CLASS), or an unknown
            group column.
    """
    from datasets.cells import read_cells

    project_dir = Path(project_dir)
    table = read_cells(project_dir)
    if group is not None and group not in table.columns:
        raise ConfigError(
            f"{project_dir / 'cells.parquet'}: no column {group!r} to group by; "
            f"columns are {sorted(map(str, table.columns))}"
        )
    truth = table["truth"] if "truth" in table.columns else None
    if truth is not None and truth.notna().any() and (truth.astype(str) != "").any():
        keep = truth.notna() & (truth.astype(str) != "")
        ids, y, source = (
            table.loc[keep, "cell_id"].astype(str),
            truth[keep].astype(str),
            "truth column",
        )
        grp = table.loc[keep, group] if group else None
    else:
        from labeling.project import open_project

        labels = open_project(project_dir).store.current_labels()
        ids = pd.Series(list(labels), dtype=str)
        y = pd.Series([labels[c] for c in ids], dtype=str)
        source = "labels"
        grp = table.set_index(table["cell_id"].astype(str)).loc[ids, group] if group else None
    counts = y.value_counts()
    small = counts[counts < MIN_PER_CLASS]
    ok = ~y.isin(small.index).to_numpy()
    if (counts >= MIN_PER_CLASS).sum() < 2:
        what = "the truth column has" if source == "truth column" else "no truth column and"
        raise ConfigError(
            f"{project_dir}: {what} too few labels to evaluate: need 2 classes with at least "
            f"{MIN_PER_CLASS} cells each; have {counts.to_dict()}"
        )
    groups = None if grp is None else np.asarray(grp.astype(str))[ok]
    if groups is not None and len(set(groups.tolist())) < FOLDS:
        raise ConfigError(
            f"{project_dir}: --group {group}: {len(set(groups.tolist()))} group(s); {FOLDS}-fold "
            f"CV grouped by it needs at least {FOLDS} (group by a finer column, e.g. well, or "
            "leave --group out)"
        )
    return Truth(
        np.asarray(ids)[ok],
        np.asarray(y)[ok],
        groups,
        source,
        {str(k): int(v) for k, v in small.items()},
    )


def project_feature_sets(
    project_dir: Path, cell_ids: npt.NDArray[np.str_]
) -> dict[str, npt.NDArray]:
    """The project's label-free feature sets, rows in the order of ``cell_ids``: morphology,
    the newest backbone embedding and morphology+embedding (when the trainer published one),
    CellProfiler and morphology+CellProfiler (when the cell table has ``cp_*`` columns)."""
    from datasets.cells import read_cells
    from datasets.features import read_features
    from labeling.feature_sets import CP_PREFIX
    from models.folder import latest_backbone_version, load_backbone_embeddings

    project_dir = Path(project_dir)
    feat_ids, morph, _ = read_features(project_dir)
    sets = {"morphology": _rows(feat_ids, morph, cell_ids, "morphology")}
    found = latest_backbone_version(project_dir)
    if found is not None:
        loaded = load_backbone_embeddings(project_dir, found)
        if loaded is not None:
            emb = _rows(loaded[0], np.asarray(loaded[1]), cell_ids, "embedding")
            sets[f"embedding (v{found.version})"] = emb
            sets[f"morphology+embedding (v{found.version})"] = np.hstack([sets["morphology"], emb])
    table = read_cells(project_dir)
    cp = [
        c
        for c in table.columns
        if str(c).startswith(CP_PREFIX) and pd.api.types.is_numeric_dtype(table[c])
    ]
    if cp:
        values = table[cp].to_numpy(np.float64)
        sets["cellprofiler"] = _rows(
            table["cell_id"].astype(str).to_numpy(), values, cell_ids, "cellprofiler"
        )
        sets["morphology+cellprofiler"] = np.hstack([sets["morphology"], sets["cellprofiler"]])
    return sets


def _rows(
    ids: npt.NDArray, values: npt.NDArray, want: npt.NDArray[np.str_], what: str
) -> npt.NDArray:
    index = pd.Index(np.asarray(ids).astype(str))
    pos = index.get_indexer(want)
    if (pos < 0).any():
        raise ConfigError(
            f"{what}: {(pos < 0).sum()} evaluated cells have no values "
            f"(e.g. {want[pos < 0][:3].tolist()}); recompute them"
        )
    return np.asarray(values)[pos]


def evaluate_project(
    project_dir: Path,
    *,
    group: str | None = None,
    repeats: int = 5,
    seed: int = 0,
    out_dir: Path | None = None,
    finetune: FinetuneEval | None = None,
) -> tuple[pd.DataFrame, Truth]:
    """The quality table of a project (see the module docstring); written to
    ``out_dir/quality.csv`` when ``out_dir`` is given. With ``finetune``, also the row
    ``morphology+fine-tuned``: in each fold the project's pretrained backbone is fine-tuned on
    the fold's training labels only (the trainer's schedule for the device) and the probe runs
    on morphology + that embedding, ``finetune.repeats`` times."""
    if repeats < 1 or (finetune is not None and finetune.repeats < 1):
        raise ConfigError(f"repeats={repeats}; use 1 or more")
    open_project(Path(project_dir)).close()  # one-line error for a missing or partial project
    truth = project_truth(project_dir, group)
    learned = _finetuned_features(Path(project_dir), truth, finetune, seed) if finetune else None
    sets = project_feature_sets(project_dir, truth.cell_ids)
    probe = ProbeConfig(repeats=repeats, seed=seed)
    table = quality_table(sets, truth.y, groups=truth.groups, probe=probe)
    if finetune is not None and learned is not None:
        extra = fold_feature_rows(
            PerFold(sets["morphology"], learned),
            truth.y,
            name=FINETUNED,
            groups=truth.groups,
            probe=ProbeConfig(repeats=finetune.repeats, seed=seed),
        )
        table = pd.concat([table, extra], ignore_index=True)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        table.to_csv(Path(out_dir) / "quality.csv", index=False)
    return table, truth


@dataclass(frozen=True)
class FinetuneEval:
    """``evaluate --finetune``: where to fine-tune and how often to repeat the folds."""

    device: str = "auto"  # "auto" (CUDA when torch sees it), "cpu", "cuda" or "mps"
    repeats: int = 1  # a fine-tune per fold and label setting: 10 per repeat
    progress: Callable[[int, int], None] | None = None  # (fine-tunes done, total)
    #: a ``models.backbone.finetune.FinetuneConfig``; None: the trainer's for the device
    schedule: Any = None


def _finetuned_features(
    project_dir: Path, truth: Truth, finetune: FinetuneEval, seed: int
) -> FoldFeatures:
    """Fold features: fine-tune the project's backbone on the fold's training rows of
    ``truth``, then embed the evaluated cells (torch loads here, not on ``import labeling``)."""
    from models.folder import BACKBONE_FILE, MODELS_DIR

    if not (project_dir / MODELS_DIR / BACKBONE_FILE).exists():
        raise ConfigError(
            f"{project_dir / MODELS_DIR / BACKBONE_FILE}: no pretrained backbone to fine-tune; "
            f"run `phenoscout train {project_dir}` first"
        )
    from models.device import resolve_device
    from models.trainer.simulation import DeepFeatures
    from models.trainer.trainer import TrainerConfig

    device = resolve_device(finetune.device)
    schedule = finetune.schedule or TrainerConfig.for_device(device).finetune
    deep = DeepFeatures(project_dir, device=str(device), seed=seed, schedule=schedule)
    total = 2 * finetune.repeats * FOLDS
    done = 0

    def features(train: npt.NDArray[np.int64]) -> npt.NDArray:
        nonlocal done
        labels = dict(zip(truth.cell_ids[train].tolist(), truth.y[train].tolist(), strict=True))
        emb = deep.features(labels, cell_ids=truth.cell_ids.tolist())
        done += 1
        logger.info("fine-tune %d/%d: %d labels", done, total, len(labels))
        if finetune.progress is not None:
            finetune.progress(done, total)
        return emb

    return features


def format_table(table: pd.DataFrame, truth: Truth) -> str:
    """Plain-text table: one line per feature set, all labels and few per class side by
    side."""
    lines = [
        f"{len(truth.y)} cells, {len(np.unique(truth.y))} classes, scored against the "
        f"{truth.source}"
        + (", grouped folds" if truth.groups is not None else "")
        + (
            f"; left out (fewer than {MIN_PER_CLASS} cells): {truth.dropped}"
            if truth.dropped
            else ""
        )
    ]
    settings = list(dict.fromkeys(table["labels"]))
    head = f"{'features':<34}" + "".join(f"{s + ': bal.acc / macro-F1':>34}" for s in settings)
    lines += [head, "-" * len(head)]
    for name, part in table.groupby("features", sort=False):
        cells = {
            r.labels: f"{r.balanced_accuracy:.3f} / {r.macro_f1:.3f}" for r in part.itertuples()
        }
        lines.append(f"{name:<34}" + "".join(f"{cells.get(s, '-'):>34}" for s in settings))
    foot = (
        f"linear probe, {FOLDS}-fold CV, median of {count(int(table['repeats'].iloc[0]), 'repeat')}"
    )
    tuned = table[table["features"] == FINETUNED]
    if len(tuned):
        foot += (
            f"; {FINETUNED}: the backbone fine-tuned in each fold on its training labels only, "
            f"median of {count(int(tuned['repeats'].iloc[0]), 'repeat')}"
        )
    lines.append(foot)
    return "\n".join(lines)

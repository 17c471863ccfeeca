"""User-facing curves and estimates: what was found at what cost, how common each class is,
whether to stop labeling, and how well the head does (cross-validated).

Every function returns a pandas table (or a dict) for the app and the CLI; :func:`write_report`
writes them all as CSV, JSON and PNG (``phenoscout report PROJECT --out DIR``).

Label events come from :meth:`LabelStore.label_events` (not undone, in the order given, class
names resolved through merges). Every event is one label spent, pseudo-labels ("unsure", "bad
segmentation") and relabels included; pseudo-classes never count as classes found. Prevalence
and the Good-Turing stopping signal use only the RANDOM SLICE, the cells picked by the "random"
sub-strategy: the only part of the labels that samples the screen without bias.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from datasets.words import count
from labeling.errors import ConfigError, DataError, NotTrainedError
from labeling.predictions import predicted_distribution as predicted_distribution
from labeling.predictions import well_fractions as well_fractions
from labeling.reports.plots import (
    class_panels,
    finish_panels,
    pyplot,
    save_figure,
    short,
    style_panel,
)
from labeling.store.labels import BAD_SEGMENTATION, UNSURE, LabelRecord, LabelStore
from labeling.strategies.unseen import FEW_RANDOM, unseen_class_chance

if TYPE_CHECKING:
    from labeling.project import Project

logger = logging.getLogger(__name__)

PSEUDO_CLASSES = (UNSURE, BAD_SEGMENTATION)  # labels that are never classes found
RANDOM = "random"  # the sub-strategy whose picks form the random slice
MAX_FOLDS = 5  # cross-validation folds (fewer when the smallest class has fewer labels)


# ---------------------------------------------------------------- helpers over events
def _live(events: Iterable[LabelRecord]) -> list[LabelRecord]:
    return [e for e in events if not e.undone]


def _first_found(events: Sequence[LabelRecord], pseudo: Iterable[str]) -> dict[str, int]:
    """Class -> labels spent (1-based) when it was first given, in order of discovery."""
    skip, first = set(pseudo), {}
    for t, e in enumerate(events, start=1):
        if e.label not in skip and e.label not in first:
            first[e.label] = t
    return first


def _first_found_by(events: Sequence[LabelRecord]) -> dict[str, str]:
    """Class -> what picked the cell of its first label: the query sub-strategy, or the label's
    source (``import``, ``review``, ...) for a cell labeled outside a batch."""
    first: dict[str, str] = {}
    for e in events:
        if e.label not in first:
            first[e.label] = e.sub_strategy or e.source
    return first


def _class_names(
    events: Sequence[LabelRecord], classes: Iterable[str] | None, pseudo: Iterable[str]
) -> list[str]:
    """Real classes in order of discovery, then those of ``classes`` never given."""
    names = list(_first_found(events, pseudo))
    skip = set(pseudo) | set(names)
    return names + [c for c in (classes or ()) if c not in skip]


def random_slice(events: Iterable[LabelRecord]) -> dict[str, str]:
    """cell_id -> latest label of every cell picked by the "random" sub-strategy.

    A later label of such a cell (a review correction, say) replaces the first one, so the
    slice holds each random cell once, with its best-known class (pseudo-labels included).
    """
    live = _live(events)
    picked = {e.cell_id for e in live if e.sub_strategy == RANDOM}
    return {e.cell_id: e.label for e in live if e.cell_id in picked}


# ---------------------------------------------------------------- discovery
def discovery_curves(
    events: Iterable[LabelRecord],
    classes: Iterable[str] | None = None,
    pseudo: Sequence[str] = PSEUDO_CLASSES,
) -> pd.DataFrame:
    """Per-class discovery curves: cells found against labels spent.

    Args:
        events: label events in the order given (``LabelStore.label_events()``).
        classes: classes to list even if never given (the store's classes, say).
        pseudo: labels that spend a label but are not classes.

    Returns:
        One row per class per label spent: ``n_labeled`` (1..number of events), ``label``,
        ``n_found`` (cells whose label at that point is the class; a relabel moves its cell to
        the new class). Classes in order of discovery, rows by class then ``n_labeled``.
    """
    live = _live(events)
    names = _class_names(live, classes, pseudo)
    col = {c: j for j, c in enumerate(names)}
    delta = np.zeros((len(live), len(names)), dtype=np.int64)
    current: dict[str, str] = {}
    for t, e in enumerate(live):
        before = current.get(e.cell_id)
        if before in col:
            delta[t, col[before]] -= 1
        if e.label in col:
            delta[t, col[e.label]] += 1
        current[e.cell_id] = e.label
    found = delta.cumsum(axis=0)
    return pd.DataFrame(
        {
            "n_labeled": np.tile(np.arange(1, len(live) + 1), len(names)),
            "label": np.repeat(np.array(names, dtype=object), len(live)),
            "n_found": found.T.reshape(-1),
        }
    )


def expected_random_curve(
    n_labeled: int | Sequence[int] | npt.NDArray[np.int64], prevalence_table: pd.DataFrame
) -> pd.DataFrame:
    """Expected discovery curve of random sampling: labels spent x estimated prevalence.

    Args:
        n_labeled: the labels-spent axis, or its maximum (then 0..n_labeled).
        prevalence_table: the output of :func:`prevalence`.

    Returns:
        One row per class per x: ``n_labeled, label, expected, low, high`` (``low``/``high``
        from the prevalence interval).
    """
    if isinstance(n_labeled, int | np.integer):
        x = np.arange(int(n_labeled) + 1)
    else:
        x = np.asarray(n_labeled, dtype=np.int64)
    p = prevalence_table
    reps = len(p)
    return pd.DataFrame(
        {
            "n_labeled": np.tile(x, reps),
            "label": np.repeat(p["label"].to_numpy(dtype=object), len(x)),
            **{
                k: np.outer(p[col].to_numpy(dtype=float), x).reshape(-1)
                for k, col in (("expected", "estimate"), ("low", "low"), ("high", "high"))
            },
        }
    )


# ---------------------------------------------------------------- prevalence and stopping
def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``; (0, 1) when ``n`` is 0."""
    if n == 0:
        return 0.0, 1.0
    z2 = NormalDist().inv_cdf(0.5 + confidence / 2) ** 2
    p = k / n
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = math.sqrt(z2 * p * (1 - p) / n + z2 * z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def prevalence(
    events: Iterable[LabelRecord],
    classes: Iterable[str] | None = None,
    confidence: float = 0.95,
    pseudo: Sequence[str] = PSEUDO_CLASSES,
) -> pd.DataFrame:
    """Share of the screen in each class, from the random slice only, with a Wilson interval.

    The denominator is the whole random slice, pseudo-labeled cells included, so ``estimate``
    is the chance that a random cell gets this class (what random labeling would find per label).
    A class never seen in the slice gets estimate 0 and a non-zero upper bound. Intervals are
    per class, not simultaneous.

    Returns:
        One row per real class (order of discovery, then ``classes``): ``label``, ``n_random``
        (cells of the class in the slice), ``n_slice`` (slice size), ``estimate`` (NaN when the
        slice is empty), ``low``, ``high``.
    """
    live = _live(events)
    slice_ = random_slice(live)
    n = len(slice_)
    counts = Counter(slice_.values())
    rows = []
    for name in _class_names(live, classes, pseudo):
        k = counts.get(name, 0)
        low, high = wilson_interval(k, n, confidence)
        rows.append((name, k, n, k / n if n else math.nan, low, high))
    cols = ["label", "n_random", "n_slice", "estimate", "low", "high"]
    return pd.DataFrame(rows, columns=cols)


def stopping_signal(
    events: Iterable[LabelRecord], pseudo: Sequence[str] = PSEUDO_CLASSES
) -> dict[str, Any]:
    """Should labeling go on? Labels since the last new class, and the Good-Turing estimate.

    ``p_new_class`` = n1 / n on the random slice (n1: real classes seen exactly once there, n:
    slice size): the estimated chance that the next random cell is of a class the slice has not
    seen, with its 95% interval (``p_new_class_low``, ``p_new_class_high``); the one estimate
    ``discover`` hands over by (:func:`labeling.strategies.unseen.unseen_class_chance`). It is
    conservative, since classes found by other strategies may still be unseen in the slice.
    None while the slice is empty.

    Returns:
        JSON-ready dict: ``n_labels`` (labels spent), ``n_classes`` (classes found: with
        cells now),
        ``last_new_class`` and ``last_new_class_at`` (None before any), ``labels_since_new_class``,
        ``n_random`` (slice size), ``n_singletons`` (n1), ``p_new_class``,
        ``p_new_class_low``, ``p_new_class_high``.
    """
    live = _live(events)
    now = set({e.cell_id: e.label for e in live}.values())  # each cell's latest label
    # a class whose every cell was relabeled since (a slip, corrected) is not found: the count
    # is the Label page's, classes with cells now
    first = {k: t for k, t in _first_found(live, pseudo).items() if k in now}
    last = max(first.items(), key=lambda kv: kv[1]) if first else (None, None)
    slice_ = random_slice(live)
    unseen = unseen_class_chance(slice_.values(), pseudo=pseudo)
    return {
        "n_labels": len(live),
        "n_classes": len(first),
        "last_new_class": last[0],
        "last_new_class_at": last[1],
        "labels_since_new_class": len(live) - (last[1] or 0),
        "n_random": len(slice_),
        "n_singletons": unseen.n1,
        "p_new_class": unseen.p,
        "p_new_class_low": unseen.low,
        "p_new_class_high": unseen.high,
    }


# ---------------------------------------------------------------- store summaries
def class_counts(store: LabelStore, events: Sequence[LabelRecord] | None = None) -> pd.DataFrame:
    """Per class (pseudo-classes last): ``label, n_labeled`` (cells now carrying it),
    ``n_given`` (label events with it), ``fraction`` (of cells with a real class; NaN for
    pseudo-classes), ``first_found_at`` (labels spent when first given), ``first_found_by``
    (the sub-strategy that picked that first cell, or the label's source outside a batch),
    ``pseudo``, ``colour``.
    """
    live = store.label_events() if events is None else _live(events)
    first = _first_found(live, ())
    found_by = _first_found_by(live)
    given = Counter(e.label for e in live)
    infos = store.classes(include_pseudo=True)
    n_real = sum(c.n_labeled for c in infos if not c.pseudo)
    frame = pd.DataFrame([(c.name, c.n_labeled, given.get(c.name, 0), c.pseudo, c.colour)
                          for c in infos],
                         columns=["label", "n_labeled", "n_given", "pseudo", "colour"])  # fmt: skip
    frame.insert(3, "fraction", frame["n_labeled"].where(~frame["pseudo"]) / max(n_real, 1))
    frame.insert(4, "first_found_at", pd.array([first.get(c.name) for c in infos], "Int64"))
    frame.insert(5, "first_found_by", [found_by.get(c.name) for c in infos])
    return frame


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return math.nan
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def labels_per_round(
    store: LabelStore, events: Sequence[LabelRecord] | None = None
) -> pd.DataFrame:
    """One row per round, plus one (``round_id`` <NA>) for labels given outside rounds.

    Returns:
        ``round_id`` (Int64), ``strategy``, ``annotator``, ``n_cells`` (handed out),
        ``n_labels`` (label events of the round), ``new_classes`` (classes first found in it),
        ``new_class_names`` ("; "-joined), ``seconds`` (round start to its last label; NaN
        without labels). ``n_labels`` sums to the labels spent.
    """
    live = store.label_events() if events is None else _live(events)
    new_at = {t: c for c, t in _first_found(live, PSEUDO_CLASSES).items()}
    agg: dict[int | None, dict] = {}
    for t, e in enumerate(live, start=1):
        a = agg.setdefault(e.round_id, {"n": 0, "new": [], "last": None})
        a["n"] += 1
        a["new"] += [new_at[t]] if t in new_at else []
        a["last"] = max(a["last"] or e.labeled_at, e.labeled_at)
    rounds = store.rounds()
    if None in agg:
        rounds.append({"round_id": None, "strategy": None, "annotator": None, "n_cells": None})
    cols = "round_id strategy annotator n_cells n_labels new_classes new_class_names seconds"
    rows = []
    for r in rounds:
        a = agg.get(r["round_id"], {"n": 0, "new": [], "last": None})
        new, seconds = a["new"], _seconds(r.get("started_at"), a["last"])
        rows.append([*(r[c] for c in cols.split()[:4]), a["n"], len(new), "; ".join(new), seconds])
    frame = pd.DataFrame(rows, columns=cols.split())
    for c in ("round_id", "n_cells"):
        frame[c] = frame[c].astype("Int64")
    return frame


# ---------------------------------------------------------------- cross-validation
def _cv_data(
    features: tuple[npt.NDArray[np.str_], npt.NDArray[np.float32]], labels: Mapping[str, str]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.object_], list[str], dict[str, int]]:
    """Standardised features and labels of the cells of classes with >= 2 labels."""
    from labeling.simulate import standardise

    ids, x = features
    counts = Counter(labels.values())
    left_out = sorted(c for c, k in counts.items() if k < 2)
    if sum(1 for k in counts.values() if k >= 2) < 2:
        raise NotTrainedError(
            "cross-validation needs at least 2 classes with >= 2 labels each; labels per class: "
            f"{dict(sorted(counts.items())) or 'none yet'} - label more cells of two classes"
        )
    pos = {str(c): i for i, c in enumerate(ids)}
    keep = sorted(c for c, lab in labels.items() if counts[lab] >= 2)
    missing = [c for c in keep if c not in pos]
    if missing:
        raise DataError(
            f"{count(len(missing), 'labeled cell')} without features, e.g. {missing[:3]}; "
            "compute them with `phenoscout features PROJECT`"
        )
    rows = np.array([pos[c] for c in keep], dtype=np.int64)
    y = np.array([labels[c] for c in keep], dtype=object)
    return standardise(np.asarray(x, dtype=np.float32))[rows], y, left_out, dict(counts)


def _cv_predict(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.object_], k: int, seed: int
) -> npt.NDArray[np.object_]:
    """Out-of-fold predictions of the loop's head (stratified k-fold)."""
    classes, proba = _cv_proba(x, y, k, seed)
    return np.asarray(classes, dtype=object)[proba.argmax(axis=1)]


def _cv_proba(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.object_], k: int, seed: int
) -> tuple[list[str], npt.NDArray[np.float32]]:
    """Out-of-fold class probabilities of the loop's head (stratified k-fold; every class needs
    >= k labels, so each fold's head knows every class): ``(sorted classes, proba (n, C))``."""
    from sklearn.model_selection import StratifiedKFold

    from labeling.head import HeadConfig, SklearnHead

    classes = sorted(set(y.tolist()))
    proba = np.zeros((len(y), len(classes)), dtype=np.float32)
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        head = SklearnHead(HeadConfig(seed=seed)).fit(x[train], y[train].tolist())
        cols = [classes.index(c) for c in head.classes_]
        proba[np.ix_(test, cols)] = head.predict_proba(x[test])
    return classes, proba


def _per_class(
    y: npt.NDArray[np.object_],
    pred: npt.NDArray[np.object_],
    left_out: list[str],
    counts: Mapping[str, int],
) -> pd.DataFrame:
    from sklearn.metrics import precision_recall_fscore_support

    names = sorted(set(y.tolist()))
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=names, zero_division=0)
    nan = [math.nan] * len(left_out)
    return pd.DataFrame(
        {
            "label": names + left_out,
            "precision": [*prec, *nan],
            "recall": [*rec, *nan],
            "f1": [*f1, *nan],
            "support": [*sup, *[counts[c] for c in left_out]],
            "included": [True] * len(names) + [False] * len(left_out),
        }
    )


def cross_validated(
    project: Project | None = None,
    features: tuple[npt.NDArray[np.str_], npt.NDArray[np.float32]] | None = None,
    labels: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross-validated quality of the loop's head on the current labels.

    Stratified k-fold, k = min(5, smallest class count), over the classes with >= 2 labels;
    features are standardised over all cells first.

    Args:
        project: supplies whatever of the rest is None (features from ``features/``, current
            labels without pseudo-labels, ``config.seed``).
        features: ``(cell_ids (n,), features (n, d) float32)``.
        labels: cell_id -> class name.
        seed: seeds the fold split and the head.

    Returns:
        ``(confusion, per_class)``: confusion counts, index = true class, columns = predicted;
        per_class rows ``label, precision, recall, f1, support, included`` (left-out classes
        with NaN metrics and ``included`` False). ``per_class.attrs`` holds ``n_splits``,
        ``left_out``, ``macro_f1`` and ``balanced_accuracy``.

    Raises:
        NotTrainedError: fewer than 2 classes have >= 2 labels.
        DataError: a labeled cell has no features.
    """
    from sklearn.metrics import confusion_matrix

    if project is None:
        if features is None or labels is None:
            raise ConfigError("cross_validated: give a project, or both features and labels")
    else:
        from datasets.features import read_features

        features = read_features(project.path)[:2] if features is None else features
        labels = project.store.current_labels() if labels is None else labels
        seed = project.config.seed if seed is None else seed
    x, y, left_out, counts = _cv_data(features, dict(labels))
    k = min(MAX_FOLDS, min(Counter(y.tolist()).values()))
    pred = _cv_predict(x, y, k, seed or 0)
    names = pd.Index(sorted(set(y.tolist())))
    conf = pd.DataFrame(
        confusion_matrix(y, pred, labels=list(names)),
        index=names.rename("true"),
        columns=names.rename("predicted"),
    )
    per_class = _per_class(y, pred, left_out, counts)
    f1, rec = per_class["f1"][per_class["included"]], per_class["recall"][per_class["included"]]
    per_class.attrs.update(n_splits=k, left_out=left_out, macro_f1=float(f1.mean()))
    per_class.attrs["balanced_accuracy"] = float(rec.mean())
    logger.info("cross-validated %d labels, %d folds: macro F1 %.3f", len(y), k, f1.mean())
    return conf, per_class


# ---------------------------------------------------------------- figures
def plot_discovery_report(
    curves: pd.DataFrame, expected: pd.DataFrame | None, out: Path, title: str = ""
) -> Path:
    """One panel per class: cells found against labels spent; dashed, the expected curve of
    random sampling, shaded its interval.

    Args:
        curves: from :func:`discovery_curves`.
        expected: from :func:`expected_random_curve`; None while there is no random slice.
        out: the PNG to write.
        title: figure title.
    """
    classes = list(dict.fromkeys(curves["label"])) or ["(no classes)"]
    fig, axes = class_panels(len(classes))
    for ax, cls in zip(axes.flat, classes):
        c = curves[curves["label"] == cls]
        x, y = np.r_[0, c["n_labeled"]], np.r_[0, c["n_found"]]
        ax.step(x, y, where="post", color="#2563eb", lw=1.8, label="found")
        e = expected[expected["label"] == cls] if expected is not None else None
        if e is not None and len(e):
            x = e["n_labeled"]
            ax.plot(x, e["expected"], "--", color="#6b7280", lw=1.2, label="random (expected)")
            ax.fill_between(x, e["low"], e["high"], color="#9ca3af", alpha=0.25, lw=0,
                            label="random, 95% interval")  # fmt: skip
        found = int(c["n_found"].iloc[-1]) if len(c) else 0
        style_panel(ax, f"{short(cls)} ({found} found)")
    return finish_panels(fig, axes, len(classes), out, title)


def plot_confusion(confusion: pd.DataFrame, out: Path, title: str = "") -> Path:
    """Row-normalised confusion heatmap (colour: share of the true class) with the counts."""
    plt = pyplot()
    counts = confusion.to_numpy()
    norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(counts)
    side = max(4.0, 1.5 + 0.6 * k)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(counts.shape):
        colour = "white" if norm[i, j] > 0.5 else "black"
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(k), [short(c) for c in confusion.columns], rotation=45, ha="right")
    ax.set_yticks(range(k), [short(c) for c in confusion.index])
    ax.set_xlabel("predicted (cross-validated)")
    ax.set_ylabel("true label")
    fig.colorbar(im, ax=ax, label="share of the true class")
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, out)


# ---------------------------------------------------------------- the report
def _write_csv(frame: pd.DataFrame, path: Path, files: list[Path], index: bool = False) -> None:
    from labeling.io.export import csv_bytes

    path.write_bytes(csv_bytes(frame, index=index))
    files.append(path)


def _write_discovery(
    events: list[LabelRecord], classes: list[str], out: Path, files: list[Path], notes: list[str]
) -> None:
    curves = discovery_curves(events, classes)
    prev = prevalence(events, classes)
    expected = None
    if random_slice(events):
        _write_csv(prev, out / "prevalence.csv", files)
        n_slice = int(prev["n_slice"].iloc[0]) if len(prev) else 0
        if n_slice < FEW_RANDOM:  # as the Discover page: a curve from 3 random cells misleads
            notes.append(
                f"prevalence rests on {count(n_slice, 'random cell')} so far: its intervals "
                "(low, high in prevalence.csv) are wide, and the curve of labeling at random "
                f"is drawn from {FEW_RANDOM} random cells on"
            )
        else:
            expected = expected_random_curve(np.arange(1, len(events) + 1), prev)
            cols = {"expected": "expected_random", "low": "expected_low", "high": "expected_high"}
            curves = curves.merge(
                expected.rename(columns=cols), on=["n_labeled", "label"], how="left"
            )
            expected = expected_random_curve(len(events), prev)
    else:
        notes.append(
            "prevalence skipped: no labels from the random slice yet "
            "(no expected random curve either)"
        )
    _write_csv(curves, out / "discovery.csv", files)
    title = f"discovery after {len(events)} labels"
    files.append(plot_discovery_report(curves, expected, out / "discovery.png", title))


def _write_cv(project: Project, out: Path, files: list[Path], notes: list[str]) -> None:
    try:
        confusion, per_class = cross_validated(project)
    except (NotTrainedError, DataError) as e:
        notes.append(f"cross-validation skipped: {e}")
        return
    _write_csv(confusion, out / "confusion.csv", files, index=True)
    _write_csv(per_class, out / "per_class.csv", files)
    a = per_class.attrs
    notes.append(
        f"cross-validation: {a['n_splits']} folds, macro F1 {a['macro_f1']:.3f}, "
        f"balanced accuracy {a['balanced_accuracy']:.3f}"
        + (f"; left out (fewer than 2 labels): {a['left_out']}" if a["left_out"] else "")
    )
    title = f"{int(confusion.to_numpy().sum())} labels, {a['n_splits']}-fold"
    files.append(plot_confusion(confusion, out / "confusion.png", title))


def write_report(project: Project, out_dir: Path) -> list[Path]:
    """Write every table and figure of the project into ``out_dir``.

    Files: counts.csv, rounds.csv, stopping.json, discovery.csv + discovery.png, prevalence.csv,
    confusion.csv + per_class.csv + confusion.png, and notes.txt, which says which parts were
    skipped and why (no labels yet, no random slice yet, too few labels to cross-validate).

    Returns:
        The files written, notes.txt last.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = project.store
    events = store.label_events()
    classes = [c.name for c in store.classes(include_pseudo=False)]
    files: list[Path] = []
    notes: list[str] = []
    _write_csv(class_counts(store, events), out / "counts.csv", files)
    _write_csv(labels_per_round(store, events), out / "rounds.csv", files)
    stop = stopping_signal(events)
    text = json.dumps(stop, indent=2, ensure_ascii=False) + "\n"
    (out / "stopping.json").write_text(text, encoding="utf-8")
    files.append(out / "stopping.json")
    if events:
        _write_discovery(events, classes, out, files, notes)
    else:
        notes.append("discovery and prevalence skipped: no labels yet")
    _write_cv(project, out, files, notes)
    for note in notes:
        logger.info("report: %s", note)
    (out / "notes.txt").write_text("".join(f"{n}\n" for n in notes), encoding="utf-8")
    files.append(out / "notes.txt")
    return files

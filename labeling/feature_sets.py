"""Which features the loop's head learns from, and the (n, d) matrix of them.

Sets (``loop.features`` in project.toml): ``morphology`` (measured at ingest), ``embedding``
(the newest model version's: fine-tuned on the labels when the trainer has fine-tuned, else the
self-supervised U-Net backbone's), ``morphology+embedding``,
``cellprofiler`` (the numeric ``cp_*`` columns of cells.parquet, from a CellProfiler import)
and ``morphology+cellprofiler``; ``auto`` (the default) starts on morphology and, once the
trainer has published a version, adds an embedding only when the head with it beats the head on
morphology alone by at least :data:`AUTO_MARGIN` balanced accuracy, without leakage:

- the self-supervised backbone's label-free embedding (``morphology+embedding``) by stratified
  cross-validation on all labeled cells;
- a fine-tuned version's embedding (``morphology+finetuned``: its encoder has seen the labels it
  was trained on, so cross-validating it on them would flatter it; a memorising encoder would
  always win) only on labels given after it was trained: the cells not in its
  ``trained_cells.npy``, at least :data:`AUTO_MIN_FRESH` of them. Those cells are split in
  folds; each fold is predicted by a head fit on every other labeled cell. The newest
  fine-tuned version with that many fresh labels is judged (and used when it wins), so a
  stale version costs freshness only, never quality.

The decision is kept in ``PROJECT/cache/`` and made again once per new model version or when
the labels have grown by a quarter. Only complete versions are read; the loop never waits for the
trainer. Every set's columns are standardised (zero mean, unit variance over all cells).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from datasets.cells import DAMAGED_FIX
from datasets.files import replace_file
from labeling.errors import ConfigError, ProjectDamagedError
from labeling.project import Project
from models.folder import (
    VersionInfo,
    describe_version,
    is_finetuned,
    latest_backbone_version,
    list_versions,
    load_trained_cells,
    version_name,
)

logger = logging.getLogger(__name__)

CP_PREFIX = "cp_"  # CellProfiler measurement columns in cells.parquet
AUTO_MIN_PER_CLASS = 5  # auto compares sets once 2 classes have this many labels
AUTO_FOLDS = 3  # stratified folds of the comparison
AUTO_MAX_LABELS = 1500  # labeled cells the comparison uses at most (stratified sample)
AUTO_MARGIN = 0.01  # morphology+embedding must win by this much balanced accuracy
AUTO_REGROW = 1.25  # decide again when the labels have grown by this factor
AUTO_MIN_FRESH = 20  # labels given after a fine-tuned version was trained, to judge it
CHOICE_FILE = "features-auto.json"
_MATRICES: dict[tuple, npt.NDArray[np.float32]] = {}  # (project, pool, set, version) -> (n, d)
_LOCK = threading.Lock()
_KEEP = 2  # matrices kept in memory (100,000 cells x 120 features: 48 MB each)


@dataclass(frozen=True)
class FeatureChoice:
    """The concrete set a round uses, and why."""

    name: str  # morphology, embedding, morphology+embedding, morphology+finetuned, cellprofiler...
    model_version: int | None  # the version whose embeddings are used
    reason: str  # one line for the round info and the app
    scores: dict[str, float] = field(default_factory=dict)  # CV balanced accuracy per set

    @property
    def key(self) -> str:
        """Identifies the matrix: set name and model version."""
        return self.name if self.model_version is None else f"{self.name}@{self.model_version}"


def choose_features(project: Project, pool: Any, labels: dict[str, str]) -> FeatureChoice:
    """The feature set for this round (``loop.features``, resolving ``auto``).

    Args:
        project: the open project.
        pool: its ``labeling.loop.PoolData`` (morphology features, cell ids, positions).
        labels: current non-pseudo labels, cell_id -> class.

    Raises:
        ConfigError: a CellProfiler set without ``cp_*`` columns in cells.parquet.
        ProjectError: the newest version's embedding files are unreadable.
    """
    wanted = project.config.loop.features
    if "cellprofiler" in wanted:
        cellprofiler_columns(project)  # raises when there are none
        return FeatureChoice(wanted, None, f"loop.features = {wanted} (project.toml)")
    if wanted == "morphology":
        return FeatureChoice(wanted, None, "loop.features = morphology (project.toml)")
    versions = list_versions(project.path)
    if not versions:
        why = (
            "no model version yet: morphology until the trainer has pretrained the backbone"
            if wanted == "auto"
            else f"loop.features = {wanted} but no model version yet: morphology until then"
        )
        return FeatureChoice("morphology", None, why)
    if wanted != "auto":  # the newest published embedding, fine-tuned when it is
        newest = versions[-1]
        name = wanted.replace("embedding", "finetuned") if is_finetuned(newest) else wanted
        return FeatureChoice(
            name,
            newest.version,
            f"loop.features = {wanted} (project.toml), embedding of {describe_version(newest)}",
        )
    return _auto(project, pool, labels, versions)


def _auto(
    project: Project, pool: Any, labels: dict[str, str], versions: list[VersionInfo]
) -> FeatureChoice:
    version = versions[-1].version
    rows, y = _labeled(pool, labels)
    counts = {c: int(n) for c, n in zip(*np.unique(y, return_counts=True))} if len(y) else {}
    big = [c for c, n in counts.items() if n >= AUTO_MIN_PER_CLASS]
    if len(big) < 2:
        return FeatureChoice(
            "morphology",
            None,
            (
                f"auto: morphology until 2 classes have {AUTO_MIN_PER_CLASS} labels, then "
                f"compared with the {version_name(version)} embedding by cross-validation"
            ),
        )
    cache = project.path / "cache" / CHOICE_FILE
    saved = _read_choice(cache, pool.version, version, len(y))
    if saved is not None and (
        saved.model_version is None or saved.model_version in {v.version for v in versions}
    ):
        return saved
    keep = np.isin(y, big)
    choice = _compare(project, pool, rows[keep], y[keep], versions)
    _write_choice(cache, choice, pool.version, version, len(y))
    return choice


def _labeled(pool: Any, labels: dict[str, str]) -> tuple[npt.NDArray[np.int64], np.ndarray]:
    pairs = [(pool.position[c], lab) for c, lab in labels.items() if c in pool.position]
    rows = np.array([p for p, _ in pairs], dtype=np.int64)
    return rows, np.array([lab for _, lab in pairs], dtype=object)


def _fresh_candidate(
    pool: Any, rows: npt.NDArray[np.int64], versions: list[VersionInfo], y: np.ndarray
) -> tuple[VersionInfo, npt.NDArray[np.bool_]] | None:
    """The newest fine-tuned version with enough labels given after it was trained, and which
    labeled rows those are."""
    ids = np.asarray(pool.cell_ids)[rows]
    for info in reversed(versions):
        if not is_finetuned(info):
            continue
        trained = load_trained_cells(info)
        if trained is None:
            continue
        fresh = ~np.isin(ids, trained)
        if fresh.sum() >= AUTO_MIN_FRESH and len(set(y[fresh].tolist())) >= 2:
            return info, fresh
    return None


def _compare(
    project: Project,
    pool: Any,
    rows: npt.NDArray[np.int64],
    y: np.ndarray,
    versions: list[VersionInfo],
) -> FeatureChoice:
    """Morphology alone vs morphology + each embedding, judged without leakage (module doc)."""
    seed = project.config.seed
    t0 = time.perf_counter()
    morph = feature_matrix(project, pool, "morphology")
    tried: list[tuple[float, str, VersionInfo, str, dict[str, float]]] = []
    backbone = latest_backbone_version(project.path)
    if backbone is not None:
        cand = feature_matrix(project, pool, f"morphology+embedding@{backbone.version}")
        base_s, cand_s = judge_backbone(morph[rows], cand[rows], y, seed)
        tried.append((cand_s - base_s, "morphology+embedding", backbone,
                      f"cross-validated on {min(len(y), AUTO_MAX_LABELS)} labels",
                      {"morphology": base_s, "morphology+embedding": cand_s}))  # fmt: skip
    fresh = _fresh_candidate(pool, rows, versions, y)
    if fresh is not None:
        info, mask = fresh
        cand = feature_matrix(project, pool, f"morphology+finetuned@{info.version}")
        base_s, cand_s = judge_finetuned(morph[rows], cand[rows], y, mask, seed)
        tried.append((cand_s - base_s, "morphology+finetuned", info,
                      f"on {int(mask.sum())} labels given after it was trained",
                      {"morphology (fresh labels)": base_s,
                       "morphology+finetuned": cand_s}))  # fmt: skip
    scores = {k: round(v, 4) for t in tried for k, v in t[4].items()}
    if not tried:
        return FeatureChoice("morphology", None, "auto: morphology (no embedding to judge yet)")
    gain, name, info, how, pair = max(tried, key=lambda t: t[0])
    without_s, with_s = pair.values()
    emb = (
        f"the self-supervised {version_name(info.version)} embedding"
        if name == "morphology+embedding"
        else f"the {describe_version(info)} embedding"
    )
    vs = f"balanced accuracy {with_s:.3f} with {emb} vs {without_s:.3f} on morphology alone, {how}"
    if gain < AUTO_MARGIN:
        name = "morphology"
    logger.info("auto features: %s (%s; %.2f s)", name, vs, time.perf_counter() - t0)
    return FeatureChoice(
        name, info.version if name != "morphology" else None, f"auto: {name} ({vs})", scores
    )


def judge_backbone(
    x_base: npt.NDArray[np.float32], x_cand: npt.NDArray[np.float32], y: np.ndarray, seed: int
) -> tuple[float, float]:
    """``(base, candidate)`` balanced accuracy of the head by stratified :data:`AUTO_FOLDS`-fold
    CV on the labeled rows (a stratified sample of :data:`AUTO_MAX_LABELS` when there are more),
    the same folds for both: how ``auto`` judges a label-free embedding (the loop and
    ``simulate --finetune`` alike)."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    r, yy = np.arange(len(y)), y
    if len(y) > AUTO_MAX_LABELS:
        r, _, yy, _ = train_test_split(
            r, y, train_size=AUTO_MAX_LABELS, stratify=y, random_state=seed
        )
    folds = list(StratifiedKFold(AUTO_FOLDS, shuffle=True, random_state=seed).split(r, yy))
    return (
        cv_balanced_accuracy(x_base[r], yy, folds, seed),
        cv_balanced_accuracy(x_cand[r], yy, folds, seed),
    )


def judge_finetuned(
    x_base: npt.NDArray[np.float32],
    x_cand: npt.NDArray[np.float32],
    y: np.ndarray,
    fresh: npt.NDArray[np.bool_],
    seed: int,
) -> tuple[float, float]:
    """``(base, candidate)`` balanced accuracy on the ``fresh`` rows only (labels the fine-tuned
    embedding was not trained on; :func:`fresh_balanced_accuracy`), every fresh row kept and
    older ones sampled down to :data:`AUTO_MAX_LABELS` in all: how ``auto`` judges a fine-tuned
    embedding (the loop and ``simulate --finetune`` alike)."""
    keep = np.arange(len(y))
    if len(y) > AUTO_MAX_LABELS:
        old = np.flatnonzero(~fresh)
        room = max(0, AUTO_MAX_LABELS - int(fresh.sum()))
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([np.flatnonzero(fresh), rng.permutation(old)[:room]]))
    return fresh_balanced_accuracy(x_base[keep], x_cand[keep], y[keep], fresh[keep], seed)


def fresh_balanced_accuracy(
    x_base: npt.NDArray[np.float32],
    x_cand: npt.NDArray[np.float32],
    y: np.ndarray,
    fresh: npt.NDArray[np.bool_],
    seed: int,
    n_folds: int = AUTO_FOLDS,
) -> tuple[float, float]:
    """Balanced accuracy of the head on ``x_base`` and on ``x_cand`` over the ``fresh`` rows
    only (labels an embedding was not trained on): the fresh rows are cut in ``n_folds``
    folds, each predicted by a head fit on every other row (same folds for both sets).

    Returns:
        ``(base, candidate)``; ``(nan, nan)`` with fewer than 2 fresh rows.
    """
    from sklearn.model_selection import KFold

    from labeling.head import HeadConfig, SklearnHead

    fresh_rows = np.flatnonzero(fresh)
    if len(fresh_rows) < 2:
        return float("nan"), float("nan")
    folds = KFold(min(n_folds, len(fresh_rows)), shuffle=True, random_state=seed)
    preds = {key: np.empty(len(fresh_rows), dtype=object) for key in ("base", "cand")}
    for _, test_k in folds.split(fresh_rows):
        test = fresh_rows[test_k]
        train = np.setdiff1d(np.arange(len(y)), test)
        if len(set(y[train].tolist())) < 2:  # nothing to learn from: the one class seen
            for key in preds:
                preds[key][test_k] = y[train][0] if len(train) else None
            continue
        for key, x in (("base", x_base), ("cand", x_cand)):
            head = SklearnHead(HeadConfig(seed=seed)).fit(x[train], list(y[train]))
            top = head.predict_proba(x[test]).argmax(1)
            preds[key][test_k] = np.asarray(head.classes_, dtype=object)[top]
    truth = list(y[fresh_rows])
    return (
        balanced_accuracy(truth, list(preds["base"])),
        balanced_accuracy(truth, list(preds["cand"])),
    )


def model_version_of(key: str) -> int | None:
    """The model version of a :attr:`FeatureChoice.key` (``morphology+finetuned@5`` -> 5)."""
    _, _, version = key.partition("@")
    return int(version) if version.isdigit() else None


def describe_features(project: Project, key: str) -> str:
    """Plain words for the features a head used: ``morphology`` or ``morphology + the
    embedding of v0005 (fine-tuned on 120 labels)``; for the Label page's status line."""
    name, version = key.partition("@")[0], model_version_of(key)
    if version is None:
        return name.replace("+", " + ")
    info = next((v for v in list_versions(project.path) if v.version == version), None)
    what = (
        describe_version(info) if info is not None else f"{version_name(version)} (since removed)"
    )
    if "finetuned" in name:
        what = f"the embedding of {what}"
    else:
        what = f"the self-supervised embedding of {version_name(version)}"
    parts = [what if p in ("embedding", "finetuned") else p for p in name.split("+")]
    return " + ".join(parts)


def balanced_accuracy(truth: list, pred: list) -> float:
    """scikit-learn's balanced accuracy (mean recall over the classes in ``truth``), without its
    warning when a fold's predictions name a class the fold's truth lacks (common with rare
    classes, and expected)."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(truth, pred))


def cv_balanced_accuracy(
    x: npt.NDArray[np.float32], y: np.ndarray, folds: list, seed: int
) -> float:
    """Mean balanced accuracy of the loop's head over ``folds`` ((train, test) index pairs)."""
    from labeling.head import HeadConfig, SklearnHead

    scores = []
    for train, test in folds:
        head = SklearnHead(HeadConfig(seed=seed)).fit(x[train], list(y[train]))
        pred = np.asarray(head.classes_, dtype=object)[head.predict_proba(x[test]).argmax(1)]
        scores.append(balanced_accuracy(list(y[test]), list(pred)))
    return float(np.mean(scores))


def _read_choice(
    path: Path, pool_version: str, version: int, n_labels: int
) -> FeatureChoice | None:
    try:
        data = json.loads(path.read_text())
        fresh = (
            data["pool"] == pool_version
            and data["version"] == version
            and n_labels < data["n_labels"] * AUTO_REGROW
        )
        if not fresh:
            return None
        return FeatureChoice(
            data["name"], data["model_version"], data["reason"], dict(data["scores"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_choice(
    path: Path, choice: FeatureChoice, pool_version: str, version: int, n_labels: int
) -> None:
    data = {
        "pool": pool_version,
        "version": version,
        "n_labels": n_labels,
        "name": choice.name,
        "model_version": choice.model_version,
        "reason": choice.reason,
        "scores": choice.scores,
    }
    try:
        replace_file(path, lambda fh: fh.write(json.dumps(data).encode()))
    except OSError as exc:  # a read-only project decides again next time
        logger.warning("%s: cannot write (%s)", path, exc)


def feature_matrix(project: Project, pool: Any, key: str) -> npt.NDArray[np.float32]:
    """(n, d) float32 standardised features of ``key`` (a :attr:`FeatureChoice.key`), rows in
    the pool's cell order; kept in memory per project, pool, set and model version.

    Cells missing from the embeddings or CellProfiler table (added after the version was
    made, say) get the column means (0 after standardising).
    """
    if key == "morphology":
        return pool.features
    name, _, version = key.partition("@")
    stamp = _cells_stamp(project) if "cellprofiler" in name else ""
    cache_key = (str(project.path.resolve()), pool.version, key, stamp)
    with _LOCK:
        hit = _MATRICES.get(cache_key)
    if hit is not None:
        return hit
    parts = []
    for part in name.split("+"):
        if part == "morphology":
            parts.append(pool.features)
        elif part == "embedding":
            parts.append(_embedding(project, pool, int(version)))
        elif part == "finetuned":
            parts.append(_finetuned(project, pool, int(version)))
        elif part == "cellprofiler":
            parts.append(_cellprofiler(project, pool))
        else:
            raise ConfigError(f"feature set {name!r}: unknown part {part!r}")
    matrix = parts[0] if len(parts) == 1 else np.hstack(parts).astype(np.float32, copy=False)
    with _LOCK:
        _MATRICES[cache_key] = matrix
        while len(_MATRICES) > _KEEP:
            del _MATRICES[next(iter(_MATRICES))]
    return matrix


def _embedding(project: Project, pool: Any, version: int) -> npt.NDArray[np.float32]:
    from models.folder import load_backbone_embeddings

    found = load_backbone_embeddings(project.path, version)
    if found is None:
        raise ConfigError(f"{project.path}: model version {version} has no backbone embeddings")
    return _aligned(found[0], found[1], pool, f"the {version_name(version)} embedding")


def _finetuned(project: Project, pool: Any, version: int) -> npt.NDArray[np.float32]:
    from models.folder import load_embeddings

    ids, values = load_embeddings(project.path, version)
    return _aligned(ids, values, pool, f"the fine-tuned {version_name(version)} embedding")


def _aligned(ids: np.ndarray, values: np.ndarray, pool: Any, what: str) -> npt.NDArray[np.float32]:
    from labeling.simulate import standardise

    if len(ids) == len(pool.cell_ids) and np.array_equal(ids, pool.cell_ids):
        x = np.array(values, dtype=np.float32)
    else:
        src = [(pool.position[c], i) for i, c in enumerate(ids.tolist()) if c in pool.position]
        rows = np.array([r for r, _ in src], dtype=np.int64)
        cols = np.array([i for _, i in src], dtype=np.int64)
        present = np.asarray(values, dtype=np.float32)[cols]
        x = np.empty((len(pool.cell_ids), values.shape[1]), dtype=np.float32)
        x[:] = present.mean(axis=0) if len(present) else 0.0
        x[rows] = present
        logger.warning("%s covers %d of %d cells; the others get its mean", what, len(rows), len(x))
    return standardise(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))


def cellprofiler_columns(project: Project) -> list[str]:
    """The numeric ``cp_*`` columns of the cell table.

    Raises:
        ConfigError: when there are none (no CellProfiler import yet).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = project.path / "cells.parquet"
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError, pa.ArrowException) as err:  # truncated, overwritten, unreadable
        raise ProjectDamagedError(path, err, DAMAGED_FIX) from err
    cols = [
        f.name
        for f in schema
        if f.name.startswith(CP_PREFIX)
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    ]
    if not cols:
        raise ConfigError(
            f"{path}: no numeric {CP_PREFIX}* columns (CellProfiler measurements) in the cell "
            "table; create the project from a CellProfiler export to have them"
            + (
                f" (project.toml's loop.features = {project.config.loop.features!r} asks for "
                'them: set it to "auto")'
                if project.config.loop.features != "auto"
                else ""
            )
        )
    return cols


def _cells_stamp(project: Project) -> str:
    st = (project.path / "cells.parquet").stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _cellprofiler(project: Project, pool: Any) -> npt.NDArray[np.float32]:
    cols = cellprofiler_columns(project)
    table = project.cells(columns=["cell_id", *cols])
    values = table[cols].to_numpy(dtype=np.float32, na_value=np.nan)
    with np.errstate(all="ignore"):
        medians = np.nan_to_num(np.nanmedian(values, axis=0)) if len(values) else 0.0
    values = np.where(np.isfinite(values), values, medians)
    return _aligned(table["cell_id"].to_numpy(str), values, pool, "the CellProfiler table")

"""Which features the loop's head learns from, and the (n, d) matrix of them.

Sets (``loop.features`` in project.toml): ``morphology`` (measured at ingest), ``embedding``
(the self-supervised U-Net backbone's, published by the trainer), ``morphology+embedding``,
``cellprofiler`` (the numeric ``cp_*`` columns of cells.parquet, from a CellProfiler import)
and ``morphology+cellprofiler``; ``auto`` (the default) starts on morphology and, once the
trainer has published a version with backbone embeddings, takes morphology+embedding only when
stratified cross-validation of the head on the labeled cells says it is better by at least
:data:`AUTO_MARGIN` balanced accuracy. The decision is kept in ``PROJECT/cache/`` and made
again once per new model version or when the labels have grown by a quarter.

The embeddings are the label-free backbone ones (``model_versions.latest_backbone_version``):
those of a fine-tuned encoder have seen the labels, and cross-validating them on the same
labels would flatter them. Only complete versions are read; the loop never waits for the
trainer. Every set's columns are standardised (zero mean, unit variance over all cells).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from labeling.errors import ConfigError
from labeling.project import Project
from models.folder import latest_backbone_version, version_name

logger = logging.getLogger(__name__)

CP_PREFIX = "cp_"  # CellProfiler measurement columns in cells.parquet
AUTO_MIN_PER_CLASS = 5  # auto compares sets once 2 classes have this many labels
AUTO_FOLDS = 3  # stratified folds of the comparison
AUTO_MAX_LABELS = 1500  # labeled cells the comparison uses at most (stratified sample)
AUTO_MARGIN = 0.01  # morphology+embedding must win by this much balanced accuracy
AUTO_REGROW = 1.25  # decide again when the labels have grown by this factor
CHOICE_FILE = "features-auto.json"
_MATRICES: dict[tuple, npt.NDArray[np.float32]] = {}  # (project, pool, set, version) -> (n, d)
_LOCK = threading.Lock()
_KEEP = 2  # matrices kept in memory (100,000 cells x 120 features: 48 MB each)


@dataclass(frozen=True)
class FeatureChoice:
    """The concrete set a round uses, and why."""

    name: str  # morphology, embedding, morphology+embedding, cellprofiler, ...
    model_version: int | None  # the version whose backbone embeddings are used
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
    found = latest_backbone_version(project.path)
    if found is None:
        why = (
            "no model version yet: morphology until the trainer has pretrained the backbone"
            if wanted == "auto"
            else f"loop.features = {wanted} but no model version yet: morphology until then"
        )
        return FeatureChoice("morphology", None, why)
    version = found.version
    if wanted != "auto":
        return FeatureChoice(
            wanted,
            version,
            f"loop.features = {wanted} (project.toml), embedding of {version_name(version)}",
        )
    return _auto(project, pool, labels, version)


def _auto(project: Project, pool: Any, labels: dict[str, str], version: int) -> FeatureChoice:
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
    if saved is not None:
        return saved
    keep = np.isin(y, big)
    choice = _compare(project, pool, rows[keep], y[keep], version)
    _write_choice(cache, choice, pool.version, version, len(y))
    return choice


def _labeled(pool: Any, labels: dict[str, str]) -> tuple[npt.NDArray[np.int64], np.ndarray]:
    pairs = [(pool.position[c], lab) for c, lab in labels.items() if c in pool.position]
    rows = np.array([p for p, _ in pairs], dtype=np.int64)
    return rows, np.array([lab for _, lab in pairs], dtype=object)


def _compare(
    project: Project, pool: Any, rows: npt.NDArray[np.int64], y: np.ndarray, version: int
) -> FeatureChoice:
    """Stratified CV of the head on morphology vs morphology+embedding (same folds)."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    seed = project.config.seed
    if len(y) > AUTO_MAX_LABELS:
        rows, _, y, _ = train_test_split(
            rows, y, train_size=AUTO_MAX_LABELS, stratify=y, random_state=seed
        )
    t0 = time.perf_counter()
    folds = list(StratifiedKFold(AUTO_FOLDS, shuffle=True, random_state=seed).split(rows, y))
    both = f"morphology+embedding@{version}"
    scores = {
        name: cv_balanced_accuracy(feature_matrix(project, pool, key)[rows], y, folds, seed)
        for name, key in (("morphology", "morphology"), ("morphology+embedding", both))
    }
    gain = scores["morphology+embedding"] - scores["morphology"]
    name = "morphology+embedding" if gain >= AUTO_MARGIN else "morphology"
    vs = (
        f"CV balanced accuracy {scores['morphology+embedding']:.3f} with the "
        f"{version_name(version)} embedding vs {scores['morphology']:.3f} without, "
        f"{len(y)} labels"
    )
    logger.info("auto features: %s (%s; %.2f s)", name, vs, time.perf_counter() - t0)
    return FeatureChoice(
        name,
        version if name != "morphology" else None,
        f"auto: {name} ({vs})",
        {k: round(v, 4) for k, v in scores.items()},
    )


def cv_balanced_accuracy(
    x: npt.NDArray[np.float32], y: np.ndarray, folds: list, seed: int
) -> float:
    """Mean balanced accuracy of the loop's head over ``folds`` ((train, test) index pairs)."""
    from sklearn.metrics import balanced_accuracy_score

    from labeling.head import HeadConfig, SklearnHead

    scores = []
    for train, test in folds:
        head = SklearnHead(HeadConfig(seed=seed)).fit(x[train], list(y[train]))
        pred = np.asarray(head.classes_, dtype=object)[head.predict_proba(x[test]).argmax(1)]
        scores.append(balanced_accuracy_score(list(y[test]), list(pred)))
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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
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
    schema = pq.read_schema(path)
    cols = [
        f.name
        for f in schema
        if f.name.startswith(CP_PREFIX)
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    ]
    if not cols:
        raise ConfigError(
            f"{path}: loop.features = {project.config.loop.features!r} needs numeric "
            f"{CP_PREFIX}* columns (CellProfiler measurements) and the cell table has none; "
            'import them first or set loop.features = "auto" in project.toml'
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

"""The project's ``models/`` folder contract, torch-free: file names, the trainer's lock and
status files, and published model versions read with numpy only.

Both the writer (``models.trainer.trainer``, ``models.trainer.versions``) and the readers
(``labeling``: the loop, the trainer control in ``labeling.training``) import it; ``import models``
loads no torch.

The trainer writes ``PROJECT/models/vNNNN/`` folders: it fills
``.tmp-vNNNN/`` and renames it when complete, ``meta.json`` written last. Each holds
``checkpoint.pt``, ``config.json``, ``classes.json``, ``embeddings.npy`` (n, d) float32 and
``cell_ids.npy`` (n,) str in cell-table order, ``predictions.npy`` (n, k) float32 when a
classifier exists, and ``meta.json``. The newest complete version wins; ``.tmp-*`` folders
(a publish in progress or killed) are ignored.

A classifier version's embeddings come from an encoder fine-tuned on the labels, so judging
them by cross-validation on those same labels would flatter them; such a version also holds
``backbone_embeddings.npy``, the self-supervised backbone's label-free embeddings (the same
as the pretrain-only version's ``embeddings.npy``). :func:`latest_backbone_embeddings` finds
them. A fine-tuned version also lists the cells it was trained on (``trained_cells.npy``), so
the loop can judge its embeddings on labels given after it was trained
(:func:`load_trained_cells`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from datasets.errors import ProjectError

MODELS_DIR = "models"
BACKBONE_FILE = "backbone.pt"  # the self-supervised U-Net every fine-tune starts from
META_FILE = "meta.json"
EMBEDDINGS_FILE = "embeddings.npy"
BACKBONE_EMBEDDINGS_FILE = "backbone_embeddings.npy"
CELL_IDS_FILE = "cell_ids.npy"
TRAINED_CELLS_FILE = "trained_cells.npy"  # a fine-tuned version's training cells (n_train,) str
PREDICTIONS_FILE = "predictions.npy"
CLASSES_FILE = "classes.json"
TMP_PREFIX = ".tmp-"
VERSION_RE = re.compile(r"\Av(\d{4,})\Z")
LOCK_FILE = "trainer.lock"  # flock'ed by the running trainer; holds its pid
STATUS_FILE = "trainer.json"  # written by the trainer: state, progress, message, version
START_FILE = "trainer.start"  # flock'ed while starting one; holds "pid time" of the last start
LOG_FILE = "trainer.log"  # the started trainer's stdout and stderr


@dataclass(frozen=True)
class VersionInfo:
    """A complete published model version."""

    version: int  # N of vNNNN
    path: Path  # the vNNNN folder
    classes: tuple[str, ...]  # class names of predictions.npy columns; empty without classifier
    has_predictions: bool  # predictions.npy exists
    n_labels: int  # label events in the store when the trainer started this version
    created: str  # ISO time the version was published
    meta: dict[str, Any] = field(default_factory=dict)  # all of meta.json


def version_name(version: int) -> str:
    return f"v{version:04d}"


def _read_info(path: Path, version: int) -> VersionInfo | None:
    meta_path = path / META_FILE
    if not meta_path.is_file() or not (path / EMBEDDINGS_FILE).is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    return VersionInfo(
        version=version,
        path=path,
        classes=tuple(meta.get("classes", [])),
        has_predictions=(path / PREDICTIONS_FILE).is_file(),
        n_labels=int(meta.get("n_labels", 0)),
        created=str(meta.get("created", "")),
        meta=meta,
    )


def list_versions(project_dir: Path) -> list[VersionInfo]:
    """Every complete version of the project, oldest first."""
    root = Path(project_dir) / MODELS_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = VERSION_RE.match(child.name)
        if match and child.is_dir():
            info = _read_info(child, int(match.group(1)))
            if info is not None:
                found.append(info)
    return sorted(found, key=lambda v: v.version)


def latest_version(project_dir: Path) -> VersionInfo | None:
    """The newest complete version (has meta.json and embeddings), or None when there is none."""
    versions = list_versions(project_dir)
    return versions[-1] if versions else None


def _resolve(project_dir: Path, version: VersionInfo | int) -> Path:
    if isinstance(version, VersionInfo):
        return version.path
    path = Path(project_dir) / MODELS_DIR / version_name(int(version))
    if not (path / META_FILE).is_file():
        raise ProjectError(
            f"{path}: model version {version} is missing or incomplete; use latest_version()"
        )
    return path


def _load(path: Path, mmap: bool = True) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ProjectError(f"{path}: unreadable ({err}); delete the version folder") from err


def load_embeddings(
    project_dir: Path, version: VersionInfo | int
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float32]]:
    """``(cell_ids (n,) str, embeddings (n, d) float32 read-only memmap)`` of a version.

    Raises:
        ProjectError: the version is missing, incomplete or its files disagree.
    """
    path = _resolve(project_dir, version)
    ids = _load(path / CELL_IDS_FILE, mmap=False)
    emb = _load(path / EMBEDDINGS_FILE)
    if emb.ndim != 2 or len(emb) != len(ids) or emb.dtype != np.float32:
        raise ProjectError(
            f"{path}: embeddings {emb.shape} {emb.dtype} do not match {len(ids)} cell ids; "
            "delete the version folder"
        )
    return ids, emb


def backbone_embeddings_path(info: VersionInfo) -> Path | None:
    """A version's label-free (self-supervised) embeddings file, None when it has none:
    ``embeddings.npy`` of a pretrain-only version, ``backbone_embeddings.npy`` of a classifier."""
    if not info.has_predictions and info.meta.get("kind", "unet") != "classifier":
        return info.path / EMBEDDINGS_FILE
    path = info.path / BACKBONE_EMBEDDINGS_FILE
    return path if path.is_file() else None


def is_finetuned(info: VersionInfo) -> bool:
    """Whether a version's ``embeddings.npy`` come from an encoder fine-tuned on labels."""
    return info.has_predictions or info.meta.get("kind", "unet") == "classifier"


def load_trained_cells(info: VersionInfo) -> npt.NDArray[np.str_] | None:
    """The cell ids a fine-tuned version was trained on; None when it does not say (a version
    from before the list was written, or an unreadable list): such a version cannot be judged
    without leakage."""
    path = info.path / TRAINED_CELLS_FILE
    if not path.is_file():
        return None
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return ids if ids.ndim == 1 else None


def describe_version(info: VersionInfo) -> str:
    """Plain words: ``v0003 (fine-tuned on 120 labels)`` or ``v0001 (self-supervised)``."""
    if is_finetuned(info):
        n = int(info.meta.get("n_trained", info.n_labels))
        return f"{version_name(info.version)} (fine-tuned on {n} labels)"
    return f"{version_name(info.version)} (self-supervised)"


def latest_backbone_embeddings(
    project_dir: Path,
) -> tuple[VersionInfo, npt.NDArray[np.str_], npt.NDArray[np.float32]] | None:
    """``(version, cell_ids (n,), embeddings (n, d) float32 memmap)``: the label-free
    embeddings of the newest complete version that has them; None when no version has.

    Raises:
        ProjectError: that version's files are unreadable or disagree.
    """
    info = latest_backbone_version(project_dir)
    found = load_backbone_embeddings(project_dir, info) if info is not None else None
    return (info, *found) if info is not None and found is not None else None


def latest_backbone_version(project_dir: Path) -> VersionInfo | None:
    """The newest complete version with label-free embeddings (a cheap check: no arrays read)."""
    for info in reversed(list_versions(project_dir)):
        if backbone_embeddings_path(info) is not None:
            return info
    return None


def load_backbone_embeddings(
    project_dir: Path, version: VersionInfo | int
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float32]] | None:
    """``(cell_ids (n,), embeddings (n, d) float32 memmap)``: a version's label-free
    embeddings (see :func:`backbone_embeddings_path`), None when it has none.

    Raises:
        ProjectError: the version is missing, incomplete or its files disagree.
    """
    if not isinstance(version, VersionInfo):
        info = _read_info(_resolve(project_dir, version), int(version))
        if info is None:
            raise ProjectError(f"{project_dir}: model version {version} is incomplete")
        version = info
    path = backbone_embeddings_path(version)
    if path is None:
        return None
    ids = _load(version.path / CELL_IDS_FILE, mmap=False)
    emb = _load(path)
    if emb.ndim != 2 or len(emb) != len(ids) or emb.dtype != np.float32:
        raise ProjectError(
            f"{path}: embeddings {emb.shape} {emb.dtype} do not match {len(ids)} cell ids; "
            "delete the version folder"
        )
    return ids, emb


def load_predictions(
    project_dir: Path, version: VersionInfo | int
) -> tuple[npt.NDArray[np.str_], tuple[str, ...], npt.NDArray[np.float32]] | None:
    """``(cell_ids, classes, probabilities (n, k) memmap)`` of a version, None without one."""
    path = _resolve(project_dir, version)
    if not (path / PREDICTIONS_FILE).is_file():
        return None
    ids = _load(path / CELL_IDS_FILE, mmap=False)
    try:
        classes = tuple(json.loads((path / CLASSES_FILE).read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise ProjectError(
            f"{path / CLASSES_FILE}: unreadable ({err}); delete the version folder"
        ) from err
    probs = _load(path / PREDICTIONS_FILE)
    if probs.shape != (len(ids), len(classes)):
        raise ProjectError(
            f"{path}: predictions {probs.shape} do not match {len(ids)} cells x "
            f"{len(classes)} classes; delete the version folder"
        )
    return ids, classes, probs

"""Exports that are files rather than tables, and predictions on a new screen.

- :func:`crops_zip`: a ZIP of the labeled crops, one folder per class, 16-bit TIFF each.
- :func:`model_checkpoint`: the newest published model version's ``checkpoint.pt``.
- :func:`predict_screen`: the current head applied to a new folder of crops.

``phenoscout export --what crops|model`` and ``phenoscout predict`` call these, and the Export
page offers the first two as downloads. No torch here: the checkpoint is copied as bytes.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from labeling.errors import DataError, NotTrainedError, ProjectError
from labeling.export import write_bytes_atomic  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import pandas as pd

    from labeling.project import Project

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*]+')
_BATCH = 256  # crops read per PixelStore.read call


def safe_name(name: str) -> str:
    """``name`` as a file or folder name on every OS: path separators, control and reserved
    characters become ``_``; leading dots and trailing dots/spaces go; never empty."""
    out = _UNSAFE.sub("_", str(name)).strip().lstrip(".").rstrip(". ")
    return out or "_"


def crops_zip(project: Project) -> bytes:
    """A ZIP of every currently labeled cell's crop: ``<class>/<cell id>.tif``.

    Each TIFF is (C, S, S) uint16, the stored [0, 1] crop scaled to 0..65535 (channel order as
    the project's channels). Class and cell names are made filesystem-safe (:func:`safe_name`);
    pseudo-classes ("unsure", "bad segmentation") get folders too.

    Raises:
        DataError: no cell is labeled yet.
    """
    import tifffile

    labels = project.store.current_labels(include_pseudo=True)
    if not labels:
        raise DataError(f"{project.path.name}: no labeled cells to export; label some first")
    ids = list(labels)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            crops = project.pixels.read(chunk)
            for cell_id, crop in zip(chunk, crops):
                image = io.BytesIO()
                data = np.round(np.clip(crop, 0.0, 1.0) * 65535).astype(np.uint16)
                tifffile.imwrite(image, data, photometric="minisblack",
                                 metadata={"axes": "CYX"})  # fmt: skip
                name = f"{safe_name(labels[cell_id])}/{safe_name(cell_id)}.tif"
                zf.writestr(name, image.getvalue())
    return buffer.getvalue()


def model_checkpoint(project: Project) -> tuple[int, bytes]:
    """The newest published model version and its ``checkpoint.pt`` bytes.

    Raises:
        ProjectError: no model version has been published yet.
    """
    from labeling.model_versions import latest_version

    info = latest_version(project.path)
    if info is None or not (info.path / "checkpoint.pt").exists():
        raise ProjectError(
            f"{project.path}: no trained model yet (no models/vNNNN/checkpoint.pt); run "
            f"`phenoscout train {project.path}` first"
        )
    path = info.path / "checkpoint.pt"
    return info.version, path.read_bytes()


def predict_screen(project: Project, crops: Path, metadata_csv: Path | None = None) -> pd.DataFrame:
    """The current head (fit on ``project``'s labels) applied to a new folder of crops.

    The crops are ingested into a temporary project with ``project``'s ingest config, their
    morphology features standardised with ``project``'s feature mean and sd (not their own, so
    a screen of mostly one phenotype is scored on the same scale), then scored.

    Args:
        project: the labeled project.
        crops: folder of crops of the new screen (same channels).
        metadata_csv: ``path`` + metadata; ``crops/metadata.csv`` when present and None.

    Returns:
        One row per new cell: ``cell_id, path``, metadata, ``predicted``, ``confidence``,
        ``p_<class>``.

    Raises:
        NotTrainedError: fewer than two classes have labels.
        DataError: unreadable crops, or features that do not match the project's.
    """
    import pandas as pd

    from datasets.cells import read_cells
    from datasets.features import compute_morphology, read_features
    from datasets.ingest import ingest_crops

    head, mean, sd = _fit_head(project)
    ingest = dataclasses.replace(project.config.ingest, channel_names=tuple(project.channel_names))
    with tempfile.TemporaryDirectory(prefix="phenoscout-predict-") as tmp:
        tmp_project = Path(tmp)
        ingest_crops(Path(crops), tmp_project, ingest, metadata_csv=metadata_csv,
                     seed=project.config.seed)  # fmt: skip
        compute_morphology(tmp_project)
        ids, feats, _ = read_features(tmp_project)
        cells = read_cells(tmp_project)
    if feats.shape[1] != len(mean):
        raise DataError(
            f"{crops}: {feats.shape[1]} features per cell but the project has {len(mean)}; "
            "give crops with the project's channels"
        )
    proba = head.predict_proba(((feats - mean) / sd).astype(np.float32))
    names = np.asarray(head.classes_, dtype=object)
    scored = pd.DataFrame({"cell_id": ids.astype(str), "predicted": names[proba.argmax(axis=1)],
                           "confidence": proba.max(axis=1)})  # fmt: skip
    probs = pd.DataFrame(proba, columns=[f"p_{c}" for c in head.classes_])
    internal = ("cell_id", "source", "part", "row", "height", "width", "truth")
    meta = [c for c in cells.columns if c not in internal]
    left = cells[["cell_id", "source", *meta]].rename(columns={"source": "path"})
    return left.merge(pd.concat([scored, probs], axis=1), on="cell_id", how="inner")


def _fit_head(project: Project):  # -> (SklearnHead, mean (d,), sd (d,))
    """The head fit on the current labels over the standardised project features, and the
    project's raw feature mean and sd (constant columns: sd 1), as ``labeling.loop`` uses."""
    from datasets.features import read_features
    from labeling.head import HeadConfig, SklearnHead

    ids, raw, _ = read_features(project.path)
    mean = raw.mean(axis=0)
    sd = raw.std(axis=0)
    sd[sd == 0] = 1.0
    labels = project.store.current_labels(include_pseudo=False)
    position = {str(c): i for i, c in enumerate(ids)}
    known = [c for c in labels if c in position]
    if len({labels[c] for c in known}) < 2:
        raise NotTrainedError(
            f"{project.path.name}: predictions need labels of at least 2 classes; label a few "
            "cells of a second class first"
        )
    rows = np.array([position[c] for c in known], dtype=np.int64)
    x = ((raw[rows] - mean) / sd).astype(np.float32)
    head = SklearnHead(HeadConfig(seed=project.config.seed)).fit(x, [labels[c] for c in known])
    return head, mean, sd

"""Exports that are files rather than tables, and predictions on a new screen.

- :func:`crops_zip`: a ZIP of the labeled crops as stored (source bit depth), one folder per
  class, a TIFF per cell with its channel names, and an index.csv.
- :func:`model_checkpoint`: the newest published model version's ``checkpoint.pt``.
- :func:`predict_screen`: the current head applied to a new screen (crops or whole fields).

``phenoscout export --what crops|model`` and ``phenoscout predict`` call these, and the Export
page offers the first two as downloads. No torch here: the checkpoint is copied as bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import re
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from datasets.render import hex_to_rgb
from labeling.errors import DataError, NotTrainedError, ProjectError
from labeling.io.export import (
    csv_bytes,
    write_bytes_atomic,  # noqa: F401  (re-exported)
)

if TYPE_CHECKING:
    import pandas as pd

    from datasets.config import CropSource
    from datasets.parallel import Runner
    from labeling.project import FieldSource, Project

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*]+')
#: Names Windows reserves for devices, with or without an extension ("con", "COM1.tif").
_DEVICE = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\.|$)", re.IGNORECASE)
_BATCH = 256  # crops read per PixelStore.read_raw call
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


#: Longest file or folder name in the crops ZIP: a class folder and a cell's file together stay
#: well under Windows' 260-character path limit.
NAME_MAX = 80


def safe_name(name: str) -> str:
    """``name`` as a file or folder name on every OS: path separators, control and reserved
    characters become ``_``; leading dots and trailing dots/spaces go; a Windows device name
    (``con``, ``aux``, ``com1``, ...) gets a trailing ``_`` before any extension; a name longer
    than :data:`NAME_MAX` is cut and ends in a hash of the whole name (so cut names stay
    distinct); never empty."""
    out = _UNSAFE.sub("_", str(name)).strip().lstrip(".").rstrip(". ")
    out = _DEVICE.sub(lambda m: m.group(1) + "_" + m.group(2), out)
    if len(out) > NAME_MAX:
        digest = hashlib.sha1(str(name).encode("utf-8")).hexdigest()[:8]
        out = out[: NAME_MAX - 9].rstrip(". ") + "-" + digest
    return out or "_"


def class_folders(names) -> dict[str, str]:
    """A distinct, filesystem-safe folder name for each class name, in order of first appearance.

    Leading dots are escaped as ``_2e`` (so ``.`` and ``..`` become ``_2e`` and ``_2e_2e``, never
    a path step), the rest goes through :func:`safe_name`, and a folder already taken (also
    when only the case differs) gets ``-2``, ``-3``, ... appended.
    """
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for name in dict.fromkeys(str(n) for n in names):
        dots = len(name) - len(name.lstrip("."))
        base = safe_name("_2e" * dots + name[dots:])
        folder, n = base, 1
        while folder.lower() in taken:
            n += 1
            folder = f"{base}-{n}"
        taken.add(folder.lower())
        folders[name] = folder
    return folders


def crops_zip(project: Project) -> bytes:
    """A ZIP of every currently labeled cell's crop as stored, one folder per class.

    ``<class>/<cell id>.tif`` holds the cell's (C, S, S) crop in the source files' own depth
    (``PixelStore.read_raw``: no normalisation), channels first: an ImageJ hyperstack (axes
    CYX, channel names as slice labels, the project's channel colours as LUTs, composite mode)
    for uint8, uint16 and float32 data, else a plain TIFF whose JSON description names the
    axes and channels. ``index.csv`` lists ``cell_id, class, folder, file`` and each cell's
    label annotator, time, source, pseudo flag, path and metadata. Class and cell names are
    made filesystem-safe and distinct (:func:`class_folders`, :func:`safe_name`, numbered on a
    clash); pseudo-classes ("unsure", "bad segmentation") get folders too, as they are in the
    labels export.

    Raises:
        DataError: no cell is labeled yet.
    """
    index = _crops_index(project)
    names, colours = project.channel_names, project.channel_colours
    ids = index["cell_id"].tolist()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            crops = project.pixels.read_raw(chunk)
            for file, crop in zip(index["file"].iloc[start : start + _BATCH], crops):
                zf.writestr(file, _tiff_bytes(crop, names, colours))
        zf.writestr("index.csv", csv_bytes(index))
    return buffer.getvalue()


_IMAGE_SUFFIX = re.compile(r"\.(tiff?|png|jpe?g|bmp|gif|webp)$", re.IGNORECASE)


def _crops_index(project: Project) -> pd.DataFrame:
    """One row per labeled cell (pseudo-classes too): ``cell_id, class, folder, file``, then the
    label's annotator, time, source, round and the cell's path and metadata.

    Raises:
        DataError: no cell is labeled yet.
    """
    from labeling.io.export import cell_paths

    labels = project.store.current_labels_frame(include_pseudo=True)
    if labels.empty:
        raise DataError(f"{project.path.name}: no labeled cells to export; label some first")
    folders = class_folders(labels["label"])
    used: set[str] = set()
    files = []
    for cell_id, label in zip(labels["cell_id"], labels["label"]):
        name = _IMAGE_SUFFIX.sub("", safe_name(cell_id)) or safe_name(cell_id)  # no .tif.tif
        stem = f"{folders[label]}/{name}"
        file, n = f"{stem}.tif", 1
        while file.lower() in used:  # two ids made alike by safe_name (or by case)
            n += 1
            file = f"{stem}-{n}.tif"
        used.add(file.lower())
        files.append(file)
    labels.insert(2, "folder", labels["label"].map(folders))
    labels.insert(3, "file", files)
    labels = labels.rename(columns={"label": "class", "source": "label_source"})
    return labels.merge(cell_paths(project, project.cells()), on="cell_id", how="left")


def _tiff_bytes(crop: npt.NDArray, names: list[str], colours: list[str]) -> bytes:
    """(C, S, S) crop in its stored dtype -> TIFF bytes, channels named (see :func:`crops_zip`)."""
    import tifffile

    out = io.BytesIO()
    if crop.dtype in _IMAGEJ_DTYPES:
        ramp = np.linspace(0.0, 1.0, 256)
        luts = [np.round(np.outer(hex_to_rgb(c), ramp) * 255).astype(np.uint8) for c in colours]
        meta = {"axes": "CYX", "Labels": list(names), "LUTs": luts, "mode": "composite"}
        tifffile.imwrite(out, crop, imagej=True, metadata=meta)
    else:
        tifffile.imwrite(out, crop, photometric="minisblack",
                         metadata={"axes": "CYX", "channels": list(names)})  # fmt: skip
    return out.getvalue()


def model_checkpoint(project: Project) -> tuple[int, bytes]:
    """The newest published model version and its ``checkpoint.pt`` bytes.

    Raises:
        ProjectError: no model version has been published yet.
    """
    from models.folder import latest_version

    info = latest_version(project.path)
    if info is None or not (info.path / "checkpoint.pt").exists():
        raise ProjectError(
            f"{project.path}: no trained model yet: the backbone trains in the background "
            f"while the app is open (on a GPU after each batch), or run `phenoscout train "
            f"{project.path}`"
        )
    path = info.path / "checkpoint.pt"
    return info.version, path.read_bytes()


def predict_screen(
    project: Project,
    screen: Path | CropSource | FieldSource,
    runner: Runner | None = None,
    allow_other_kind: bool = False,
) -> pd.DataFrame:
    """The current head (fit on ``project``'s labels) applied to a new screen.

    The crops (or the objects of the fields) are ingested into a temporary project with
    ``project``'s ingest config, their pixels scaled with ``project``'s normalisation ranges
    when it normalises over the whole dataset (when it normalises per plate, each new plate
    gets its own, as ``add`` gives them), their morphology features measured with its channel
    profile and standardised with its feature mean and sd (never the new screen's own: a
    screen of mostly one phenotype, a folder of G2 cells, would be stretched to its own range
    and lose its intensity level), then scored.

    Args:
        project: the labeled project.
        screen: the new screen (the project's channels): a folder of crops, or a
            :class:`~datasets.config.CropSource` (its metadata CSV, a pattern grouping one file
            per channel), or whole fields (segmented, or with masks, as
            :func:`labeling.project.add_fields` takes them).
        runner: where reading and features run (:mod:`datasets.parallel`); this process when
            None. On an existing cluster the temporary project lies in ``PROJECT/cache/``,
            which its workers see.
        allow_other_kind: score crops of another bit depth or layout than the project's
            (:func:`labeling.project.other_kind`) instead of refusing them: their intensities
            are on another scale, so their predictions are rarely meaningful.

    Returns:
        One row per new cell: ``cell_id, path``, metadata, ``predicted``, ``confidence``,
        ``p_<class>``.

    Raises:
        NotTrainedError: fewer than two classes have labels.
        DataError: unreadable crops, crops of another bit depth or layout (unless
            ``allow_other_kind``), or features that do not match the project's.
    """
    import pandas as pd

    from datasets.cells import read_cells
    from datasets.config import CropSource
    from datasets.crops.ingest import ingest_crops
    from datasets.features import compute_morphology, read_features
    from datasets.pixels.ranges import adopt_ranges, dataset_ranges
    from labeling.project import FieldSource, IngestRun, field_ingest, other_kind

    head, mean, sd = _fit_head(project)
    ingest = dataclasses.replace(project.config.ingest, channel_names=tuple(project.channel_names))
    ranges = dataset_ranges(project.path)  # None: the project normalises per plate
    if ranges is not None:
        ingest = dataclasses.replace(ingest, normalise_by="dataset")
    shared = None
    if runner is not None and runner.config.scheduler:
        shared = project.path / "cache"
        shared.mkdir(parents=True, exist_ok=True)
    if isinstance(screen, FieldSource):
        first = screen.fields[0].channel_files[0] if screen.fields else None
        where = f"{Path(first).parent} (e.g. {Path(first).name})" if first else "the fields"
    else:
        where = str(CropSource.of(screen).folder)
    with tempfile.TemporaryDirectory(prefix="phenoscout-predict-", dir=shared) as tmp:
        tmp_project = Path(tmp)
        try:
            if isinstance(screen, FieldSource):
                run = IngestRun(runner=runner)
                report = field_ingest(screen, ingest, project.config.seed, run)(tmp_project)
            else:
                source = CropSource.of(screen)
                report = ingest_crops(
                    source, tmp_project, ingest, seed=project.config.seed, runner=runner
                )
        except DataError as e:  # name the screen when the message does not
            if where.split(" (e.g.")[0] in str(e):
                raise
            raise DataError(f"{where}: {e}") from e
        other = other_kind(project, report)
        if other and not allow_other_kind:
            raise DataError(
                f"{where}: these images differ from the project's: {'; '.join(other)}; their "
                "intensities are on another scale, which the model would read as a phenotype. "
                "Save them as the project's were, or pass --allow-other-kind to predict anyway"
            )
        if ranges is not None:
            adopt_ranges(tmp_project, ranges)
        if len(project.channel_names) == 3 and not allow_other_kind:  # RGB stain or 3 dyes?
            _check_same_modality(project.path, tmp_project, where)
        compute_morphology(tmp_project, modality=ingest.modality, runner=runner, like=project.path)
        ids, feats, _ = read_features(tmp_project)
        cells = read_cells(tmp_project)
    if feats.shape[1] != len(mean):
        raise DataError(
            f"{where}: {feats.shape[1]} features per cell but the project has {len(mean)}; "
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


def _check_same_modality(project_dir: Path, screen_dir: Path, where: str) -> None:
    """Refuse a new screen whose crops read as another modality than the project's (stained
    RGB against three fluorescence channels, or the reverse), both detected from the pixels.

    Raises:
        DataError: they differ; the message names ``where`` and --allow-other-kind.
    """
    from datasets.features import sampled_modality

    words = {"stained_rgb": "stained brightfield RGB", "fluorescence": "fluorescence channels"}
    new, own = sampled_modality(screen_dir), sampled_modality(project_dir)
    if new != own:
        raise DataError(
            f"{where}: these images look like {words[new]}, the project's like {words[own]} "
            "(detected from the pixels); the model would read that as a phenotype. Give "
            "images of the project's kind, or pass --allow-other-kind to predict anyway"
        )


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

"""Per-cell feature tables computed once per ingest part and cached in ``features/``.

Morphology features are computed in batches straight from the stored pixels and streamed to
one Parquet file per ingest part (``features/morphology-vV-part-NNNN.parquet``, V the feature
version), so adding a plate computes only the new cells and memory does not grow with the screen.

How each channel is measured (its polarity, and whether its mask is trusted) is decided once per
dataset from a sample of cells and remembered in ``features/channels.json``, so every part of a
screen gets the same columns.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from datasets.cells import read_cells
from datasets.errors import DataError, ProjectDamagedError
from datasets.morphology import (
    FEATURES_VERSION,
    MASK_QUALITY_MIN,
    channel_polarities,
    mask_quality,
    morphology_features,
)
from datasets.pixels.store import PixelStore
from datasets.progress import Progress

if TYPE_CHECKING:
    from datasets.parallel import Runner

logger = logging.getLogger(__name__)

_CHANNELS_FILE = "channels.json"
_SAMPLE = 500  # cells sampled to profile the channels
_RECOMPUTE_FIX = "delete it and PhenoScout computes it again"  # features are derived data


@dataclass(frozen=True)
class ChannelProfile:
    """How each channel of a dataset is measured; decided once per dataset.

    Attributes:
        polarities: per channel "bright" (cells brighter than the background) or "dark".
        quality: per channel the median Otsu separability of its crops (0..1).
        masked: per channel whether it is segmented (shape + mask features) or measured by
            whole-crop statistics only.
    """

    polarities: tuple[str, ...]
    quality: tuple[float, ...]
    masked: tuple[bool, ...]
    modality: str = "fluorescence"  # or "stained_rgb": stain colour and texture features too

    @property
    def polarity(self) -> str:
        """The overall polarity: "dark" when most channels are dark."""
        dark = sum(p == "dark" for p in self.polarities)
        return "dark" if dark > len(self.polarities) - dark else "bright"


def profile_channels(crops: npt.NDArray, min_quality: float = MASK_QUALITY_MIN) -> ChannelProfile:
    """Decide, from a sample of crops, each channel's polarity and whether to trust its mask.

    A channel's mask is trusted when its quality reaches ``min_quality``; when none does, the
    best channel's is, so that some shape is always measured.

    Args:
        crops: (n, C, S, S) float32 in [0, 1]; a random sample of the dataset's cells.
        min_quality: see :data:`datasets.morphology.MASK_QUALITY_MIN`.

    Returns:
        The profile.

    Raises:
        DataError: when ``crops`` is not (n, C, S, S) or is empty.
    """
    from datasets.stain import detect_modality

    polarities = channel_polarities(crops)
    quality = mask_quality(crops, polarities)
    modality = detect_modality(crops)
    return ChannelProfile(
        polarities,
        tuple(round(float(q), 4) for q in quality),
        _segmented(quality, modality, min_quality),
        modality,
    )


def _segmented(
    quality: npt.NDArray, modality: str, min_quality: float = MASK_QUALITY_MIN
) -> tuple[bool, ...]:
    """Which channels to segment: those whose mask quality reaches ``min_quality``, else the
    best one. A stained RGB crop is one colour picture of one cell, so only its best channel is
    segmented (the other two get whole-crop statistics; the stain features carry the colour):
    three masks of the same cell cost three times as much and add nothing."""
    quality = np.asarray(quality, dtype=np.float64)
    masked = quality >= min_quality
    if modality == "stained_rgb" or not masked.any():
        masked = np.arange(len(quality)) == int(np.argmax(quality))
    return tuple(bool(m) for m in masked)


def _feature_dir(project_dir: Path) -> Path:
    return Path(project_dir) / "features"


def project_channels(
    project_dir: Path, store: PixelStore, seed: int = 0, modality: str = "auto"
) -> ChannelProfile:
    """The dataset's :class:`ChannelProfile`, detected once on a random sample and remembered;
    ``modality`` other than "auto" overrides the detected one (``project.toml``)."""
    path = _feature_dir(project_dir) / _CHANNELS_FILE
    if path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ProjectDamagedError(path, err, _RECOMPUTE_FIX) from err
        if isinstance(saved, dict) and saved.get("version") == FEATURES_VERSION:
            found = ChannelProfile(
                tuple(saved["polarities"]),
                tuple(saved["quality"]),
                tuple(saved["masked"]),
                saved.get("modality", "fluorescence"),
            )
            if modality in ("auto", found.modality):
                return found
    cells = read_cells(project_dir, columns=["cell_id"])
    rng = np.random.default_rng(seed)
    n_sample = min(len(cells), _SAMPLE)
    ids = cells["cell_id"].to_numpy()[np.sort(rng.choice(len(cells), n_sample, replace=False))]
    profile = profile_channels(store.read(list(ids)))
    if modality != "auto":
        masked = _segmented(np.asarray(profile.quality), modality)
        profile = replace(profile, modality=modality, masked=masked)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": FEATURES_VERSION, **asdict(profile)}))
    logger.info(
        "channels: polarity %s, mask quality %s, segmented %s",
        profile.polarities,
        profile.quality,
        profile.masked,
    )
    return profile


def sampled_modality(project_dir: Path, seed: int = 0) -> str:
    """The modality :func:`datasets.stain.detect_modality` reads from a seeded sample of a
    project's crops as stored now (whatever ``project.toml`` chose): a way to tell whether two
    screens are of one kind."""
    from datasets.stain import detect_modality

    ids = read_cells(project_dir, columns=["cell_id"])["cell_id"].to_numpy()
    pick = np.random.default_rng(seed).choice(len(ids), min(len(ids), _SAMPLE), replace=False)
    return detect_modality(PixelStore(project_dir).read(list(ids[np.sort(pick)])))


def saved_modality(project_dir: Path) -> str:
    """The modality the features of a project were computed for ("fluorescence" when none)."""
    path = _feature_dir(project_dir) / _CHANNELS_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return "fluorescence"
    return str(saved.get("modality", "fluorescence")) if isinstance(saved, dict) else "fluorescence"


def compute_morphology(
    project_dir: Path,
    progress: Progress | None = None,
    batch_size: int = 512,
    runner: Runner | None = None,
    modality: str = "auto",
    like: Path | None = None,
) -> int:
    """Compute morphology features for every part that has none yet.

    The cells of those parts are cut into chunks of :data:`CHUNK_CELLS`; each chunk is one
    task (:func:`datasets.parallel.Runner`) that writes its own Parquet file under a temporary
    name and renames it into place, and each part's chunks are then joined, in order, into the
    part's feature file (so a task that is run again after its worker died changes nothing).

    Args:
        project_dir: the project folder (with cells.parquet and pixels).
        progress: called as ``progress(done, total)`` in cells.
        batch_size: cells measured at a time inside a task.
        runner: where the chunks run; in this process when None.
        modality: "auto" (detected, or as saved) or the one project.toml names.
        like: measure with this project's channel profile (polarity, which channels are
            segmented, modality) rather than one detected on ``project_dir``'s own crops, so
            that the features are the same columns on the same scale (``predict`` on a new
            screen: a screen of mostly one phenotype, or of dim cells, would otherwise choose
            other channels to segment and give other columns).

    Returns:
        The number of cells whose features were computed.

    Raises:
        DataError: ``like`` has no channel profile, or one for another number of channels.
    """
    from datasets.parallel import Runner

    project_dir = Path(project_dir)
    store = PixelStore(project_dir)
    if like is not None:
        _copy_profile(Path(like), project_dir, store.n_channels)
    profile = project_channels(project_dir, store, modality=modality)
    del store
    cells = read_cells(project_dir, columns=["cell_id", "part"])
    todo = [
        (int(part), grp["cell_id"].tolist())
        for part, grp in cells.groupby("part", sort=True)
        if not _part_path(project_dir, int(part)).exists()
    ]
    del cells
    chunks: list[_Chunk] = []
    for part, ids in todo:
        folder = _chunk_dir(project_dir, part)
        shutil.rmtree(folder, ignore_errors=True)  # left by an earlier, interrupted run
        folder.mkdir(parents=True)
        for k, start in enumerate(range(0, len(ids), CHUNK_CELLS)):
            chunks.append(_Chunk(str(project_dir), part, k, ids[start : start + CHUNK_CELLS],
                                 profile.polarities, profile.masked, profile.modality,
                                 batch_size))  # fmt: skip
    total = sum(len(c.cell_ids) for c in chunks)
    own = runner is None
    runner = runner or Runner()
    try:
        runner.map(measure_chunk, chunks, weights=[len(c.cell_ids) for c in chunks],
                   progress=progress)  # fmt: skip
    finally:
        if own:
            runner.close()
        _STORES.clear()
    for part, _ in todo:
        _join_chunks(project_dir, part)
    return total


def _copy_profile(source: Path, project_dir: Path, n_channels: int) -> None:
    """Give ``project_dir`` (of ``n_channels``) the channel profile ``source`` measured its
    features with."""
    path = _feature_dir(source) / _CHANNELS_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: no channel profile to measure with ({err})") from err
    if len(saved.get("polarities", ())) != n_channels:
        raise DataError(
            f"{project_dir}: {n_channels} channel(s) but {source} was measured on "
            f"{len(saved.get('polarities', ()))}; give crops with the project's channels"
        )
    target = _feature_dir(project_dir) / _CHANNELS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(saved))


#: Cells per feature task: a few seconds of work, small enough that a lost worker costs little.
CHUNK_CELLS = 8192
_STORES: dict[tuple[str, int, int], PixelStore] = {}  # per process: the project's pixel store


@dataclass(frozen=True)
class _Chunk:
    """One feature task: cells of one part, measured with the dataset's channel profile."""

    project_dir: str
    part: int
    index: int  # chunk number within the part
    cell_ids: list[str]
    polarities: tuple[str, ...]
    masked: tuple[bool, ...]
    modality: str
    batch_size: int


def _chunk_dir(project_dir: Path, part: int) -> Path:
    return _feature_dir(project_dir) / f".chunks-part-{part:04d}"


def _pixel_store(project_dir: str) -> PixelStore:
    """The project's pixel store, opened once per process (and again when cells change)."""
    st = (Path(project_dir) / "cells.parquet").stat()
    key = (project_dir, st.st_mtime_ns, st.st_size)
    if key not in _STORES:
        _STORES.clear()
        _STORES[key] = PixelStore(Path(project_dir))
    return _STORES[key]


def measure_chunk(chunk: _Chunk) -> int:
    """Task: the morphology features of one chunk, written to its own Parquet file.

    Returns:
        The number of cells measured.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = _pixel_store(chunk.project_dir)
    out = _chunk_dir(Path(chunk.project_dir), chunk.part) / f"chunk-{chunk.index:05d}.parquet"
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    writer = None
    try:
        for start in range(0, len(chunk.cell_ids), chunk.batch_size):
            ids = chunk.cell_ids[start : start + chunk.batch_size]
            feats, names = morphology_features(
                store.read(ids), chunk.polarities, chunk.masked, chunk.modality
            )
            table = pa.table({"cell_id": ids, **{n: feats[:, j] for j, n in enumerate(names)}})
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(chunk.cell_ids)


def _join_chunks(project_dir: Path, part: int) -> None:
    """Join a part's chunk files, in order, into its feature file (atomically)."""
    import pyarrow.parquet as pq

    folder = _chunk_dir(project_dir, part)
    out = _part_path(project_dir, part)
    tmp = out.with_name(out.name + ".tmp")
    writer = None
    for path in sorted(folder.glob("chunk-*.parquet")):
        table = pq.read_table(path)
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
        os.replace(tmp, out)
    shutil.rmtree(folder, ignore_errors=True)


def _part_path(project_dir: Path, part: int) -> Path:
    name = f"morphology-v{FEATURES_VERSION}-part-{part:04d}.parquet"
    return _feature_dir(project_dir) / name


def read_features(
    project_dir: Path,
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float32], list[str]]:
    """Load the morphology features of every cell, in cell-table order.

    Parts without features of the current :data:`~datasets.morphology.FEATURES_VERSION` (a
    project made by an older version) are computed first.

    Returns:
        ``(cell_ids (n,), features (n, d) float32, feature names)``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    project_dir = Path(project_dir)
    cells = read_cells(project_dir, columns=["cell_id", "part"])
    parts = [_part_path(project_dir, int(p)) for p in sorted(cells["part"].unique())]
    if not all(path.exists() for path in parts):
        logger.warning(
            "%s: morphology features v%d missing for some cells; computing them now",
            project_dir,
            FEATURES_VERSION,
        )
        compute_morphology(project_dir)
    blocks, names = [], []
    for path in parts:
        try:
            table = pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as err:  # truncated or overwritten
            raise ProjectDamagedError(path, err, _RECOMPUTE_FIX) from err
        names = [c for c in table.column_names if c != "cell_id"]
        blocks.append(table)
    ids = np.concatenate([b.column("cell_id").to_numpy(zero_copy_only=False) for b in blocks])
    feats = np.concatenate(
        [np.column_stack([b.column(n).to_numpy() for n in names]) for b in blocks]
    ).astype(np.float32)
    return ids.astype(str), feats, names

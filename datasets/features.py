"""Per-cell feature tables computed once per ingest part and cached in ``features/``.

Morphology features are computed in batches straight from the stored pixels and streamed to
one Parquet file per ingest part (``features/morphology-part-NNNN.parquet``), so adding a plate
computes only the new cells and memory does not grow with the screen.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from datasets.cells import read_cells
from datasets.errors import DataError
from datasets.morphology import detect_polarity, morphology_features
from datasets.pixels import PixelStore

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
_POLARITY_FILE = "polarity.json"


def _feature_dir(project_dir: Path) -> Path:
    return Path(project_dir) / "features"


def project_polarity(project_dir: Path, store: PixelStore, seed: int = 0) -> str:
    """The dataset's mask polarity ("bright" or "dark"), detected once and remembered."""
    path = _feature_dir(project_dir) / _POLARITY_FILE
    if path.exists():
        return str(json.loads(path.read_text())["polarity"])
    cells = read_cells(project_dir, columns=["cell_id"])
    rng = np.random.default_rng(seed)
    n_sample = min(len(cells), 500)
    ids = cells["cell_id"].to_numpy()[np.sort(rng.choice(len(cells), n_sample, replace=False))]
    polarity = detect_polarity(store.read(list(ids)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"polarity": polarity}))
    logger.info("mask polarity detected: %s", polarity)
    return polarity


def compute_morphology(
    project_dir: Path, progress: Progress | None = None, batch_size: int = 512
) -> int:
    """Compute morphology features for every part that has none yet.

    Args:
        project_dir: the project folder (with cells.parquet and pixels).
        progress: called as ``progress(done, total)`` in cells.
        batch_size: cells per batch.

    Returns:
        The number of cells whose features were computed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    project_dir = Path(project_dir)
    store = PixelStore(project_dir)
    polarity = project_polarity(project_dir, store)
    cells = read_cells(project_dir, columns=["cell_id", "part"])
    todo = [
        (part, grp["cell_id"].tolist())
        for part, grp in cells.groupby("part", sort=True)
        if not _part_path(project_dir, int(part)).exists()
    ]
    total, done = sum(len(ids) for _, ids in todo), 0
    for part, ids in todo:
        out = _part_path(project_dir, int(part))
        tmp = out.with_name(out.name + ".tmp")
        writer = None
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            feats, names = morphology_features(store.read(chunk), polarity=polarity)
            table = pa.table(
                {"cell_id": chunk, **{n: feats[:, j] for j, n in enumerate(names)}}
            )
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            done += len(chunk)
            if progress:
                progress(done, total)
        if writer is not None:
            writer.close()
            os.replace(tmp, out)
    return total


def _part_path(project_dir: Path, part: int) -> Path:
    return _feature_dir(project_dir) / f"morphology-part-{part:04d}.parquet"


def read_features(
    project_dir: Path,
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float32], list[str]]:
    """Load the morphology features of every cell, in cell-table order.

    Returns:
        ``(cell_ids (n,), features (n, d) float32, feature names)``.

    Raises:
        DataError: when features have not been computed for some part.
    """
    import pyarrow.parquet as pq

    project_dir = Path(project_dir)
    cells = read_cells(project_dir, columns=["cell_id", "part"])
    blocks, names = [], []
    for part in sorted(cells["part"].unique()):
        path = _part_path(project_dir, int(part))
        if not path.exists():
            raise DataError(f"{path}: features missing; run `phenoscout features {project_dir}`")
        table = pq.read_table(path)
        names = [c for c in table.column_names if c != "cell_id"]
        blocks.append(table)
    ids = np.concatenate([b.column("cell_id").to_numpy(zero_copy_only=False) for b in blocks])
    feats = np.concatenate(
        [np.column_stack([b.column(n).to_numpy() for n in names]) for b in blocks]
    ).astype(np.float32)
    return ids.astype(str), feats, names

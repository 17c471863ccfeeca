"""Export label sets and cell tables as CSV or Parquet, written atomically."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from labeling.config import config_to_dict
from labeling.errors import ConfigError, PhenoScoutError

if TYPE_CHECKING:
    import pandas as pd

    from labeling.project import Project

logger = logging.getLogger(__name__)

EXPORT_KINDS = ("labels", "cells")
#: Cell-table columns that are PhenoScout's own bookkeeping, not user metadata.
_INTERNAL = ("cell_id", "source", "part", "row", "height", "width", "truth")


def metadata_columns(cells: pd.DataFrame) -> list[str]:
    """The user's metadata columns of a cell table (plate, well, site, ...)."""
    return [c for c in cells.columns if c not in _INTERNAL]


def labels_table(project: Project) -> pd.DataFrame:
    """One row per labeled cell: ``cell_id, label, annotator, labeled_at, label_source, round_id``,
    then ``path`` and the cell's metadata columns."""
    labels = project.store.current_labels_frame().rename(columns={"source": "label_source"})
    cells = project.cells()
    meta = cells[["cell_id", "source", *metadata_columns(cells)]].rename(
        columns={"source": "path"}
    )
    return labels.merge(meta, on="cell_id", how="left")


def cells_table(project: Project) -> pd.DataFrame:
    """One row per cell: ``cell_id, path``, metadata, and ``truth`` when ground truth exists."""
    cells = project.cells()
    cols = ["cell_id", "source", *metadata_columns(cells)]
    if "truth" in cells.columns and cells["truth"].notna().any():
        cols.append("truth")
    return cells[cols].rename(columns={"source": "path"})


def write_table(df: pd.DataFrame, out: Path, meta: dict | None = None) -> Path:
    """Write ``df`` to ``out`` (.csv or .parquet by suffix) via a temporary file and a rename.

    Args:
        df: the table.
        out: destination; its suffix picks the format.
        meta: JSON-able metadata stored in the Parquet schema (ignored for CSV).

    Raises:
        ConfigError: for an unsupported suffix.
        PhenoScoutError: when the file cannot be written (read-only folder, full disk).
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"{out}: unsupported export format {suffix!r}; use .csv or .parquet")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if meta:
                extra = {b"phenoscout": json.dumps(meta).encode()}
                table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
            pq.write_table(table, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PhenoScoutError(f"{out}: cannot write export ({exc.strerror or exc})") from exc
    return out


def export_table(project: Project, out: Path, what: str = "labels") -> int:
    """Export ``what`` (``labels`` or ``cells``) of ``project`` to ``out``.

    Returns:
        The number of rows written.

    Raises:
        ConfigError: for an unknown ``what`` or an unsupported suffix.
    """
    if what not in EXPORT_KINDS:
        raise ConfigError(f"unknown export kind {what!r}; allowed: {', '.join(EXPORT_KINDS)}")
    df = labels_table(project) if what == "labels" else cells_table(project)
    write_table(df, out, meta={"what": what, "config": config_to_dict(project.config)})
    logger.info("exported %d %s rows to %s", len(df), what, out)
    return len(df)

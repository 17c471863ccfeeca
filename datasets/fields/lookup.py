"""Look up a project's fields and the cells cut from them (fields.parquet, cells.parquet and
the pixel manifest), for drawing them (:mod:`datasets.fields.render`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datasets.cells import CELLS_FILE, read_manifest
from datasets.errors import DataError
from datasets.fields.store import FIELDS_FILE, read_field_mask, read_fields
from datasets.pixels.ranges import DATASET_GROUP

_CELL_COLUMNS = ["cell_id", "field", "object", "centroid_y", "centroid_x", "bbox_min_row",
                 "bbox_min_col", "bbox_max_row", "bbox_max_col"]  # fmt: skip


def field_ranges(project_dir: Path, key: str) -> npt.NDArray[np.float64] | None:
    """The (C, 2) ranges the crops of field ``key`` were normalised with (its part's ranges for
    its plate, or for the whole part); None when the manifest has none for it.

    Raises:
        DataError: the project has no fields table or no field ``key``.
    """
    row = field_record(project_dir, key)
    parts = {int(p["part"]): p for p in (read_manifest(project_dir) or {}).get("parts", [])}
    part = parts.get(int(row["part"]))
    if part is None:
        return None
    column = part.get("group_column")
    group = str(row[column]) if column and column in row.index else DATASET_GROUP
    ranges = part.get("ranges", {}).get(group)
    if ranges is None:
        return None
    kept = part.get("channels_kept") or list(range(len(ranges)))
    full = np.zeros((int(part.get("source_channels", len(ranges))), 2))
    full[:, 1] = 1.0
    full[kept] = np.asarray(ranges, dtype=np.float64)
    return full


def field_record(project_dir: Path, key: str) -> pd.Series:
    """Field ``key``'s row of fields.parquet (:func:`datasets.fields.store.read_fields`).

    Raises:
        DataError: the project has no fields table or no field ``key``.
    """
    fields = read_fields(project_dir)
    hit = fields[fields["key"] == key]
    if hit.empty:
        raise DataError(f"{project_dir}: no field {key!r}; see fields.parquet for the keys")
    return hit.iloc[0]


def cell_row(project_dir: Path, cell_id: str) -> dict[str, Any]:
    """One cell's field, object, centroid and bounding box from the cell table.

    Raises:
        DataError: unknown cell, or a project whose cells do not come from fields.
    """
    path = Path(project_dir) / CELLS_FILE
    known = set(read_cells_schema(path))
    if not set(_CELL_COLUMNS) <= known:
        raise DataError(
            f"{path}: the cells do not come from whole fields (no field, object or bbox "
            "columns); only projects made from fields show a cell in its field"
        )
    table = pd.read_parquet(path, columns=_CELL_COLUMNS, filters=[("cell_id", "==", cell_id)])
    if table.empty:
        raise DataError(f"{path}: no cell {cell_id!r}")
    return table.iloc[0].to_dict()


def has_fields(project_dir: Path) -> bool:
    """Whether the project was made from whole fields (it has a fields table)."""
    return (Path(project_dir) / FIELDS_FILE).is_file()


def field_cells(project_dir: Path, key: str, columns: Sequence[str] = ()) -> pd.DataFrame:
    """The cells of field ``key``: ``cell_id``, ``object`` and ``columns`` of the cell table,
    in stored order (objects touching the border are not cells unless kept at ingest).

    Raises:
        DataError: the cells do not come from fields, or a column does not exist.
    """
    path = Path(project_dir) / CELLS_FILE
    wanted = list(dict.fromkeys(["cell_id", "object", *columns]))
    missing = [c for c in ["field", *wanted] if c not in read_cells_schema(path)]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; the cells do not come from fields")
    return pd.read_parquet(path, columns=wanted, filters=[("field", "==", key)])


def read_cells_schema(path: Path) -> list[str]:
    """Column names of a cell table (parquet), read from its footer only.

    Raises:
        DataError: no such file, or not a parquet file.
    """
    try:
        return list(pq.read_schema(path).names)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataError(
            f"{path}: cannot read the cell table ({err}); re-create the project"
        ) from err


def field_labels(project_dir: Path, key: str) -> npt.NDArray | None:
    """The field's label image, or None when its objects were given as centres."""
    if not field_record(project_dir, key)["mask"]:
        return None
    return read_field_mask(project_dir, key)

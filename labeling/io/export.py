"""Export label sets, cell tables, predictions and per-well counts as CSV or Parquet: as bytes
(the app's downloads) or written atomically to a file (``phenoscout export``)."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from datasets.files import replace_path
from labeling.config import config_to_dict
from labeling.errors import ConfigError, PhenoScoutError
from labeling.predictions import predictions_table, well_fractions

if TYPE_CHECKING:
    import pandas as pd

    from labeling.project import Project

logger = logging.getLogger(__name__)

EXPORT_KINDS = ("labels", "cells", "predictions", "wells")
FORMATS = (".csv", ".parquet")
__all__ = [
    "EXPORT_KINDS",
    "FORMATS",
    "cells_table",
    "check_export_target",
    "csv_bytes",
    "csv_safe",
    "export_frame",
    "export_meta",
    "export_table",
    "labels_table",
    "metadata_columns",
    "neutralise_formula",
    "predictions_table",
    "table_bytes",
    "unquote_formula",
    "well_fractions",
    "write_bytes_atomic",
    "write_file_atomic",
    "write_table",
]
#: Cell-table columns that are PhenoScout's own bookkeeping, not user metadata.
_INTERNAL = ("cell_id", "source", "part", "row", "height", "width", "truth")
#: A project folder's own files and folders (and their -wal, .bak, ... siblings): an export
#: never writes over them. Exports may go anywhere else, PROJECT/exports/ included.
_PROJECT_FILES = ("project.toml", "cells.parquet", "labels.db")
_PROJECT_FOLDERS = ("pixels", "features", "models", "cache")
_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


#: A text cell a spreadsheet would run as a formula starts with one of these (OWASP CSV
#: injection); a leading ``'`` makes it plain text. Leading quotes already there are counted in,
#: so :func:`unquote_formula` gives back exactly what was written.
_FORMULA = re.compile(r"^'*[=+\-@\t\r]")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def neutralise_formula(value: object) -> object:
    """``value`` with a ``'`` in front when it is text a spreadsheet would run as a formula.

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (after any ``'``)
    gets a leading ``'``; a number written as text (``-1.5``, a negative dose) and every
    non-text value stay as they are.
    """
    if isinstance(value, str) and _FORMULA.match(value) and not _NUMBER.match(value):
        return "'" + value
    return value


def unquote_formula(value: str) -> str:
    """Undo :func:`neutralise_formula` on a cell read back from an exported CSV."""
    if isinstance(value, str) and _FORMULA.match(value) and value.startswith("'"):
        return value[1:]
    return value


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells, column names and index values cannot run as
    spreadsheet formulas (:func:`neutralise_formula`); numeric columns are left alone."""
    import pandas as pd

    out = df.copy()
    for col in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[col]) or pd.api.types.is_bool_dtype(out[col])):
            out[col] = out[col].map(neutralise_formula, na_action="ignore")
    out.columns = [neutralise_formula(c) for c in out.columns]
    if not pd.api.types.is_numeric_dtype(out.index):
        out.index = [neutralise_formula(i) for i in out.index]
    return out


def csv_bytes(df: pd.DataFrame, index: bool = False) -> bytes:
    """``df`` as UTF-8 CSV bytes with formulas neutralised (:func:`csv_safe`): the one way
    PhenoScout writes a CSV for users (exports, the crops ZIP's index.csv, reports)."""
    return csv_safe(df).to_csv(index=index).encode("utf-8")


def check_export_target(out: Path) -> None:
    """Refuse an export destination that is one of a PhenoScout project's own files.

    ``out`` is resolved first (``~``, ``..`` and symlinks), so a link into a project is caught.

    Raises:
        ConfigError: ``out`` is, or lies inside, a project's project.toml, cells.parquet,
            labels.db (with its -wal, -shm and backups), pixels/, features/, models/ or cache/.
    """
    target = Path(out).expanduser().resolve()
    for folder in target.parents:
        if not (folder / "project.toml").is_file():
            continue
        first = target.relative_to(folder).parts[0]
        if first in _PROJECT_FOLDERS or any(
            first == own or first.startswith((own + ".", own + "-")) for own in _PROJECT_FILES
        ):
            raise ConfigError(
                f"{out}: is part of the PhenoScout project {folder} ({first}); writing there "
                "would damage the project - choose another file, e.g. in "
                f"{folder / 'exports'}"
            )


def _cannot_write(out: Path, exc: OSError) -> PhenoScoutError:
    if exc.errno in _FULL:
        why = "disk full: free some disk space"
    elif exc.errno in _DENIED:
        why = "read-only or not yours: choose a folder you can write to"
    elif isinstance(exc, IsADirectoryError):
        why = "that is a folder: give a file name"
    else:
        why = "check the folder"
    return PhenoScoutError(
        f"{out}: cannot write ({exc.strerror or exc}); {why} and try again - nothing was "
        "written, a file already there is unchanged"
    )


def write_bytes_atomic(data: bytes, out: Path) -> Path:
    """Write ``data`` to ``out`` through a new temporary file beside it (created exclusively,
    so a planted link is never followed), flushed to disk, then renamed over ``out``: readers
    see the old file or the whole new one, and a failed write leaves no partial file.

    Raises:
        ConfigError: ``out`` is one of a project's own files (:func:`check_export_target`).
        PhenoScoutError: the file cannot be written (read-only folder, disk full); one line.
    """

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return write_file_atomic(out, write)


def write_file_atomic(out: Path, write: Callable[[Path], None]) -> Path:
    """Like :func:`write_bytes_atomic` for writers that need a path (h5py, say): ``write(tmp)``
    fills a new temporary file beside ``out`` (created exclusively, so a planted link is never
    followed), which is flushed to disk and renamed over ``out``.

    Raises:
        ConfigError: ``out`` is one of a project's own files (:func:`check_export_target`).
        PhenoScoutError: the file cannot be written (read-only folder, disk full); one line.
    """
    out = Path(out)
    check_export_target(out)
    try:
        replace_path(out, write, mode=0o644, sync=True)
    except OSError as exc:
        raise _cannot_write(out, exc) from exc
    return out


def metadata_columns(cells: pd.DataFrame) -> list[str]:
    """The user's metadata columns of a cell table (plate, well, site, ...)."""
    return [c for c in cells.columns if c not in _INTERNAL]


def cell_paths(project: Project, cells: pd.DataFrame) -> pd.DataFrame:
    """``cell_id, path`` (the crop or field it came from, relative to its folder), ``folder``
    (that folder, when the project was made from more than one: the same relative path can be in
    two plates' folders) and the metadata columns of ``cells``."""
    from datasets.cells import read_parts

    out = cells[["cell_id", "source", *metadata_columns(cells)]].rename(columns={"source": "path"})
    roots = {int(p["part"]): str(p.get("root", "")) for p in read_parts(project.path)}
    if len(set(roots.values())) > 1 and "part" in cells.columns:
        out.insert(2, "folder", cells["part"].map(roots).to_numpy())
    return out


def labels_table(project: Project) -> pd.DataFrame:
    """One row per labeled cell: ``cell_id, label, annotator, labeled_at, round_id,
    label_source, pseudo, duration_ms`` (the time the label took), then ``path`` and the cell's
    metadata columns.

    "unsure" and "bad segmentation" labels are included, as in the crops ZIP, with ``pseudo``
    True: they are labels a user gave, never training classes."""
    labels = project.store.current_labels_frame(include_pseudo=True)
    labels = labels.rename(columns={"source": "label_source"})
    return labels.merge(cell_paths(project, project.cells()), on="cell_id", how="left")


def cells_table(project: Project) -> pd.DataFrame:
    """One row per cell: ``cell_id, path`` (``folder`` too when the project has several),
    metadata, and ``truth`` when ground truth exists."""
    cells = project.cells()
    out = cell_paths(project, cells)
    if "truth" in cells.columns and cells["truth"].notna().any():
        out["truth"] = cells["truth"].to_numpy()
    return out


def table_bytes(df: pd.DataFrame, fmt: str, meta: dict | None = None) -> bytes:
    """``df`` as the bytes of a CSV or Parquet file (no index).

    CSV text cells that a spreadsheet would run as formulas get a leading ``'``
    (:func:`csv_bytes`); Parquet keeps every value as it is.

    Args:
        df: the table.
        fmt: ``".csv"`` or ``".parquet"`` (a file suffix; case and the dot do not matter).
        meta: JSON-able metadata stored in the Parquet schema under ``phenoscout`` (ignored for
            CSV).

    Raises:
        ConfigError: for another format.
    """
    suffix = "." + fmt.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ConfigError(f"unsupported export format {fmt!r}; use .csv or .parquet")
    if suffix == ".csv":
        return csv_bytes(df)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta:
        extra = {b"phenoscout": json.dumps(meta).encode()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def safe_export_path(folder: Path, name: str) -> Path:
    """``folder / name`` for a file name a user typed, refusing anything that leaves ``folder``.

    Raises:
        ConfigError: when ``name`` is empty, absolute, ``.`` or ``..``, holds a path separator
            or a control character, or would not land directly inside ``folder``.
    """
    folder = Path(folder)
    why = None
    if not isinstance(name, str) or not name.strip():
        why = "is empty"
    elif any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        why = "contains a control character"
    elif "/" in name or "\\" in name or os.sep in name:
        why = "contains a path separator"
    elif Path(name).is_absolute() or name.strip() in (".", ".."):
        why = "is not a plain file name"
    elif (folder.resolve() / name).resolve().parent != folder.resolve():
        why = "would be written outside the export folder"
    if why:
        raise ConfigError(
            f"export file name {name!r} {why}; type a plain name such as 'labels.csv' "
            f"(it is saved in {folder})"
        )
    return folder / name


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
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; give a file name, e.g. {out / 'export.csv'}")
    if out.suffix.lower() not in FORMATS:
        raise ConfigError(
            f"{out}: unsupported export format {out.suffix.lower()!r}; use .csv or .parquet"
        )
    return write_bytes_atomic(table_bytes(df, out.suffix, meta), out)


def export_frame(project: Project, what: str = "labels") -> pd.DataFrame:
    """The table that ``what`` exports: ``labels`` (:func:`labels_table`), ``cells``
    (:func:`cells_table`), ``predictions`` (:func:`predictions_table`, every cell with class
    probabilities) or ``wells`` (:func:`well_fractions`, predicted class counts per well).

    Raises:
        ConfigError: for an unknown ``what``.
        NotTrainedError: ``predictions``/``wells`` before labels of 2 classes.
        DataError: ``wells`` without plate and well columns.
    """
    kinds = {"labels": labels_table, "cells": cells_table, "predictions": predictions_table,
             "wells": well_fractions}  # fmt: skip
    if what not in kinds:
        raise ConfigError(f"unknown export kind {what!r}; allowed: {', '.join(EXPORT_KINDS)}")
    return kinds[what](project)


def export_meta(project: Project, what: str) -> dict:
    """What a Parquet export records about itself: the kind and the project's config."""
    return {"what": what, "config": config_to_dict(project.config)}


def export_table(project: Project, out: Path, what: str = "labels") -> pd.DataFrame:
    """Export ``what`` (one of ``EXPORT_KINDS``, see :func:`export_frame`) of ``project`` to
    ``out``.

    Returns:
        The table written (its ``attrs`` as :func:`export_frame` made them).

    Raises:
        ConfigError: for an unknown ``what`` or an unsupported suffix.
        NotTrainedError: ``predictions``/``wells`` before labels of 2 classes.
        DataError: ``wells`` without plate and well columns.
    """
    check_export_target(out)  # before the work, not after it
    df = export_frame(project, what)
    write_table(df, out, meta=export_meta(project, what))
    logger.info("exported %d %s rows to %s", len(df), what, out)
    return df

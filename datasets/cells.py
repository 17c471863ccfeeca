"""The cell table (``cells.parquet``): stable cell ids, sources, ground truth and metadata.

One row per cell with ``cell_id``, ``source``, ``part``, ``row``, ``height``, ``width``,
``truth`` and then any metadata columns (plate, well, site, control, ... as strings). ``part``
names an ingest recorded in ``pixels/parts.json`` (:func:`read_parts`). Also reads the optional
``labels.csv`` / ``metadata.csv`` that come with a folder of crops.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datasets.errors import DataError, ProjectDamagedError

CELLS_FILE = "cells.parquet"
PIXELS_DIR = "pixels"  # crop arrays per plate, see datasets.pixels.plates
MANIFEST_FILE = "parts.json"  # in PIXELS_DIR: one record per ingest part
#: parts.json "format": 1 = parts as .npy files (earlier versions), 2 = one sharded Zarr array
#: per part, 3 = plated cells in one array per plate (parts record "segments", see
#: datasets.pixels.plates); this version writes 3 and reads 2 and 3.
MANIFEST_FORMAT = 3
READABLE_FORMATS = (2, 3)
DAMAGED_FIX = "restore it from a backup or re-create the project"  # a project file unreadable
#: A valid cell id: letters, digits and ``. _ : -`` only.
_CELL_ID_CHARS = r"[A-Za-z0-9._:-]+"
CELL_ID_PATTERN: re.Pattern = re.compile(rf"\A{_CELL_ID_CHARS}\Z")
#: Columns every cell table has, in this order; metadata columns follow.
BASE_COLUMNS = ("cell_id", "source", "part", "row", "height", "width", "truth")
_MEMBER_SUFFIX = r"#\d+$"  # "x.npz#3" names image 3 of x.npz
_DISALLOWED = re.compile(r"[^A-Za-z0-9._:-]")
_N_SHOWN = 3  # how many offending values an error message names


def make_cell_ids(sources: list[str], existing: set[str]) -> list[str]:
    """Stable cell ids for ``sources`` (paths relative to the crops root), unique overall.

    Path separators become ``.``, an npz member ``#i`` becomes ``:i``, any other character
    outside ``[A-Za-z0-9._:-]`` becomes ``_``. An id already in ``existing`` or produced earlier
    in this call gets a ``.2``, ``.3``, ... suffix.

    Args:
        sources: relative source paths, e.g. ``"images/G1/x.tif"`` or ``"plate1.npz#3"``.
        existing: ids already in the project; not modified.

    Returns:
        One id per source, in order, each matching :data:`CELL_ID_PATTERN`.
    """
    taken = set(existing)
    ids = []
    for source in sources:
        base = source.replace("\\", "/").strip("/").replace("/", ".").replace("#", ":")
        base = _DISALLOWED.sub("_", base) or "cell"
        cell_id, k = base, 1
        while cell_id in taken:
            k += 1
            cell_id = f"{base}.{k}"
        taken.add(cell_id)
        ids.append(cell_id)
    return ids


def read_cells(project_dir: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The project's cell table, one row per cell in stored order.

    Args:
        project_dir: the project folder.
        columns: columns to read; all when None.

    Raises:
        DataError: when the project has no cell table or a column does not exist.
    """
    path = Path(project_dir) / CELLS_FILE
    if not path.is_file():
        raise DataError(f"{path}: no cell table; ingest crops into the project first")
    try:
        known = pq.read_schema(path).names
        if columns is not None:
            unknown = [c for c in columns if c not in known]
            if unknown:
                raise DataError(f"{path}: no column(s) {unknown}; the table has {known}")
        return pd.read_parquet(path, columns=columns)
    except (OSError, ValueError, pa.ArrowException) as err:  # truncated, overwritten, unreadable
        raise ProjectDamagedError(path, err, DAMAGED_FIX) from err


def read_cells_of(project_dir: Path, cell_ids: list[str], columns: list[str]) -> pd.DataFrame:
    """The rows of the cells ``cell_ids`` only (in stored order): ``cell_id`` and ``columns``.

    A filtered Parquet read, for a batch's few cells of a large table (24 of 10^6 rows in
    0.1 s, where reading the columns whole and indexing them by id takes 0.3-0.4 s).

    Raises:
        DataError, ProjectDamagedError: as :func:`read_cells`.
    """
    path = Path(project_dir) / CELLS_FILE
    wanted = ["cell_id", *[c for c in columns if c != "cell_id"]]
    if not path.is_file():
        raise DataError(f"{path}: no cell table; ingest crops into the project first")
    try:
        known = pq.read_schema(path).names
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise DataError(f"{path}: no column(s) {unknown}; the table has {known}")
        rows = pq.read_table(path, columns=wanted, filters=[("cell_id", "in", list(cell_ids))])
        return rows.to_pandas()
    except (OSError, ValueError, pa.ArrowException) as err:
        raise ProjectDamagedError(path, err, DAMAGED_FIX) from err


def write_cells(project_dir: Path, table: pd.DataFrame) -> None:
    """Write the cell table atomically (temporary file, then ``os.replace``).

    Raises:
        DataError: when a cell id is missing, duplicated or has disallowed characters.
    """
    ids = table["cell_id"].astype("str")
    valid = ids.str.fullmatch(_CELL_ID_CHARS).fillna(False).to_numpy(bool)
    if not valid.all() or ids.duplicated().any():
        shown = ids[~valid].tolist()[:_N_SHOWN] or ids[ids.duplicated()].tolist()[:_N_SHOWN]
        raise DataError(f"cell table: invalid or duplicate cell ids {shown}; not written")
    path = Path(project_dir) / CELLS_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def read_manifest(project_dir: Path) -> dict[str, Any] | None:
    """The project's ``pixels/parts.json``, or None when nothing has been ingested.

    It holds ``format`` (:data:`MANIFEST_FORMAT`), ``crop_size``, ``n_channels`` and ``parts``:
    one record per ingest with ``part``, ``segments`` (where its rows are stored, see
    :mod:`datasets.pixels.plates`; in format 2 ``file``, its one ``.zarr`` array), ``root``
    (the crops folder), ``dtype``, ``n_cells``, ``layout``, ``source_channels``, ``channels_kept``,
    ``channel_names``, ``normalise_by``, ``group_column`` and ``ranges`` (group -> (C, 2)
    ``[low, high]``).

    Raises:
        DataError: when the file exists but is not valid JSON.
    """
    path = Path(project_dir) / PIXELS_DIR / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8
        raise ProjectDamagedError(path, err, DAMAGED_FIX) from err


def write_manifest(project_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``pixels/parts.json`` atomically (temporary file, then ``os.replace``)."""
    path = Path(project_dir) / PIXELS_DIR / MANIFEST_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)


def read_parts(project_dir: Path) -> list[dict[str, Any]]:
    """The per-ingest part records of :func:`read_manifest`; empty before the first ingest."""
    manifest = read_manifest(project_dir)
    return list(manifest["parts"]) if manifest else []


@dataclass(frozen=True)
class PathCsv:
    """A CSV of per-image values keyed by path (``labels.csv``, ``metadata.csv``)."""

    path: Path  # the CSV file, for messages
    keys: pd.Series  # (m,) str: :func:`path_key` of each row's path
    values: pd.DataFrame  # (m, k) str columns other than ``path``; RangeIndex


def path_key(base_dir: str, text: str) -> str:
    """Normalised absolute key of a path (optionally ``file.npz#i``) relative to ``base_dir``.

    Images and CSV rows are matched on these keys; ``base_dir`` should be resolved already.
    """
    keys, _, _ = _path_keys(base_dir, pd.Series([text], dtype="str"))
    return str(keys.iloc[0])


def _split_members(texts: pd.Series) -> tuple[pd.Series, pd.Series]:
    """File part and member suffix (``"#i"`` or ``""``) of each path, vectorised."""
    is_member = texts.str.contains(_MEMBER_SUFFIX, regex=True)
    files = texts.str.replace(_MEMBER_SUFFIX, "", regex=True)
    members = texts.str.replace(r"^.*(#\d+)$", r"\1", regex=True).where(is_member, "")
    return files, members


def _path_keys(
    base_dir: str, texts: pd.Series
) -> tuple[pd.Series, npt.NDArray[np.intp], list[str]]:
    """Keys of ``texts``, each row's file code, and the distinct normalised file paths.

    Strings stay Arrow-backed and each distinct file is normalised once, so that a CSV of
    10^6 rows costs little time and memory.
    """
    texts = texts.str.strip().str.replace("\\", "/", regex=False).reset_index(drop=True)
    file_parts, members = _split_members(texts)
    codes, uniques = pd.factorize(file_parts)
    files = [os.path.normpath(os.path.join(base_dir, u)) for u in uniques]
    keys = pd.Series(files, dtype="str").take(codes).reset_index(drop=True) + members
    return keys, codes, files


def source_keys(root: str, sources: list[str]) -> tuple[pd.Series, pd.Series | None]:
    """Keys of cells' sources (relative to ``root``) and of their files (None: no npz member).

    Returns:
        ``(keys, files)``, each (n,) str, matching :func:`path_key` of the CSVs.
    """
    series = pd.Series(sources, dtype="str")
    files, members = _split_members(series)
    if not (members != "").any():
        return f"{root}/" + series, None
    return f"{root}/" + series, f"{root}/" + files


def _position_in(values: pd.Series, table: pd.Series) -> npt.NDArray[np.int64]:
    """Position of each of ``values`` in ``table`` (-1 where absent), hashed in Arrow."""
    found = pc.index_in(pa.array(values.array), value_set=pa.array(table.array))
    return found.fill_null(-1).to_numpy().astype(np.int64)


def release_arrow_memory() -> None:
    """Hand freed Arrow buffers back to the OS (mimalloc keeps them otherwise).

    String work on large tables leaves tens of MB of freed buffers behind; releasing them keeps
    an ingest's peak memory from growing with the number of cells.
    """
    pa.default_memory_pool().release_unused()


def _read_csv_text(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, csv.Error) as err:
        raise DataError(f"{path}: cannot parse CSV ({str(err).strip()})") from err
    except pd.errors.EmptyDataError as err:
        raise DataError(
            f"{path}: CSV is empty; it needs a header line such as 'path,label'"
        ) from err
    table.columns = [str(c).strip() for c in table.columns]
    return table


def read_path_csv(path: Path, required: tuple[str, ...], crops_dir: Path | None = None) -> PathCsv:
    """A CSV with a ``path`` column, keyed by :func:`path_key` of each path.

    Paths are relative to the CSV's folder, or when they all name files there, to
    ``crops_dir`` (as ``--import-labels`` reads them; absolute paths are accepted);
    ``file.npz#i`` names one image of an npz file. Values are strings, empty cells are missing
    (NaN).

    Args:
        path: the CSV file.
        required: columns besides ``path`` that must exist.
        crops_dir: the crops folder the CSV describes.

    Raises:
        DataError: one line naming the CSV and the cause, for an unparsable file, a missing
            column, an empty path, paths naming missing files, or duplicate paths.
    """
    path = Path(path)
    table = _read_csv_text(path)
    missing_cols = [c for c in ("path", *required) if c not in table.columns]
    if missing_cols:
        raise DataError(
            f"{path}: no column(s) {missing_cols} (found {list(table.columns)}); "
            f"the first line must be a header such as '{','.join(('path', *required))}'"
        )
    texts = table.pop("path").reset_index(drop=True)
    empty = texts.isna() | (texts.str.strip() == "")
    if empty.any():
        line = int(empty.to_numpy().argmax()) + 2
        raise DataError(f"{path}: line {line} has an empty path; every row needs a path")
    keys, codes, files = _path_keys(str(path.resolve().parent), texts)
    found = sum(os.path.isfile(f) for f in files)
    if crops_dir is not None and found < len(files):  # the folder under which more exist
        under = _path_keys(str(Path(crops_dir).resolve()), texts)
        if sum(os.path.isfile(f) for f in under[2]) > found:
            keys, codes, files = under
    _check_duplicates(path, texts, keys)
    _check_files_exist(path, texts, codes, files, crops_dir)
    release_arrow_memory()
    return PathCsv(path, keys, table.reset_index(drop=True))


def _check_duplicates(path: Path, texts: pd.Series, keys: pd.Series) -> None:
    ordered = pc.take(pa.array(keys.array), pc.sort_indices(pa.array(keys.array)))
    if len(keys) < 2 or not pc.any(pc.equal(ordered[1:], ordered[:-1])).as_py():
        return
    dup = keys.duplicated(keep=False).to_numpy()
    shown = list(dict.fromkeys(texts[dup]))[:_N_SHOWN]
    raise DataError(
        f"{path}: {int(keys.duplicated().sum())} duplicate path(s), e.g. {shown}; "
        "list each image once"
    )


def _check_files_exist(
    path: Path,
    texts: pd.Series,
    codes: npt.NDArray[np.intp],
    files: list[str],
    crops_dir: Path | None = None,
) -> None:
    exists = np.array([os.path.isfile(f) for f in files], dtype=bool)
    missing = texts[~exists[codes]].tolist()
    if missing:
        where = "the CSV's folder" + (f" or to {crops_dir}" if crops_dir is not None else "")
        raise DataError(
            f"{path}: {len(missing)} path(s) name missing files, e.g. {missing[:_N_SHOWN]}; "
            f"paths are relative to {where}"
        )


def read_labels_csv(path: Path, crops_dir: Path | None = None) -> PathCsv:
    """Ground-truth labels from a ``path,label`` CSV.

    Returns:
        The CSV with one value column, ``label`` (str, NFC-normalised and stripped).

    Raises:
        DataError: see :func:`read_path_csv`; and a label the class-name rule refuses (empty,
            over 200 characters, a control character: :func:`datasets.names.class_name_problem`,
            as for imported labels), naming the line.
    """
    from datasets.names import class_name_problem

    table = read_path_csv(path, ("label",), crops_dir)
    labels = table.values["label"].fillna("")
    clean = []
    for line, label in enumerate(labels, start=2):
        name, problem = class_name_problem(label)
        if problem:
            raise DataError(f"{path}: line {line}: {problem}")
        clean.append(name)
    return PathCsv(table.path, table.keys, pd.Series(clean, dtype="str", name="label").to_frame())


def read_metadata_csv(path: Path, crops_dir: Path | None = None) -> PathCsv:
    """Per-image metadata (plate, well, site, control, ...) from a CSV with a ``path`` column.

    Raises:
        DataError: see :func:`read_path_csv`, and for a column that clashes with a cell table
            column (``cell_id``, ``row``, ...).
    """
    table = read_path_csv(path, (), crops_dir)
    clash = [c for c in table.values.columns if c in BASE_COLUMNS]
    if clash:
        raise DataError(
            f"{path}: column(s) {clash} clash with the cell table's own columns "
            f"{list(BASE_COLUMNS)}; rename them"
        )
    return table


def lookup(table: PathCsv, keys: pd.Series, files: pd.Series | None = None) -> pd.DataFrame:
    """The CSV's values for each cell's own key, falling back to its file's key.

    The fallback lets one CSV row for ``x.npz`` apply to every image ``x.npz#i``.

    Args:
        table: the CSV.
        keys: (n,) each cell's key (``x.npz#i`` for npz members).
        files: (n,) each cell's file key, or None when no cell is an npz member.

    Returns:
        (n, k) values per cell with a RangeIndex, NaN where the CSV names neither key.
    """
    pos = _position_in(keys, table.keys)
    if files is not None:
        pos = np.where(pos < 0, _position_in(files, table.keys), pos)
    return table.values.reindex(pos).reset_index(drop=True)


def match_csv(
    table: PathCsv, keys: pd.Series, files: pd.Series | None, ignore: list[str]
) -> tuple[pd.DataFrame, str | None]:
    """:func:`lookup` plus a check of the CSV rows that name no cell.

    Args:
        table: the CSV.
        keys, files: as for :func:`lookup` (see :func:`source_keys`).
        ignore: keys of skipped files; rows naming them (or their npz members) match nothing
            and are not reported.

    Returns:
        ``(values per cell, note)``; the note (or None) tells how many rows matched no image.

    Raises:
        DataError: when rows name npz images past the end of their file.
    """
    file_keys = files if files is not None else keys
    matched = (_position_in(table.keys, keys) >= 0) | (_position_in(table.keys, file_keys) >= 0)
    unmatched = table.keys[~matched].reset_index(drop=True)
    unmatched_files, _ = _split_members(unmatched)
    wanted = ~unmatched_files.isin(ignore).to_numpy()
    unmatched, unmatched_files = unmatched[wanted], unmatched_files[wanted]
    bad_members = unmatched[_position_in(unmatched_files, file_keys) >= 0].tolist()
    if bad_members:
        raise DataError(
            f"{table.path}: {len(bad_members)} path(s) name npz images that do not exist, e.g. "
            f"{bad_members[:_N_SHOWN]}; an npz of n images has indices 0 to n-1"
        )
    note = None
    if len(unmatched):
        note = (
            f"{len(unmatched)} rows of {table.path} name files that are not stored images of "
            f"this folder; ignored (e.g. {unmatched.tolist()[:_N_SHOWN]})"
        )
    return lookup(table, keys, files), note

"""Load the tables of a CellProfiler export: the per-image table and the chosen objects.

Two sources, as CellProfiler Analyst users have them:

- **CSV** from ExportToSpreadsheet: an object file (``Nuclei.csv``, columns unprefixed:
  ``ImageNumber, ObjectNumber, Location_Center_X, AreaShape_Area, ...``; a file combining several
  objects has two header rows, object names then features) and the image file (``Image.csv``:
  ``ImageNumber, FileName_<Channel>, PathName_<Channel>, Metadata_*``). Comma or tab separated.
  When there is no image file, file names exported into the object file are used.
- **SQLite** from ExportToDatabase: ``<prefix>Per_Image`` (``Image_FileName_DNA``,
  ``Image_Metadata_Well``, ...) with either one ``<prefix>Per_Object`` table (``ObjectNumber``,
  ``Nuclei_Location_Center_X``, ``Cells_AreaShape_Area``, ...) or one ``<prefix>Per_<Object>``
  table per object type (``Nuclei_Number_Object_Number``, ``Nuclei_Location_Center_X``, ...).
  Opened read-only.

Channels are the ``FileName_<Channel>`` columns in sorted order; images saved by SaveImages (a
``FileName_`` column without the ``Height_``/``Width_``/``Scaling_``/``MD5Digest_`` columns that
loaded images get) are left out when loaded images are recognisable.
"""

from __future__ import annotations

import csv
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from datasets.errors import DataError

logger = logging.getLogger(__name__)

_DB_MAGIC = b"SQLite format 3\x00"
_DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_PREFERRED = ("nuclei", "cells")  # picked, in this order, among several object types
_IMAGE_MARKS = ("Height_", "Width_", "Scaling_", "MD5Digest_")  # images loaded, not saved
_TEXT_PREFIXES = (
    "Metadata_",
    "FileName_",
    "PathName_",
    "Image_Metadata_",
    "Image_FileName_",
    "Image_PathName_",
)
SHOWN = 5  # how many names an error message lists


@dataclass(frozen=True)
class CellProfilerTables:
    """One export: the image table (``Image_`` prefix dropped) and the chosen objects."""

    images: pd.DataFrame  # one row per image, columns as ExportToSpreadsheet names them
    objects: pd.DataFrame | None  # the object table as stored; None when not asked for
    object_name: str  # e.g. "Nuclei"; prefix of the object columns when ``prefixed``
    prefixed: bool
    keys: tuple[str, ...]  # ("ImageNumber",) or ("TableNumber", "ImageNumber")
    folders: tuple[Path, ...]  # where the tables are (objects, images), to find images
    object_file: str  # labels for messages
    image_file: str


def load_tables(
    objects: Path,
    images_csv: Path | None = None,
    object_name: str | None = None,
    *,
    with_objects: bool = True,
) -> CellProfilerTables:
    """The image table and the objects of a CellProfiler export.

    Args:
        objects: the per-object CSV or the SQLite database (recognised by content or suffix).
        images_csv: the per-image CSV; default ``Image.csv`` (or the one ``*Image.csv``) beside
            ``objects``, else file names exported into the object CSV. Unused for a database.
        object_name: which objects of a combined table or database (``"Nuclei"`` or a table
            name); default the only one, else Nuclei, else Cells.
        with_objects: read the object rows too (False: only what the image table needs).

    Raises:
        DataError: missing, unreadable or empty tables, missing ImageNumber, ambiguous objects.
    """
    objects = Path(objects)
    if not objects.is_file():
        raise DataError(
            f"{objects}: not found; pass the per-object CSV (e.g. Nuclei.csv) or the "
            "SQLite database ExportToDatabase wrote"
        )
    with objects.open("rb") as fh:
        is_db = fh.read(len(_DB_MAGIC)) == _DB_MAGIC
    if is_db or objects.suffix.lower() in _DB_SUFFIXES:
        return _load_db(objects, object_name, with_objects)
    return _load_csv(objects, images_csv, object_name, with_objects)


def _load_csv(objects: Path, images_csv, object_name, with_objects: bool) -> CellProfilerTables:
    image_path = Path(images_csv) if images_csv is not None else _find_image_csv(objects)
    frame = _read_csv(objects, "per-object table") if with_objects or image_path is None else None
    if image_path is not None:
        if not image_path.is_file():
            raise DataError(
                f"{image_path}: per-image table not found; pass the Image.csv that "
                f"ExportToSpreadsheet wrote with {objects.name}"
            )
        images, image_label = _read_csv(image_path, "per-image table"), str(image_path)
    elif frame is not None and any(str(c).startswith("FileName_") for c in frame.columns):
        images, image_label = frame, str(objects)  # file names exported into the object file
    else:
        raise DataError(
            f"{objects}: no per-image table beside it (looked for Image.csv); "
            "pass images_csv (--images-csv IMAGE.csv)"
        )
    name, prefixed = _object_stem(objects, image_path), False
    if frame is not None and "Location_Center_X" not in frame.columns:
        name, prefixed = _pick_prefixed(frame.columns, object_name, str(objects)), True
    keys = _keys(images, frame, image_label)
    if image_path is None:
        images = images.drop_duplicates(list(keys))
    folders = (objects.parent, Path(image_label).parent)
    return CellProfilerTables(
        _strip_image(images), frame, name, prefixed, keys, folders, str(objects), image_label
    )


def _object_stem(objects: Path, image_path: Path | None) -> str:
    """``Nuclei`` for ``MyExpt_Nuclei.csv`` beside ``MyExpt_Image.csv``."""
    if image_path is None or not image_path.stem.lower().endswith("image"):
        return objects.stem
    prefix = image_path.stem[: -len("image")]
    if prefix and objects.stem.startswith(prefix) and len(objects.stem) > len(prefix):
        return objects.stem[len(prefix) :]
    return objects.stem


def _find_image_csv(objects: Path) -> Path | None:
    """``Image.csv`` beside ``objects``, else the one ``*Image.csv`` sharing its prefix."""
    if (objects.parent / "Image.csv").is_file():
        return objects.parent / "Image.csv"
    found = sorted(
        p
        for p in objects.parent.glob("*")
        if p != objects
        and p.is_file()
        and p.suffix.lower() in (".csv", ".txt", ".tsv")
        and p.stem.lower().endswith("image")
    )
    if len(found) > 1:
        found = [p for p in found if objects.stem.startswith(p.stem[: -len("image")])] or found
    if len(found) > 1:
        raise DataError(
            f"{objects.parent}: several per-image tables "
            f"({', '.join(p.name for p in found[:SHOWN])}); pass images_csv "
            "(--images-csv IMAGE.csv)"
        )
    return found[0] if found else None


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    """A CellProfiler CSV (comma or tab; two header rows become ``<Object>_<feature>``)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            head = [fh.readline(), fh.readline()]
        sep = "\t" if head[0].count("\t") > head[0].count(",") else ","
        rows = [next(csv.reader([line], delimiter=sep), []) for line in head]
        two = "ImageNumber" not in rows[0] and "ImageNumber" in rows[1]
        text = {c: str for row in rows for c in row if c.startswith(_TEXT_PREFIXES)}
        frame = pd.read_csv(
            path,
            sep=sep,
            header=[0, 1] if two else 0,
            encoding="utf-8-sig",
            dtype=None if two else text,
            low_memory=False,
        )
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read the {what} ({cause})") from exc
    if two:
        frame.columns = [_flat(obj, feat) for obj, feat in frame.columns]
    if frame.empty:
        raise DataError(f"{path}: the {what} has no rows; export again from CellProfiler")
    return frame


def _flat(obj: str, feature: str) -> str:
    """Column name of a two-header-row CSV as ExportToDatabase would name it."""
    return feature if obj == "Image" or feature in ("ObjectNumber",) else f"{obj}_{feature}"


def _load_db(path: Path, object_name, with_objects: bool) -> CellProfilerTables:
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot open the database ({exc})") from exc
    try:
        tables = _db_columns(conn)
        table, name, prefixed = _pick_db_objects(tables, object_name, path)
        prefix = table[: table.lower().rfind("per_")]
        image_table = next((t for t in tables if t.lower() == f"{prefix}per_image".lower()), None)
        if image_table is None:
            raise DataError(
                f"{path}: no {prefix}Per_Image table beside {table}; export the "
                "image measurements too (ExportToDatabase)"
            )
        images = _db_read(conn, image_table, path)
        frame = _db_read(conn, table, path) if with_objects else None
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        raise DataError(
            f"{path}: cannot read the database ({exc}); is it a CellProfiler "
            "ExportToDatabase SQLite file?"
        ) from exc
    finally:
        conn.close()
    keys = _keys(images, frame, f"{path}:{image_table}")
    return CellProfilerTables(
        _strip_image(images),
        frame,
        name,
        prefixed,
        keys,
        (path.parent,),
        f"{path}:{table}",
        f"{path}:{image_table}",
    )


def _db_columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name"
        )
    ]
    return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({_quote(t)})")] for t in names}


def _db_read(conn: sqlite3.Connection, table: str, path: Path) -> pd.DataFrame:
    frame = pd.read_sql(f"SELECT * FROM {_quote(table)}", conn)
    if frame.empty:
        raise DataError(f"{path}: table {table} has no rows; export again from CellProfiler")
    return frame


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pick_db_objects(tables: dict[str, list[str]], object_name, path: Path):
    """``(table, object name, prefixed)`` of the objects to read from a database."""
    found: dict[str, tuple[str, str, bool]] = {}  # lower-case object name -> choice
    for table, cols in tables.items():
        if table.lower().endswith("per_image"):
            continue
        if "Location_Center_X" in cols:
            own = table[table.lower().rfind("per_") + 4 :] if "per_" in table.lower() else table
            found.setdefault(own.lower(), (table, own, False))
        for own in object_prefixes(cols):
            found.setdefault(own.lower(), (table, own, True))
    if not found:
        raise DataError(
            f"{path}: no object table with Location_Center_X/Y among "
            f"{', '.join(list(tables)[:SHOWN]) or 'no tables'}; is it a CellProfiler "
            "ExportToDatabase SQLite file?"
        )
    if object_name is not None:
        wanted = object_name.lower()
        hits = {k: v for k, v in found.items() if wanted in (k, v[0].lower())}
        if not hits:
            return _ambiguous(found, path, f"no objects named {object_name!r}")
        found = hits  # a table name may hold several objects (Per_Object)
    return _preferred(found, path)


def _pick_prefixed(columns, object_name, label: str) -> str:
    """The object whose ``<Object>_Location_Center_X/Y`` columns to use in a combined table."""
    found = {p.lower(): ("", p, True) for p in object_prefixes(columns)}
    if not found:
        raise DataError(
            f"{label}: missing column(s) Location_Center_X, Location_Center_Y in the "
            "per-object table; export the objects with their Location measurements"
        )
    if object_name is not None:
        if object_name.lower() in found:
            return found[object_name.lower()][1]
        return _ambiguous(found, label, f"no objects named {object_name!r}")[1]
    return _preferred(found, label)[1]


def object_prefixes(columns) -> list[str]:
    """Object names ``X`` with ``X_Location_Center_X`` and ``X_Location_Center_Y`` columns."""
    return [
        c[: -len("_Location_Center_X")]
        for c in columns
        if str(c).endswith("_Location_Center_X") and f"{c[:-1]}Y" in columns
    ]


def _preferred(found: dict, where) -> tuple[str, str, bool]:
    if len(found) == 1:
        return next(iter(found.values()))
    for name in _PREFERRED:
        if name in found:
            logger.info(
                "%s: using %s objects (others: %s); pass object_name to choose",
                where,
                found[name][1],
                ", ".join(v[1] for k, v in found.items() if k != name),
            )
            return found[name]
    return _ambiguous(found, where, "several object types")


def _ambiguous(found: dict, where, why: str):
    choices = ", ".join(f"{v[1]} ({v[0]})" if v[0] else v[1] for v in found.values())
    raise DataError(f"{where}: {why}; choose one of {choices} with object_name (--object-name)")


def _keys(images: pd.DataFrame, frame: pd.DataFrame | None, label: str) -> tuple[str, ...]:
    if "ImageNumber" not in images.columns:
        raise DataError(
            f"{label}: missing column ImageNumber in the per-image table (found "
            f"{', '.join(map(str, images.columns[:SHOWN]))}, ...); pass the "
            "Image.csv that CellProfiler wrote"
        )
    both = "TableNumber" in images.columns and (frame is None or "TableNumber" in frame.columns)
    return ("TableNumber", "ImageNumber") if both else ("ImageNumber",)


def _strip_image(images: pd.DataFrame) -> pd.DataFrame:
    """ExportToDatabase's ``Image_FileName_DNA`` as ExportToSpreadsheet's ``FileName_DNA``."""
    return images.rename(columns=lambda c: c[len("Image_") :] if c.startswith("Image_") else c)


def select_channels(tables: CellProfilerTables, wanted: Sequence[str] | None) -> list[str]:
    """The CellProfiler image names to use as channels: ``wanted``, else the loaded images.

    Raises:
        DataError: no ``FileName_*`` column, or a ``wanted`` name without one.
    """
    cols = set(tables.images.columns)
    every = sorted(c[len("FileName_") :] for c in cols if c.startswith("FileName_"))
    if not every:
        raise DataError(
            f"{tables.image_file}: missing FileName_<channel> columns in the "
            "per-image table; export the image file names (NamesAndTypes) too"
        )
    if wanted is not None:
        missing = [c for c in wanted if c not in every]
        if missing or not wanted:
            raise DataError(
                f"{tables.image_file}: no image named {', '.join(missing) or '(none)'}"
                f"; choose channels among {', '.join(every)}"
            )
        return list(wanted)
    loaded = [c for c in every if any(f"{m}{c}" in cols for m in _IMAGE_MARKS)]
    if loaded and loaded != every:
        logger.info(
            "%s: leaving out saved images %s (no Height_/Scaling_ columns)",
            tables.image_file,
            ", ".join(c for c in every if c not in loaded),
        )
    return loaded or every

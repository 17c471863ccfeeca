"""Read a CellProfiler export (per-image + per-object tables) into :class:`FieldSpec` s.

The tables (ExportToSpreadsheet CSV or ExportToDatabase SQLite) are read by
:mod:`datasets.cellprofiler.tables`. Here each image becomes a field with its objects at their
``Location_Center_X/Y`` and their measurements as ``cp_*`` columns.

An image file is found at ``PathName/FileName`` when that exists; otherwise (a relative
``PathName``, or paths recorded on another machine) under each root in turn, ``image_root``
first, then the folder of the object table, then that of the image table, trying ever shorter
tails of ``PathName``: for ``/x/a/b`` that is ``root/x/a/b/FileName``, ``root/a/b/FileName``,
``root/b/FileName``, ``root/FileName``.
An image whose file is found nowhere is skipped with its objects and listed in ``skipped``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from datasets.cellprofiler.tables import (
    SHOWN,
    CellProfilerTables,
    load_tables,
    object_prefixes,
    select_channels,
)
from datasets.errors import DataError
from datasets.fields.spec import FieldSpec

logger = logging.getLogger(__name__)

CP_PREFIX = "cp_"  # CellProfiler measurements in the cell table: cp_<feature>
_LOWER_META = ("plate", "well", "site")
#: Ids, positions and image-level columns: never measurements.
_NOT_MEASURED = re.compile(
    r"(ImageNumber|ObjectNumber|TableNumber)$|(Location|Number|Parent|Metadata|FileName|PathName"
    r"|URL)_|AreaShape_(Center|BoundingBoxM(in|ax)imum)_|Neighbors_\w*ObjectNumber"
)


def read_cellprofiler(
    objects: Path,
    images_csv: Path | None = None,
    *,
    object_name: str | None = None,
    image_root: Path | None = None,
    channels: Sequence[str] | None = None,
) -> tuple[list[FieldSpec], list[tuple[str, str]]]:
    """One :class:`FieldSpec` per image of a CellProfiler export, objects at their centres.

    Args:
        objects: the per-object CSV (``Nuclei.csv``) or the SQLite database (.db/.sqlite/.sqlite3,
            also recognised by content).
        images_csv: the per-image CSV; default ``Image.csv`` (or the one ``*Image.csv``) beside
            ``objects``. Ignored for a database.
        object_name: which objects when the export holds several (``"Nuclei"``, or a table name
            such as ``"MyExpt_Per_Cells"``); default Nuclei, then Cells, else an error.
        image_root: where the images are now, when the recorded paths do not exist (module doc).
        channels: CellProfiler image names to use, in this order; default all (module doc).

    Returns:
        ``(fields, skipped)``. Each field has ``key`` (``plate_well_s<site>`` from metadata when
        present, else ``Image<ImageNumber>``), ``channel_files`` in :func:`cellprofiler_channels`
        order, ``metadata`` (``Metadata_*`` without the prefix as strings; Plate/Well/Site become
        plate/well/site) and ``objects``: one row per object with ``y``, ``x`` (pixels, float64),
        ``ImageNumber``, ``ObjectNumber`` (int64; ``TableNumber`` too when present) and every
        numeric measurement as ``cp_<feature>`` float64 (NaN kept; inf becomes NaN; other objects
        of a combined table keep their name, ``cp_Cells_AreaShape_Area``). ``skipped`` lists
        ``(file, cause)`` for images whose files are missing, objects without a location or an
        image, and images without objects.

    Raises:
        DataError: missing or unreadable tables, missing columns, empty tables, ambiguous objects,
            or no image left to ingest; one line naming the file, the cause and the fix.
    """
    tables = load_tables(Path(objects), images_csv, object_name, with_objects=True)
    names = select_channels(tables, channels)
    frame, skipped = _object_frame(tables)
    fields, more = _fields(tables, frame, names, image_root)
    skipped += more
    if not fields:
        why = f"; first cause: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DataError(f"{tables.object_file}: no image of the export can be ingested{why}")
    logger.info(
        "CellProfiler export %s: %d images, %d %s objects, %d skipped entries",
        tables.object_file,
        len(fields),
        sum(len(f.objects) for f in fields),
        tables.object_name,
        len(skipped),
    )
    return fields, skipped


def cellprofiler_channels(
    objects: Path,
    images_csv: Path | None = None,
    *,
    object_name: str | None = None,
    channels: Sequence[str] | None = None,
) -> list[str]:
    """The CellProfiler image names :func:`read_cellprofiler` uses as channels, in order.

    Reads the per-image table only (arguments as for :func:`read_cellprofiler`).

    Raises:
        DataError: as :func:`read_cellprofiler` for the image table.
    """
    tables = load_tables(Path(objects), images_csv, object_name, with_objects=False)
    return select_channels(tables, channels)


# -- objects --------------------------------------------------------------------------------


def _object_frame(t: CellProfilerTables) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """``y, x, ImageNumber, ObjectNumber[, TableNumber], cp_*`` of the chosen objects."""
    raw, p = t.objects, f"{t.object_name}_" if t.prefixed else ""
    if raw is None:
        raise ValueError("the tables were loaded without their objects")
    own = f"{p}Number_Object_Number"
    number = next((c for c in ("ObjectNumber", own) if c in raw.columns), None)
    needed = [*t.keys, f"{p}Location_Center_X", f"{p}Location_Center_Y"]
    missing = [c for c in needed if c not in raw.columns] + ([] if number else ["ObjectNumber"])
    if missing:
        raise DataError(
            f"{t.object_file}: missing column(s) {', '.join(missing)} in the "
            f"per-object table of {t.object_name}; export the objects with their "
            "Location and Number measurements"
        )
    if t.prefixed and own in raw.columns:  # a combined table: rows of other objects only
        raw = raw[pd.to_numeric(raw[own], errors="coerce").notna()]
    ids = {k: pd.to_numeric(raw[k], errors="coerce") for k in (*t.keys, number)}
    x = pd.to_numeric(raw[f"{p}Location_Center_X"], errors="coerce")
    y = pd.to_numeric(raw[f"{p}Location_Center_Y"], errors="coerce")
    ok = np.isfinite(x) & np.isfinite(y)
    for values in ids.values():
        ok &= values.notna() & (values % 1 == 0)
    cols = {"y": y[ok].astype("float64"), "x": x[ok].astype("float64")}
    for key in t.keys:
        cols[key] = ids[key][ok].astype("int64")
    cols["ObjectNumber"] = ids[number][ok].astype("int64")
    cols.update(_measurements(raw.loc[ok], p, object_prefixes(raw.columns), t.object_file))
    frame = pd.DataFrame(cols).reset_index(drop=True)
    twice = frame.duplicated([*t.keys, "ObjectNumber"]).to_numpy()
    if frame.empty:
        raise DataError(
            f"{t.object_file}: no {t.object_name} object has a location; export the "
            "objects with their Location measurements"
        )
    return frame[~twice].reset_index(drop=True), _bad_rows(t, int((~ok).sum()), int(twice.sum()))


def _bad_rows(t: CellProfilerTables, n_invalid: int, n_twice: int) -> list[tuple[str, str]]:
    """Skipped entries for objects without a location or ids, and for repeated ids."""
    out = []
    if n_invalid:
        why = "without a location, ImageNumber or ObjectNumber are not ingested"
        out.append((t.object_file, f"{n_invalid} {t.object_name} objects {why}"))
    if n_twice:
        ids = "/".join((*t.keys, "ObjectNumber"))
        why = f"repeat the {ids} of an earlier row; only the first is ingested"
        out.append((t.object_file, f"{n_twice} {t.object_name} objects {why}"))
    return out


def _measurements(raw: pd.DataFrame, p: str, objects: list[str], label: str) -> dict:
    """Numeric measurement columns as ``cp_<feature>`` float64 (ids, positions left out)."""
    strip = sorted({p, *(f"{o}_" for o in objects)} - {""}, key=len, reverse=True)
    out: dict[str, pd.Series] = {}
    n_inf = 0
    for column in map(str, raw.columns):
        name = column[len(p) :] if p and column.startswith(p) else column
        bare = next((column[len(s) :] for s in strip if column.startswith(s)), column)
        if _NOT_MEASURED.match(bare) or CP_PREFIX + name in out:
            continue
        values = _as_float(raw[column])
        if values is not None:
            inf = np.isinf(values.to_numpy())
            n_inf += int(inf.sum())
            out[CP_PREFIX + name] = values.mask(inf) if inf.any() else values
    if n_inf:
        logger.warning("%s: %d infinite measurement values read as NaN", label, n_inf)
    return out


def _as_float(values: pd.Series) -> pd.Series | None:
    """``values`` as float64, or None when any non-missing value is not a number."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    numbers = pd.to_numeric(values, errors="coerce")
    if int(numbers.notna().sum()) < int(values.notna().sum()):
        return None
    return numbers.astype("float64")


# -- images ---------------------------------------------------------------------------------


def _fields(t: CellProfilerTables, frame: pd.DataFrame, names: list[str], image_root: Path | None):
    """One FieldSpec per image with objects and files; ``(fields, skipped)``."""
    groups = {
        tuple(map(int, k)): g.reset_index(drop=True)
        for k, g in frame.groupby(list(t.keys), sort=False)
    }
    idents = _idents(t.images, t.keys)
    records = t.images.to_dict("records")
    metas = [_metadata(r) for r in records]
    keys = _field_keys(metas, idents)
    roots = list(dict.fromkeys(Path(r).resolve() for r in (image_root, *t.folders) if r))
    counts = Counter(idents)
    fields, skipped, empty = [], [], []
    for ident, key, meta, row in zip(idents, keys, metas, records):
        objects = groups.get(ident) if ident else None
        n = 0 if objects is None else len(objects)
        if ident is None or counts[ident] > 1:
            why = "no valid ImageNumber" if ident is None else "ImageNumber listed twice"
            skipped.append((t.image_file, f"image {key}: {why}; its {n} objects are not ingested"))
        elif objects is None:
            empty.append(key)
        else:
            files, problem = _channel_files(row, names, roots)
            if problem:
                where = problem[0] or t.image_file
                skipped.append((where, f"image {key}: {problem[1]}; its {n} objects skipped"))
            else:
                fields.append(FieldSpec(key, files, meta, None, objects))
    skipped += _unmatched(t, groups, set(idents), empty)
    return fields, skipped


def _unmatched(t: CellProfilerTables, groups: dict, idents: set, empty: list[str]) -> list:
    """Skipped entries for objects of images not in the image table and images without objects."""
    out = []
    orphans = [i for i in groups if i not in idents]
    if orphans:
        n = sum(len(groups[i]) for i in orphans)
        shown = ", ".join("/".join(map(str, i)) for i in orphans[:SHOWN])
        out.append(
            (
                t.object_file,
                f"{n} objects of {len(orphans)} {'/'.join(t.keys)} not in the "
                f"per-image table ({shown}) are not ingested",
            )
        )
    if empty:
        out.append(
            (
                t.image_file,
                f"{len(empty)} images without {t.object_name} objects are not "
                f"ingested: {', '.join(empty[:SHOWN])}",
            )
        )
    return out


def _idents(images: pd.DataFrame, keys: tuple[str, ...]) -> list[tuple[int, ...] | None]:
    """Each image's integer identity (ImageNumber, or TableNumber and ImageNumber), or None."""
    ids = images[list(keys)].apply(pd.to_numeric, errors="coerce")
    valid = (ids.notna() & (ids % 1 == 0)).all(axis=1)
    rows = ids.fillna(0).astype("int64").itertuples(index=False, name=None)
    return [tuple(map(int, r)) if ok else None for r, ok in zip(rows, valid)]


def _channel_files(row: dict, names: list[str], roots: list[Path]):
    """``(files, None)``, or ``(None, (recorded file, cause))`` for the first missing file."""
    files = []
    for name in names:
        file_name, folder = _text(row.get(f"FileName_{name}")), _text(row.get(f"PathName_{name}"))
        if not file_name:
            return None, ("", f"no file name for channel {name} (FileName_{name} is empty)")
        found, recorded = _resolve(file_name, folder, roots)
        if found is None:
            looked = ", ".join(map(str, roots))
            return None, (
                recorded,
                f"{name} image file not found, nor under {looked}; pass "
                "image_root, --image-root in the CLI (the folder that holds the images now)",
            )
        files.append(found)
    return tuple(files), None


def _resolve(file_name: str, folder: str, roots: list[Path]) -> tuple[Path | None, str]:
    """The existing file CellProfiler recorded as ``folder/file_name`` (rule in module doc)."""
    windows = "\\" in folder or re.match(r"[A-Za-z]:", folder) is not None
    pure = PureWindowsPath(folder) if windows else PurePosixPath(folder)
    recorded = str(pure / file_name) if folder else file_name
    tail = [part for part in pure.parts if part != pure.anchor]
    candidates = [Path(pure, file_name)] if folder and not windows and pure.is_absolute() else []
    for root in roots:
        candidates += [root.joinpath(*tail[k:], file_name) for k in range(len(tail) + 1)]
    return next((c for c in dict.fromkeys(candidates) if c.is_file()), None), recorded


def _metadata(row: dict) -> dict[str, str]:
    """``Metadata_*`` values as strings; Plate, Well, Site named plate, well, site."""
    meta: dict[str, str] = {}
    for column, value in row.items():
        name = str(column)[len("Metadata_") :] if str(column).startswith("Metadata_") else ""
        if name:
            meta.setdefault(name.lower() if name.lower() in _LOWER_META else name, _text(value))
    return meta


def _field_keys(metas: list[dict[str, str]], idents: list) -> list[str]:
    """``plate_well_s<site>`` from what metadata there is, else ``Image<n>``; made unique."""
    keys = []
    for meta in metas:
        parts = [meta.get("plate", ""), meta.get("well", "")]
        parts.append(f"s{meta['site']}" if meta.get("site") else "")
        keys.append("_".join(p for p in parts if p))
    numbered = ["Image" + "_".join(map(str, i or ("?",))) for i in idents]
    counts = pd.Series(keys).value_counts()
    return [n if not k else f"{k}_{n}" if counts[k] > 1 else k for k, n in zip(keys, numbered)]


def _text(value) -> str:
    """A table value as text: missing is ``""``, integral floats lose their ``.0``."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()

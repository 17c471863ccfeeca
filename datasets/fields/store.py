"""Where a project keeps its fields: the fields table, label images, object masks, truth.

Written by :func:`datasets.fields.ingest.ingest_fields`, read by the app to show a cell in its
field::

    PROJECT/fields.parquet              one row per field read (see read_fields)
    PROJECT/fields/ome/*.ome.zarr       each field's pixels and label image as OME-Zarr
                                        (datasets.fields.ome: HCS plates, or a collection)
    PROJECT/pixels/plates/*.mask.zarr   (n, S, S) uint8: 1 where a crop pixel is the cell's
                                        object; one array per plate beside the crops'
                                        (datasets.pixels.plates), mask-part-NNNN.zarr for
                                        cells without a plate

Projects made before the OME-Zarr store keep their label images as zlib TIFF in
``PROJECT/fields/masks/NNNNN.tif`` and read the fields' pixels from their source files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import tifffile

from datasets.cells import PIXELS_DIR, read_parts
from datasets.errors import DataError
from datasets.fields.files import read_field
from datasets.fields.ome import OME_COLUMN, read_image
from datasets.fields.spec import FieldSpec
from datasets.pixels.arrays import PartArray, part_file
from datasets.pixels.plates import PartView, open_part_view, segments_of

FIELDS_FILE = "fields.parquet"
FIELD_MASKS_DIR = "fields/masks"  # label images (TIFF) of projects made before OME-Zarr
#: Columns of fields.parquet before the fields' metadata columns.
FIELD_TABLE = ("index", "key", "part", "channel_files", "height", "width", "n_objects",
               "n_kept", "n_border", "mask", "mask_file", OME_COLUMN)  # fmt: skip


def mask_part_file(project_dir: Path, part: int) -> Path:
    """Path of part ``part``'s per-cell object masks, (n, S, S) uint8 (a Zarr array)."""
    return part_file(project_dir, part).with_name(f"mask-part-{part:04d}.zarr")


def mask_part(
    project_dir: Path, part: int, opened: dict[str, PartArray] | None = None
) -> PartView | None:
    """Part ``part``'s per-cell object masks, (n, S, S) uint8 by the cells' ``row``; None when
    the part has none (crops, not fields).

    Args:
        project_dir: the project folder.
        part: the part number.
        opened: arrays already open, by file, shared between calls.
    """
    record = {int(p["part"]): p for p in read_parts(project_dir)}.get(int(part))
    pixels = Path(project_dir) / PIXELS_DIR
    if record is None or not all(
        s.mask and (pixels / s.mask).exists() for s in segments_of(record)
    ):
        return None
    return open_part_view(project_dir, part, masks=True, opened=opened)


def npy_mask_part_file(project_dir: Path, part: int) -> Path:
    """Path of part ``part``'s object masks as earlier versions stored them (``.npy``)."""
    return part_file(project_dir, part).with_name(f"mask-part-{part:04d}.npy")


def existing_fields(project: Path) -> pd.DataFrame:
    """The fields table so far (empty with its columns before the first field ingest)."""
    path = project / FIELDS_FILE
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=list(FIELD_TABLE))


def write_fields_table(project: Path, existing: pd.DataFrame, rows: list[dict]) -> None:
    """Append ``rows`` (one dict per field) to fields.parquet, atomically."""
    table = pd.DataFrame(rows)
    if len(existing):
        table = pd.concat([existing, table], ignore_index=True)
    tmp = project / f".{FIELDS_FILE}.tmp"
    table.to_parquet(tmp, index=False)
    os.replace(tmp, project / FIELDS_FILE)


def read_fields(project_dir: Path) -> pd.DataFrame:
    """The project's fields: one row per field read, with ``index, key, part, channel_files``
    (list of paths), ``height, width, n_objects, n_kept, n_border, mask`` (label image
    relative to the project, "" for objects given as centres), ``mask_file`` (the source
    mask, "" when segmented), ``ome_zarr`` (the field's OME-Zarr image group relative to the
    project; absent or "" in projects made before) and the field's metadata.

    Raises:
        DataError: the project was not made from fields.
    """
    path = Path(project_dir) / FIELDS_FILE
    if not path.is_file():
        raise DataError(f"{path}: no fields table; the project was made from crops, not fields")
    return pd.read_parquet(path)


def _field_row(project_dir: Path, key: str) -> pd.Series:
    table = read_fields(project_dir)
    hit = table[table["key"] == key]
    if hit.empty:
        raise DataError(f"{project_dir}: no field {key!r}; see fields.parquet for the keys")
    return hit.iloc[0]


def _ome_image(row: pd.Series) -> str:
    """The field's OME-Zarr image group ("" in projects made before the OME-Zarr store)."""
    rel = row.get(OME_COLUMN)
    return rel if isinstance(rel, str) else ""


def read_field_image(project_dir: Path, key: str) -> npt.NDArray:
    """The pixels of field ``key``: (C, H, W) in the source dtype, from the project's
    OME-Zarr store (from the source files in projects made before it).

    Raises:
        DataError: unknown key, or (projects made before the OME-Zarr store) the source
            files moved or became unreadable.
        ProjectDamagedError: the field's OME-Zarr image is missing or damaged.
    """
    row = _field_row(project_dir, key)
    if rel := _ome_image(row):
        return read_image(Path(project_dir), rel)
    return read_field(FieldSpec(key, tuple(Path(p) for p in row["channel_files"])))


def read_field_mask(project_dir: Path, key: str) -> npt.NDArray:
    """The label image field ``key`` was cropped from: (H, W) uint16/uint32, 0 = background.

    Raises:
        DataError: unknown key, or a field whose objects were given as centres (no mask).
        ProjectDamagedError: the label image is missing or damaged.
    """
    row = _field_row(project_dir, key)
    if not row["mask"]:
        raise DataError(f"field {key!r}: objects were given as centres; it has no label image")
    if str(row["mask"]).endswith(".tif"):  # a project made before the OME-Zarr store
        return tifffile.imread(Path(project_dir) / row["mask"])
    return read_image(Path(project_dir), str(row["mask"]))


def convert_to_ome_zarr(project_dir: Path) -> tuple[int, list[tuple[str, str]]]:
    """Copy the fields of a project made before the OME-Zarr store into it: each field's
    pixels from its source files and its TIFF label image (kept, as a backup) go into
    ``fields/ome`` as the ingest writes them; fields.parquet then points at them.

    Returns:
        (fields converted, [(field key, why it was left as it is)]): a field whose source files
        cannot be read keeps reading from them.

    Raises:
        DataError: the project was not made from fields.
    """
    from datasets.cells import read_manifest
    from datasets.fields.ome import FieldImages

    project = Path(project_dir)
    table = read_fields(project).reset_index(drop=True)
    if OME_COLUMN not in table.columns:
        table[OME_COLUMN] = ""
    paths = table[OME_COLUMN].where(table[OME_COLUMN].notna(), "").astype(str)
    parts = (read_manifest(project) or {}).get("parts", [])
    names = parts[-1].get("channel_names", []) if parts else []
    writer = FieldImages(project, names, [p for p in paths if p])
    left: list[tuple[str, str]] = []
    masks, done = table["mask"].astype(str).tolist(), 0
    for i, row in table.iterrows():
        if paths[i]:
            continue
        try:
            image = read_field(FieldSpec(row["key"], tuple(Path(p) for p in row["channel_files"])))
            labels = tifffile.imread(project / row["mask"]) if row["mask"] else None
        except (DataError, OSError, ValueError) as err:
            left.append((str(row["key"]), str(err).splitlines()[0] if str(err) else repr(err)))
            continue
        if len(writer.channel_names) != image.shape[0]:
            writer.channel_names = [f"channel {c}" for c in range(image.shape[0])]
        metadata = {k: row[k] for k in ("plate", "well") if k in row.index and pd.notna(row[k])}
        paths[i], masks[i] = writer.add(int(row["index"]), str(row["key"]), metadata, image, labels)
        done += 1
    table[OME_COLUMN], table["mask"] = paths, masks
    tmp = project / f".{FIELDS_FILE}.tmp"
    table.to_parquet(tmp, index=False)
    os.replace(tmp, project / FIELDS_FILE)
    return done, left


def read_truth_csv(path: Path) -> dict[tuple[str, int], str]:
    """Ground truth per object from a CSV with columns ``field``, ``object`` and ``label``
    (or ``phenotype``); ``object`` is the object's label in its field's mask.

    Raises:
        DataError: unreadable CSV, missing columns, non-integer objects or duplicate rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: truth CSV does not exist; pass a CSV of field,object,label")
    try:
        table = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot parse CSV ({str(err).strip()})") from err
    label = "label" if "label" in table.columns else "phenotype"
    missing = [c for c in ("field", "object", label) if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {missing} (found {list(table.columns)}); "
                        "the header must be field,object,label")  # fmt: skip
    objects = pd.to_numeric(table["object"], errors="coerce")
    if objects.isna().any() or (objects % 1 != 0).any():
        line = int(objects.isna().to_numpy().argmax()) + 2
        raise DataError(f"{path}: line {line}: object is not an integer label")
    keys = list(zip(table["field"].str.strip(), objects.astype(np.int64).tolist()))
    if len(set(keys)) != len(keys):
        raise DataError(f"{path}: an object is listed twice; list each field,object once")
    return {k: str(v).strip() for k, v in zip(keys, table[label]) if pd.notna(v)}

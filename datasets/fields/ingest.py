"""Ingest whole fields of view: every object of every field becomes a cell of the project.

Fields stream one at a time, so memory does not grow with the number of fields. For each
field: read its channels ``(C, H, W)``; find its objects (the field's mask file when it has one,
else its given object centres (CellProfiler), else the segmenter's label image); crop
``crop_size`` pixels centred on each object's centroid (padded beyond the field's edge with the
field's per-channel border median, as :mod:`datasets.crops.resize` pads crops) and append the crops
and each object's own mask to the new part. Objects touching the field's border are left out
unless ``keep_border``. The part's crops and masks are then appended to their plates'
arrays (:mod:`datasets.pixels.plates`) and go through the crop ingest's normalisation and
manifest code, so pixels, features, tiles and everything
downstream work unchanged.

Besides the crop ingest's files it writes each cell's object mask, the fields table and each
field's label image (:mod:`datasets.fields.store`). Ground truth for demo and benchmark fields
comes as ``truth[(field key, object label)]`` (:func:`datasets.fields.store.read_truth_csv`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pandas as pd

from datasets import cells as cell_table
from datasets.config import IngestConfig
from datasets.crops.ingest import (
    IngestReport,
    channel_names,
    check_existing,
    normalisation_ranges,
    part_entry,
    save_part,
)
from datasets.crops.resize import widest_dtype
from datasets.errors import DataError
from datasets.fields.files import FIELD_COLUMNS, field_header, ome_channel_names
from datasets.fields.ome import OME_COLUMN, FieldImages
from datasets.fields.sizes import chosen_crop_size, hint_one_file_per_channel
from datasets.fields.spec import FieldSpec
from datasets.fields.store import (
    FIELD_TABLE,
    existing_fields,
    write_fields_table,
)
from datasets.fields.tasks import Segmenter
from datasets.pixels.plates import FileRows, PartPixels, PartView, segment_records, store_part
from datasets.progress import Progress
from datasets.words import count

if TYPE_CHECKING:
    from datasets.fields.tasks import FieldResult
    from datasets.parallel import Runner

logger = logging.getLogger(__name__)

Truth = Mapping[tuple[str, int], str]
_RESERVED = set(cell_table.BASE_COLUMNS) | set(FIELD_COLUMNS) | set(FIELD_TABLE)
PIXELS_TMP = "pixels/.field-chunks"  # where field tasks on a cluster leave their arrays


@dataclass
class _Run:
    """One :func:`ingest_fields` call: settings, open output files and what was read so far."""

    project: Path
    cfg: IngestConfig
    report: IngestReport
    segmenter: Segmenter
    keep_border: bool
    truth: Truth
    n_channels: int
    dtype: np.dtype
    first_index: int  # fields.parquet index of this ingest's first field
    crops: BinaryIO  # raw (C, S, S) crops, appended field by field
    masks: BinaryIO  # raw (S, S) uint8 object masks
    specs: list[FieldSpec]  # the planned fields, in order
    cells: list[pd.DataFrame] = field(default_factory=list)
    fields: list[dict[str, Any]] = field(default_factory=list)
    n_cells: int = 0
    n_border: int = 0  # objects left out for touching a field's border
    n_touching: int = 0  # objects touching a field's border, kept or left out
    n_small: int = 0  # objects segmentation left out as too small
    n_large: int = 0  # ... and as too large
    ome: FieldImages | None = None  # writes the fields' OME-Zarr (made at the first field)


@dataclass(frozen=True)
class FieldInput:
    """Whole fields to ingest, and how their objects are found and kept."""

    fields: list[FieldSpec]  # from datasets.fields.files.find_fields or a CellProfiler export
    #: ``(C, H, W) field -> (H, W) integer labels`` for fields without a mask or objects;
    #: None: classical segmentation (datasets.segmentation.segment_field). A DataError it
    #: raises skips that field
    segmenter: Segmenter | None = None
    keep_border: bool = False  # keep objects touching a field's border (left out by default)
    #: ground truth per ``(field key, object label)`` (datasets.fields.store.read_truth_csv)
    truth: Truth | None = None

    @classmethod
    def of(cls, fields: list[FieldSpec] | FieldInput) -> FieldInput:
        """``fields`` as an input: a bare list is segmented classically, borders left out."""
        return fields if isinstance(fields, FieldInput) else cls(list(fields))


def ingest_fields(
    fields: list[FieldSpec] | FieldInput,
    project_dir: Path,
    cfg: IngestConfig | None = None,
    *,
    progress: Progress | None = None,
    seed: int = 0,
    runner: Runner | None = None,
) -> IngestReport:
    """Turn the objects of whole fields into cells: a new part of the project.

    Args:
        fields: the fields (:func:`datasets.fields.files.find_fields`, or a CellProfiler
            export), or a :class:`FieldInput`: the fields, their segmenter, border objects
            kept or not, and ground truth.
        project_dir: project folder; cells.parquet, pixels/ and fields.parquet go here.
        cfg: crop size, normalisation and channel names (``scale`` and
            ``keep_empty_channels`` do not apply: fields are cropped as they are).
        progress: called as ``progress(fields_done, fields_total)``.
        seed: seeds the sample the normalisation ranges are computed from.
        runner: where fields are read, segmented and cropped (:mod:`datasets.parallel`, one
            task per field); this process when None, or when the segmenter cannot be sent to
            other processes (a U-Net closure). Same cells either way.

    Returns:
        The report: counts, skipped fields and files with reasons, border objects left out.

    Raises:
        DataError: no field given or readable, no object in any field, more than
            ``cfg.max_channels`` channels, or a crop size or channel count other than the
            project's.
    """
    source = FieldInput.of(fields)
    fields, segmenter = source.fields, source.segmenter
    keep_border, truth = source.keep_border, source.truth
    cfg = cfg or IngestConfig()
    project = Path(project_dir)
    manifest = cell_table.read_manifest(project)
    if cfg.crop_size is None and manifest:  # adding: the project's crop size
        cfg = dataclasses.replace(cfg, crop_size=int(manifest["crop_size"]))
    check_existing(project, manifest, cfg)
    report = IngestReport(crop_size=cfg.crop_size or 0, layout="whole fields")
    report.labels_csv = "truth per field object" if truth else None
    existing = existing_fields(project)
    planned, n_channels, dtype = _plan(fields, manifest, existing, cfg, report)
    hint_one_file_per_channel(planned, n_channels, report)
    cfg = _names_from_ome(cfg, manifest, planned, n_channels, report)
    if cfg.crop_size is None:
        size = chosen_crop_size(planned, segmenter or _classical(), report)
        cfg = dataclasses.replace(cfg, crop_size=size)
        report.crop_size = cfg.crop_px
    truth = _follow_renames(truth or {}, fields, planned)
    part = len(manifest["parts"]) if manifest else 0
    pixels_dir = project / cell_table.PIXELS_DIR
    pixels_dir.mkdir(parents=True, exist_ok=True)
    raw, raw_masks = (
        pixels_dir / f".part-{part:04d}.raw.tmp",
        pixels_dir / f".mask-{part:04d}.raw.tmp",
    )
    try:
        with open(raw, "wb") as crops, open(raw_masks, "wb") as masks:
            run = _Run(project, cfg, report, segmenter or _classical(), keep_border, truth,
                       n_channels, dtype, len(existing), crops, masks, planned)  # fmt: skip
            _run_fields(run, part, runner, progress)
        _check_some_cells(run, fields)
        size = cfg.crop_px
        table = _cell_table(run, part, manifest is not None)
        written = PartPixels(run.n_cells, (n_channels, size, size), np.dtype(dtype),
                             FileRows(raw, (n_channels, size, size), np.dtype(dtype)),
                             FileRows(raw_masks, (size, size), np.dtype(np.uint8)))  # fmt: skip
        rows, segments = store_part(project, part, written, table.get("plate"), runner)
        table["row"] = rows
        cell_table.release_arrow_memory()
        view = PartView(pixels_dir, segments)
        ranges = normalisation_ranges(cfg, report, table, view, seed)
        _fill_report(run, table, part)
        write_fields_table(project, existing, run.fields)
        root = os.path.commonpath([str(p.parent) for s in planned for p in s.channel_files])
        entry = part_entry(report, cfg, root=root, source_channels=n_channels,
                           keep=list(range(n_channels)), ranges=ranges)  # fmt: skip
        entry["segments"] = segment_records(segments)
        save_part(project, manifest, cfg.crop_px, table, entry)
    finally:
        raw.unlink(missing_ok=True)
        raw_masks.unlink(missing_ok=True)
    logger.info("field ingest finished:\n%s", report.summary())
    return report


def _names_from_ome(
    cfg: IngestConfig,
    manifest: dict[str, Any] | None,
    planned: list[FieldSpec],
    n_channels: int,
    report: IngestReport,
) -> IngestConfig:
    """A new project of OME-TIFF fields without ``--channels`` takes the channel names of the
    first field's OME metadata (when there is one per channel)."""
    first = planned[0].channel_files
    if cfg.channel_names or manifest or len(first) != 1:
        return cfg
    names = ome_channel_names(first[0])
    if names is None or len(names) != n_channels:
        return cfg
    report.notes.append(
        f"Channel names from the OME metadata of {first[0].name}: {', '.join(names)} "
        "(--channels overrides)"
    )
    return dataclasses.replace(cfg, channel_names=names)


#: Cells a field is assumed to hold when deciding whether a local cluster is worth starting.
_CELLS_PER_FIELD = 1000


def _run_fields(
    run: _Run, part: int, runner: Runner | None, progress: Callable[[int, int], None] | None
) -> None:
    """Read, segment and crop every planned field as tasks; append them in field order."""
    import pickle

    from datasets.fields.tasks import FieldJob, process_field
    from datasets.parallel import Runner

    try:
        pickle.dumps(run.segmenter)
    except (pickle.PicklingError, AttributeError, TypeError):
        runner = None  # a closure (the U-Net segmenter) stays in this process
    own = runner is None
    runner = runner or Runner()
    n_guess = len(run.specs) * _CELLS_PER_FIELD
    chunks = None if runner.config.in_process(n_guess) else run.project / PIXELS_TMP
    if chunks is not None:
        chunks.mkdir(parents=True, exist_ok=True)
    jobs = [FieldJob(i, spec, run.n_channels, str(run.dtype), run.cfg.crop_px,
                     run.keep_border, run.segmenter, str(chunks) if chunks else None)
            for i, spec in enumerate(run.specs)]  # fmt: skip
    try:
        runner.map(process_field, jobs, progress=progress, n_cells=n_guess,
                   consume=lambda _, result: _append_field(run, result, part))  # fmt: skip
    finally:
        if own:
            runner.close()
        if chunks is not None:
            shutil.rmtree(chunks, ignore_errors=True)


def _classical() -> Segmenter:
    from datasets.segmentation.classical import ClassicalSegmenter

    return ClassicalSegmenter()


#: Peak memory of reading, segmenting and measuring a field, per byte of its pixels: measured
#: 14x (a 1-channel uint16 field of 8000x8000: 128 MB of pixels, 1.9 GB peak; 12000x12000:
#: 288 MB, 4.0 GB).
PEAK_PER_PIXEL_BYTE = 15


def available_memory() -> int | None:
    """Bytes of memory free now (Linux ``sysconf``), or None where that cannot be read."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _refuse_what_cannot_fit(spec: FieldSpec, header: Any) -> None:
    """Refuse, before any pixel is read, a field whose ingest would need more memory than is
    free (:data:`PEAK_PER_PIXEL_BYTE` times its pixels' bytes): better a line now than the
    machine running out half-way.

    Raises:
        DataError: naming the field's file, its size and what it would need.
    """
    free = available_memory()
    size = header.height * header.width * header.channels * np.dtype(header.dtype).itemsize
    need = PEAK_PER_PIXEL_BYTE * size
    if free is not None and need > free:
        raise DataError(
            f"{spec.channel_files[0]}: a {header.height}x{header.width} field needs about "
            f"{need / 2**30:.1f} GiB to segment and measure, {free / 2**30:.1f} GiB is free; "
            "tile it into smaller fields (or free memory)"
        )


def _plan(
    fields: list[FieldSpec],
    manifest: dict[str, Any] | None,
    existing: pd.DataFrame,
    cfg: IngestConfig,
    report: IngestReport,
) -> tuple[list[FieldSpec], int, np.dtype]:
    """Fields to read (headers readable, channel count of the first field or the project),
    with keys made unique against the project; their channel count and storage dtype."""
    if not fields:
        raise DataError("no fields given; point to a folder of fields or a CellProfiler export")
    n_channels = int(manifest["n_channels"]) if manifest else None
    taken = set(existing["key"]) if len(existing) else set()
    fields = _drop_already_ingested(fields, existing, report)
    planned, dtypes = [], []
    for spec in fields:
        try:
            header = field_header(spec)
        except DataError as err:
            report.skipped.append((spec.key, str(err)))
            continue
        if n_channels is None:
            n_channels = header.channels
            if n_channels > cfg.max_channels:
                raise DataError(
                    f"{spec.channel_files[0]}: field has {n_channels} channels, at most "
                    f"{cfg.max_channels} are supported; save fewer channels per field"
                )
            channel_names(cfg, n_channels, list(range(n_channels)))  # names fit, or raise now
        if header.channels != n_channels:
            whose = "the project stores" if manifest else "the first field has"
            report.skipped.append((spec.key, f"{header.channels} channels; {whose} {n_channels}"))
            continue
        _refuse_what_cannot_fit(spec, header)
        planned.append(_unique_key(spec, taken, report))
        dtypes.append(header.dtype)
    if not planned or n_channels is None:
        first = f"; e.g. {report.skipped[0][0]}: {report.skipped[0][1]}" if report.skipped else ""
        where = f"{Path(fields[0].channel_files[0]).parent}: " if fields else ""
        raise DataError(f"{where}no readable field among {len(fields)}{first}")
    by_dtype = {str(d): spec.key for d, spec in zip(dtypes, planned, strict=True)}
    if len(by_dtype) > 1:
        kinds = ", ".join(f"{d} (e.g. {key})" for d, key in by_dtype.items())
        report.notes.append(
            f"Mixed bit depths ({kinds}) stored as {widest_dtype(dtypes)} without rescaling: a "
            "pixel value means the same in every field, so an 8-bit field looks dark beside "
            "16-bit ones. If they come from one instrument, convert them to one bit depth"
        )
    return planned, n_channels, widest_dtype(dtypes)


def _drop_already_ingested(
    fields: list[FieldSpec], existing: pd.DataFrame, report: IngestReport
) -> list[FieldSpec]:
    """``fields`` without those whose files the project already holds (a folder added again,
    or an instrument that keeps writing into one folder), with a note.

    Raises:
        DataError: when every field is already in the project.
    """
    if not len(existing):
        return fields

    def files(paths: Any) -> tuple[str, ...]:
        return tuple(str(Path(p).resolve()) for p in paths)

    held = {files(paths) for paths in existing["channel_files"]}
    is_held = [files(spec.channel_files) in held for spec in fields]
    new = [spec for spec, h in zip(fields, is_held, strict=True) if not h]
    old = [spec.key for spec, h in zip(fields, is_held, strict=True) if h]
    if not new:
        where = Path(fields[0].channel_files[0]).parent
        raise DataError(
            f"{where}: all {len(old)} fields are already in the project (e.g. {old[0]}); "
            "nothing to add"
        )
    if old:
        report.notes.append(
            f"Left out {len(old)} fields already in the project (e.g. {old[0]}); "
            f"added the {len(new)} new"
        )
    return new


def _follow_renames(truth: Truth, fields: list[FieldSpec], planned: list[FieldSpec]) -> Truth:
    """``truth`` also under the keys of fields stored under a new key (their key was taken)."""
    original = {spec.channel_files: spec.key for spec in fields}
    renamed = {original[s.channel_files]: s.key for s in planned}
    renamed = {old: new for old, new in renamed.items() if old != new}
    if not renamed or not truth:
        return truth
    moved = {(renamed[k], o): v for (k, o), v in truth.items() if k in renamed}
    return {**truth, **moved}


def _unique_key(spec: FieldSpec, taken: set[str], report: IngestReport) -> FieldSpec:
    key, k = spec.key, 1
    while key in taken:
        k += 1
        key = f"{spec.key}.{k}"
    taken.add(key)
    if key != spec.key:
        report.notes.append(f"Field {spec.key} is already in the project; stored as {key}")
        return dataclasses.replace(spec, key=key)
    return spec


def _append_field(run: _Run, result: FieldResult, part: int) -> None:
    """Append one field's result (in field order): crops, masks, its pixels and label image
    (OME-Zarr, :mod:`datasets.fields.ome`), cell rows."""
    from datasets.fields.tasks import load_array

    run.report.notes.extend(result.notes)
    run.report.non_finite.extend(result.non_finite)
    if result.skipped is not None:
        run.report.skipped.append((result.key, result.skipped))
        logger.warning("skipped field %s: %s", result.key, result.skipped)
        return
    spec, kept = run.specs[result.number], result.kept
    assert kept is not None  # set whenever the field was not skipped
    index = run.first_index + len(run.fields)
    image, labels = load_array(result.image), load_array(result.labels)
    assert image is not None  # set whenever the field was not skipped
    ome_rel, mask_rel = _field_images(run).add(index, spec.key, spec.metadata, image, labels)
    n_border = result.n_objects - len(kept)  # left out at the border (none with keep_border)
    run.n_border += n_border
    run.n_touching += int(kept["touches_border"].sum()) + n_border  # kept or left out
    run.n_small += result.dropped[0]
    run.n_large += result.dropped[1]
    if result.n_objects == 0:
        run.report.skipped.append((spec.key, "no objects found (empty field)"))
    crops, masks = load_array(result.crops), load_array(result.masks)
    run.crops.write(np.ascontiguousarray(crops).tobytes())
    run.masks.write(np.ascontiguousarray(masks).tobytes())
    for path in (result.crops, result.masks, result.labels, result.image):
        if isinstance(path, str):
            Path(path).unlink(missing_ok=True)
    run.cells.append(_cell_rows(run, spec, kept))
    run.n_cells += len(kept)
    run.fields.append({
        "index": index, "key": spec.key, "part": part,
        "channel_files": [str(p) for p in spec.channel_files],
        "height": result.height, "width": result.width, "n_objects": result.n_objects,
        "n_kept": len(kept), "n_border": n_border, "mask": mask_rel,
        "mask_file": str(spec.mask_file or ""), OME_COLUMN: ome_rel, **_metadata(spec),
    })  # fmt: skip


def _field_images(run: _Run) -> FieldImages:
    """The run's OME-Zarr writer; its wells continue after the project's fields so far."""
    if run.ome is None:
        known = existing_fields(run.project).get(OME_COLUMN, pd.Series(dtype=object))
        names = channel_names(run.cfg, run.n_channels, list(range(run.n_channels)))
        run.ome = FieldImages(run.project, names, [p for p in known if isinstance(p, str)])
    return run.ome


def _metadata(spec: FieldSpec) -> dict[str, str]:
    """The field's metadata as strings; a name clashing with a table column gets ``meta_``."""
    return {(f"meta_{k}" if k in _RESERVED else k): str(v) for k, v in spec.metadata.items()}


def _cell_rows(run: _Run, spec: FieldSpec, kept: pd.DataFrame) -> pd.DataFrame:
    """The cell-table rows of one field's kept objects (cell_id, part and row come later)."""
    objects = kept["object"].to_numpy(np.int64)
    size = run.cfg.crop_px
    height = (kept["bbox_max_row"] - kept["bbox_min_row"]).fillna(size).to_numpy(np.int64)
    width = (kept["bbox_max_col"] - kept["bbox_min_col"]).fillna(size).to_numpy(np.int64)
    truth = [run.truth.get((spec.key, int(o))) for o in objects]
    rows = pd.DataFrame({
        "source": [f"{spec.key}#{o}" for o in objects],
        "height": height, "width": width,
        "truth": pd.Series(truth, dtype="str"), "field": spec.key,
    })  # fmt: skip
    rows = pd.concat([rows, kept.reset_index(drop=True)], axis=1)
    for name, value in _metadata(spec).items():
        rows[name] = value
    return rows


def _check_some_cells(run: _Run, fields: list[FieldSpec]) -> None:
    if run.n_cells:
        return
    skipped = run.report.skipped
    first = f"; e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
    border = f", {run.n_border} touching the border left out" if run.n_border else ""
    raise DataError(f"no cells in {count(len(fields), 'field')}{border}{first}; check the fields")


def _cell_table(run: _Run, part: int, has_cells: bool) -> pd.DataFrame:
    """The part's cell table: base columns, field columns, metadata, carried columns."""
    table = pd.concat([c for c in run.cells if len(c)], ignore_index=True)
    existing: set[str] = set()
    if has_cells:
        existing = set(cell_table.read_cells(run.project, ["cell_id"])["cell_id"])
    table["cell_id"] = cell_table.make_cell_ids(table["source"].tolist(), existing)
    table["part"] = np.int64(part)
    table["row"] = np.arange(len(table), dtype=np.int64)
    first = [*cell_table.BASE_COLUMNS, *FIELD_COLUMNS]
    return table[first + [c for c in table.columns if c not in first]]


def _fill_report(run: _Run, table: pd.DataFrame, part: int) -> None:
    report, n_channels = run.report, run.n_channels
    report.part, report.n_files, report.n_cells = part, len(run.fields), len(table)
    report.n_channels, report.dtype = n_channels, str(run.dtype)
    report.channel_names = channel_names(run.cfg, n_channels, list(range(n_channels)))
    counts = table["truth"].value_counts()
    report.class_counts = {str(k): int(v) for k, v in counts.items()}
    what = "kept (keep_border)" if run.keep_border else "left out (keep_border keeps them)"
    report.notes.insert(0, f"{count(len(run.fields), 'field')} read; "
                           f"{count(run.n_touching, 'object')} touching the field border "
                           f"{what}")  # fmt: skip
    from datasets.segmentation.classical import Dropped

    dropped = Dropped(run.n_small, run.n_large).note()
    if dropped:
        report.notes.insert(1, dropped)

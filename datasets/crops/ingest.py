"""Ingest a folder of single-cell crops into a project: cell table plus pixel store.

Two streaming passes over the files keep memory flat however many crops there are:

1. read headers (shape, dtype, layout) to size the pixel array and find odd files
   (:mod:`datasets.crops.plan`);
2. read pixels file by file, pad or centre-crop them to ``crop_size`` and write them through a
   memory-mapped window into a temporary ``.npy`` in the pixels folder.

Afterwards the temporary file is copied, leaving out the all-zero channels (and rows of files
that failed in pass 2), into sharded Zarr arrays: each plate's cells appended to the plate's
array, cells without a plate into ``pixels/part-NNNN.zarr`` (:mod:`datasets.pixels.plates`);
per-channel normalisation ranges are computed from a seeded random sample of
up to 2,000 cells per group (dataset or plate), and ``parts.json`` and ``cells.parquet`` are
written atomically.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from datasets import cells as cell_table
from datasets.config import CropSource, IngestConfig, default_channels
from datasets.crops.plan import Context, Entry, load_csvs, resolve_scale, scan, skip
from datasets.crops.report import IngestReport
from datasets.crops.resize import DEFAULT_CROP_SIZE, stored_boxes, widest_dtype
from datasets.errors import DataError
from datasets.parallel import Runner
from datasets.pixels.npy import PartWriter, part_header
from datasets.pixels.plates import FileRows, PartPixels, PartView, segment_records, store_part
from datasets.pixels.ranges import Placement, RowArray, part_ranges
from datasets.progress import Progress

logger = logging.getLogger(__name__)

SAMPLE_PER_GROUP = 2000  # cells per group (dataset or plate) sampled for normalisation ranges
#: Bumped when the same crops ingest to other pixels (simulation caches are keyed on it): 2, the
#: normalisation ranges from the crops' own pixels; 3, the scale from the cells' sizes.
INGEST_VERSION = 3


def ingest_crops(
    src: Path | CropSource,
    project_dir: Path,
    cfg: IngestConfig | None = None,
    *,
    progress: Progress | None = None,
    seed: int = 0,
    runner: Runner | None = None,
) -> IngestReport:
    """Read a folder of single-cell crops into the project's cell table and pixel store.

    Calling it again on a project that has cells adds a new part (e.g. a new plate): its
    channel count (after dropping) and crop size must match the existing ones.

    Args:
        src: folder of TIFF/PNG/JPEG/npz crops, searched recursively, or a
            :class:`~datasets.config.CropSource` naming its ``path,label`` ground truth and
            ``path`` + metadata CSVs (default ``labels.csv`` and ``metadata.csv`` in the
            folder, if present).
        project_dir: existing project folder; ``cells.parquet`` and ``pixels/`` go here.
        cfg: crop size, scale, channel handling and normalisation settings.
        progress: called as ``progress(cells_done, cells_total)`` while pixels are written.
        seed: seeds the sample of cells the normalisation ranges are computed from.
        runner: where reading and fitting run (:mod:`datasets.parallel`); in this process
            when None. Same cells and pixels either way.

    Returns:
        The :class:`IngestReport` (also logged).

    Raises:
        DataError: missing/empty folder, no readable file, bad CSV, too many channels, or a
            part that does not match the project's existing channels or crop size.
    """
    source = CropSource.of(src)
    cfg = cfg or IngestConfig()
    project = Path(project_dir)
    manifest = cell_table.read_manifest(project)
    if cfg.crop_size is None:  # the project's, else the default (large crops get a scale)
        size = manifest["crop_size"] if manifest else DEFAULT_CROP_SIZE
        cfg = replace(cfg, crop_size=int(size))
    report = IngestReport(crop_size=cfg.crop_px)
    ctx = Context(Path(source.folder).resolve(), project, cfg, report, manifest, runner=runner,
                  pattern=source.pattern)  # fmt: skip
    check_existing(project, manifest, cfg)
    load_csvs(ctx, source.labels_csv, source.metadata_csv)
    scan(ctx)
    cfg = ctx.cfg = resolve_scale(ctx)
    dtype = widest_dtype([e.header.dtype for e in ctx.entries])
    part = len(ctx.manifest["parts"]) if ctx.manifest else 0
    (project / cell_table.PIXELS_DIR).mkdir(parents=True, exist_ok=True)
    tmp = project / cell_table.PIXELS_DIR / f".part-{part:04d}.npy.tmp"
    try:
        nonzero = _write_pixels(ctx, tmp, dtype, progress)
        keep = _choose_channels(ctx, nonzero)
        written = _written_rows(ctx, tmp, keep)
        table = _build_table(ctx, part)
        rows, segments = store_part(project, part, written, table.get("plate"), ctx.runner)
        table["row"] = rows
    finally:
        tmp.unlink(missing_ok=True)
    cell_table.release_arrow_memory()
    view = PartView(project / cell_table.PIXELS_DIR, segments)
    ranges = normalisation_ranges(cfg, report, table, view, seed)
    _fill_report(ctx, table, part, dtype, keep)
    n_source = ctx.entries[0].header.channels
    entry = part_entry(report, cfg, root=str(ctx.src), source_channels=n_source, keep=keep,
                       ranges=ranges)  # fmt: skip
    entry["segments"] = segment_records(segments)
    save_part(project, manifest, cfg.crop_px, table, entry)
    logger.info("ingest finished:\n%s", report.summary())
    return report


def check_existing(project: Path, manifest: dict[str, Any] | None, cfg: IngestConfig) -> None:
    """In a project with cells, check the crop size; refuse a half-written project.

    Raises:
        DataError: cells without a pixel manifest, or a crop size other than the project's.
    """
    has_cells = (project / cell_table.CELLS_FILE).is_file()
    if manifest is None:
        if has_cells:
            raise DataError(
                f"{project}: has cells.parquet but no pixels/parts.json; the project was "
                "not created by an ingest, start a new project"
            )
        return
    if manifest["crop_size"] != cfg.crop_size:
        raise DataError(
            f"{project}: stores {manifest['crop_size']}-pixel crops, cannot add "
            f"{cfg.crop_size}-pixel crops; set crop_size={manifest['crop_size']}"
        )


def _write_pixels(
    ctx: Context, tmp: Path, dtype: np.dtype, progress: Progress | None
) -> npt.NDArray[np.bool_]:
    """Pass 2: fit every crop and write it, as tasks over runs of files
    (:mod:`datasets.crops.tasks`); returns which source channels hold any nonzero."""
    from datasets.crops.tasks import CHUNK_CELLS, FileJob, PixelChunk, chunk_files, write_chunk

    size, n_channels = ctx.cfg.crop_px, ctx.entries[0].header.channels
    total = sum(e.header.n for e in ctx.entries)
    PartWriter(tmp, (total, n_channels, size, size), dtype).close()  # full size, zeros
    jobs = [FileJob(str(e.path), e.rel, (e.header.n, e.header.channels, e.header.height,
                                         e.header.width), e.first_row,
                    tuple(str(f) for f in e.channel_files))
            for e in ctx.entries]  # fmt: skip
    runner = ctx.runner or Runner()
    local = runner.config.in_process(total)  # in process: a task per file, progress per file
    runs = chunk_files(jobs, 1 if local else CHUNK_CELLS)
    scale = float(ctx.cfg.scale or 1.0)  # a number once resolve_scale ran
    chunks = [PixelChunk(str(tmp), str(np.dtype(dtype)), size, scale, tuple(r))
              for r in runs]  # fmt: skip
    try:
        results = runner.map(write_chunk, chunks, progress=progress,
                             weights=[sum(j.shape[0] for j in r) for r in runs])  # fmt: skip
    finally:
        if ctx.runner is None:
            runner.close()
    nonzero = np.zeros(n_channels, dtype=bool)
    failed: set[str] = set()
    for result in results:
        nonzero |= result.nonzero
        ctx.report.non_finite.extend(result.non_finite)
        for rel, reason in result.failed:
            failed.add(rel)
            skip(ctx, ctx.src / rel, reason)
    for entry in ctx.entries:
        entry.ok = entry.rel not in failed
    if not any(e.ok for e in ctx.entries):
        first = ctx.report.skipped[-1]
        raise DataError(
            f"{ctx.src}: no readable image; every file failed, e.g. {first[0]}: {first[1]}"
        )
    return nonzero


def _choose_channels(ctx: Context, nonzero: npt.NDArray[np.bool_]) -> list[int]:
    """Source channels to store: all-zero ones dropped unless kept; must match earlier parts."""
    n_source = len(nonzero)
    keep = [c for c in range(n_source) if nonzero[c] or ctx.cfg.keep_empty_channels]
    if not keep:
        raise DataError(
            f"{ctx.src}: every channel is zero in every image; check the files "
            "(set keep_empty_channels=True to store them anyway)"
        )
    first = ctx.manifest["parts"][0] if ctx.manifest else None
    if first is not None and first["source_channels"] == n_source:
        lost = [c for c in range(n_source) if nonzero[c] and c not in first["channels_kept"]]
        if lost:
            raise DataError(
                f"{ctx.src}: channel(s) {lost} hold data but were dropped as all zero in "
                "part 0; re-ingest all parts with keep_empty_channels=True"
            )
        keep = list(first["channels_kept"])
    if ctx.manifest and len(keep) != ctx.manifest["n_channels"]:
        raise DataError(
            f"{ctx.src}: {len(keep)} channels after dropping empty ones, the project stores "
            f"{ctx.manifest['n_channels']}; add only crops with the same channels"
        )
    return keep


def _written_rows(ctx: Context, tmp: Path, keep: list[int]) -> PartPixels:
    """The rows and channels that stay of the temporary ``.npy`` (files that failed and
    all-zero channels go), in the order of the cell table to be built."""
    ok_rows = np.repeat([e.ok for e in ctx.entries], [e.header.n for e in ctx.entries])
    header = part_header(tmp)
    if not ok_rows.all():
        ctx.entries = [e for e in ctx.entries if e.ok]
        row = 0
        for entry in ctx.entries:
            entry.first_row, row = row, row + entry.header.n
    source = None if ok_rows.all() else np.flatnonzero(ok_rows)
    reader = FileRows(tmp, header.shape[1:], header.dtype, header.offset, source, tuple(keep))
    row_shape = (len(keep), *header.shape[2:])
    return PartPixels(int(ok_rows.sum()), row_shape, header.dtype, reader)


def _build_table(ctx: Context, part: int) -> pd.DataFrame:
    """The new part's rows of the cell table (ids unique against existing cells)."""
    entries = [e for e in ctx.entries if e.ok]
    sources = _sources(entries)
    root = str(ctx.src)
    keys, files = cell_table.source_keys(root, sources)
    existing: set[str] = set()
    if ctx.manifest is not None:
        existing = set(cell_table.read_cells(ctx.project, ["cell_id"])["cell_id"])
    n_per = [e.header.n for e in entries]
    table = pd.DataFrame(
        {
            "cell_id": cell_table.make_cell_ids(sources, existing),
            "source": sources,
            "part": np.full(len(sources), part, dtype=np.int64),
            "row": np.arange(len(sources), dtype=np.int64),
            "height": np.repeat([e.header.height for e in entries], n_per).astype(np.int64),
            "width": np.repeat([e.header.width for e in entries], n_per).astype(np.int64),
            "truth": _npz_truth(entries),
        }
    )
    if any(e.metadata for e in entries):  # the pattern's placeholders; metadata.csv overrides
        for name in entries[0].metadata:
            table[name] = np.repeat([e.metadata.get(name, "") for e in entries], n_per)
    skipped = [f"{root}/{f}" for f, _ in ctx.report.skipped]
    if ctx.labels is not None:  # labels.csv overrides npz labels
        labels, note = cell_table.match_csv(ctx.labels, keys, files, skipped)
        table["truth"] = labels["label"].where(labels["label"].notna(), table["truth"])
        ctx.report.notes.extend([note] if note else [])
    if ctx.metadata is not None:
        metadata, note = cell_table.match_csv(ctx.metadata, keys, files, skipped)
        from_pattern = set(entries[0].metadata)
        table = table.drop(columns=[c for c in metadata.columns if c in from_pattern])
        table = pd.concat([table, metadata.astype("str")], axis=1)
        ctx.report.notes.extend([note] if note else [])
    return table


def _sources(entries: list[Entry]) -> list[str]:
    """Each cell's source: the relative path, ``file.npz#i`` for npz members."""
    sources: list[str] = []
    for e in entries:
        if e.path.suffix.lower() == ".npz":
            sources.extend(f"{e.rel}#{i}" for i in range(e.header.n))
        else:
            sources.append(e.rel)
    return sources


def _npz_truth(entries: list[Entry]) -> pd.Series:
    """Ground truth from npz ``labels`` arrays; missing for every other cell."""
    parts = [
        e.labels.astype(str) if e.labels is not None else np.full(e.header.n, None, dtype=object)
        for e in entries
    ]
    return pd.Series(np.concatenate(parts), dtype="str")


def _group_labels(cfg: IngestConfig, report: IngestReport, table: pd.DataFrame) -> pd.Series | None:
    """Each cell's plate when normalising per plate (missing plate = ""), else None."""
    by = cfg.normalise_by
    has_plate = "plate" in table.columns
    if by == "plate" and not has_plate:
        raise DataError(
            f"normalise_by='plate' needs a 'plate' column in metadata.csv "
            f"({report.metadata_csv or 'none given'}); add one or use normalise_by='dataset'"
        )
    per_plate = by == "plate" or (by == "auto" and has_plate)
    report.normalise_by = "plate" if per_plate else "dataset"
    if report.normalise_by == "dataset":
        return None
    return table["plate"].fillna("").astype(str)


def normalisation_ranges(
    cfg: IngestConfig, report: IngestReport, table: pd.DataFrame, part: RowArray, seed: int
) -> dict[str, list[list[float]]]:
    """Per-group (C, 2) ranges of the part's crops ``part`` (cells at the table's ``row``)
    from a seeded sample of up to 2,000 cells per group (per plate when ``table`` has a plate
    column and ``cfg`` allows it); records the grouping and flat channels in ``report``."""
    groups = _group_labels(cfg, report, table)
    rng = np.random.default_rng(seed)
    boxes = stored_boxes(table["height"], table["width"], float(cfg.scale or 1.0), cfg.crop_px)
    place = Placement(table["row"].to_numpy(np.int64), boxes)
    ranges, flat = part_ranges(part, groups, cfg.percentiles, rng, SAMPLE_PER_GROUP, place)
    report.flat_channels = sorted({c for channels in flat.values() for c in channels})
    if groups is not None:
        report.notes.extend(
            f"Plate {name!r}: flat channel(s) {chans}" for name, chans in flat.items() if chans
        )
    return ranges


def channel_names(cfg: IngestConfig, n_source: int, keep: list[int]) -> tuple[str, ...]:
    names = cfg.channel_names
    if names and len(names) == n_source != len(keep):
        names = tuple(names[c] for c in keep)
    return tuple(spec.name for spec in default_channels(len(keep), names))


def _fill_report(
    ctx: Context, table: pd.DataFrame, part: int, dtype: np.dtype, keep: list[int]
) -> None:
    report, n_source = ctx.report, ctx.entries[0].header.channels
    layouts = Counter(e.header.layout for e in ctx.entries)
    n_files = sum(len(e.channel_files) or 1 for e in ctx.entries)  # one per channel, grouped
    report.part, report.n_files, report.n_cells = part, n_files, len(table)
    report.n_channels, report.dtype = len(keep), str(dtype)
    try:
        report.channel_names = channel_names(ctx.cfg, n_source, keep)
    except DataError as err:  # name the folder and a file, not only the count
        raise DataError(f"{ctx.src} (e.g. {ctx.entries[0].rel}): {err}") from err
    report.layout = (
        next(iter(layouts))
        if len(layouts) == 1
        else ", ".join(f"{k} ({v} file{'s' if v != 1 else ''})" for k, v in layouts.most_common())
    )
    report.dropped_channels = [c for c in range(n_source) if c not in keep]
    counts = table["truth"].value_counts()
    report.class_counts = {str(k): int(v) for k, v in counts.items()}
    by_dtype = Counter(str(e.header.dtype) for e in ctx.entries)
    if len(by_dtype) > 1:  # one dtype stored as another (int16 as float32) is not mixed
        odd = next(e.rel for e in ctx.entries if str(e.header.dtype) != str(dtype))
        counts = ", ".join(
            f"{n} file{'s' if n != 1 else ''} {d}" for d, n in by_dtype.most_common()
        )
        report.notes.append(
            f"Mixed bit depths ({counts}; e.g. {odd}) stored as {dtype} without rescaling: a "
            "pixel value means the same in every file, so an 8-bit crop looks dark beside "
            "16-bit ones. If they come from one instrument, convert them to one bit depth"
        )
    if ctx.cfg.scale != 1.0 and not any(n.startswith("Crops larger") for n in report.notes):
        report.notes.append(f"Every image rescaled by {ctx.cfg.scale} before fitting")


def part_entry(
    report: IngestReport,
    cfg: IngestConfig,
    *,
    root: str,
    source_channels: int,
    keep: list[int],
    ranges: dict[str, list[list[float]]],
) -> dict[str, Any]:
    """The ``parts.json`` record of the part a filled-in ``report`` describes."""
    return {
        "part": report.part,
        "root": root,
        "dtype": report.dtype,
        "n_cells": report.n_cells,
        "layout": report.layout,
        "source_channels": source_channels,
        "channels_kept": keep,
        "channel_names": list(report.channel_names),
        "scale": cfg.scale,
        "percentiles": list(cfg.percentiles),
        "normalise_by": report.normalise_by,
        "group_column": "plate" if report.normalise_by == "plate" else None,
        "ranges": ranges,
    }


def save_part(
    project: Path,
    manifest: dict[str, Any] | None,
    crop_size: int,
    table: pd.DataFrame,
    entry: dict[str, Any],
) -> None:
    """Append the part to parts.json, then its cells to cells.parquet (both atomic).

    Args:
        project: the project folder.
        manifest: the existing parts.json (None for a new project).
        crop_size: crop side of the project.
        table: the new part's cell table rows.
        entry: the part's :func:`part_entry`.
    """
    existing = manifest
    manifest = manifest or {
        "format": cell_table.MANIFEST_FORMAT,
        "crop_size": crop_size,
        "n_channels": len(entry["channels_kept"]),
        "parts": [],
    }
    manifest["parts"].append(entry)
    manifest["format"] = cell_table.MANIFEST_FORMAT  # a format 2 project reads on in format 3
    cell_table.write_manifest(project, manifest)
    if existing is not None:
        table = pd.concat([cell_table.read_cells(project), table], ignore_index=True)
    cell_table.write_cells(project, table)

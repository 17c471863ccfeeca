"""Ingest a folder of single-cell crops into a project: cell table plus pixel store.

Two streaming passes over the files keep memory flat however many crops there are:

1. read headers (shape, dtype, layout) to size the pixel array and find odd files;
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from datasets import cells as cell_table
from datasets.config import CropSource, IngestConfig, default_channels
from datasets.crops.readers import (
    ImageHeader,
    find_images,
    read_header,
    read_image_file,
    read_npz_labels,
    scan_folder,
    skip_reason,
)
from datasets.crops.resize import (
    DEFAULT_CROP_SIZE,
    FIT_QUANTILE,
    choose_scale,
    stored_boxes,
    widest_dtype,
)
from datasets.errors import DataError
from datasets.parallel import Runner
from datasets.pixels.npy import PartWriter, part_header
from datasets.pixels.plates import FileRows, PartPixels, PartView, segment_records, store_part
from datasets.pixels.ranges import Placement, RowArray, part_ranges
from datasets.progress import Progress

logger = logging.getLogger(__name__)

SAMPLE_PER_GROUP = 2000  # cells per group (dataset or plate) sampled for normalisation ranges
_N_SHOWN = 5  # skipped files named in the summary


@dataclass
class IngestReport:
    """What an ingest did: counts, detected layout, dropped channels, skipped files."""

    n_files: int = 0  # files whose crops were stored
    n_cells: int = 0  # crops stored by this ingest
    n_channels: int = 0  # channels stored (after dropping all-zero ones)
    channel_names: tuple[str, ...] = ()
    dtype: str = ""  # storage dtype: uint8, uint16 or float32
    layout: str = ""  # detected layout(s), e.g. "channel-first" or "RGB (3), grey (2)"
    dropped_channels: list[int] = field(default_factory=list)  # source indices, all zero
    flat_channels: list[int] = field(default_factory=list)  # stored indices with high <= low
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    class_counts: dict[str, int] = field(default_factory=dict)  # ground-truth label counts
    normalise_by: str = "dataset"  # "dataset" or "plate", as resolved
    labels_csv: str | None = None
    metadata_csv: str | None = None
    part: int = 0  # which part of the project this ingest wrote
    crop_size: int = 0
    scale: float = 1.0  # the dataset-wide rescale factor applied (chosen when not given)
    notes: list[str] = field(default_factory=list)  # anything else worth telling the user
    #: (file, count) of files whose NaN / infinite pixels were replaced by the crop's median
    non_finite: list[tuple[str, int]] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines describing the ingest."""
        names = ", ".join(self.channel_names)
        lines = [
            f"Ingested {self.n_cells} cells from {self.n_files} files (part {self.part})",
            f"Channels: {self.n_channels} ({names}), {self.dtype}, layout {self.layout}, "
            f"crops {self.crop_size}x{self.crop_size}",
            "Normalised per channel over "
            + ("each plate" if self.normalise_by == "plate" else "the whole dataset"),
        ]
        if self.dropped_channels:
            lines.append(f"Dropped all-zero source channels: {self.dropped_channels}")
        if self.flat_channels:
            lines.append(f"Flat channels (no intensity range): {self.flat_channels}")
        if self.class_counts:
            counts = ", ".join(f"{k} {v}" for k, v in self.class_counts.items())
            lines.append(f"Ground truth ({self.labels_csv or 'npz labels'}): {counts}")
        if self.metadata_csv:
            lines.append(f"Metadata: {self.metadata_csv}")
        if self.skipped:
            n_more = len(self.skipped) - _N_SHOWN
            shown = "; ".join(f"{f} ({r})" for f, r in self.skipped[:_N_SHOWN])
            more = f" and {n_more} more" if n_more > 0 else ""
            lines.append(f"Skipped {len(self.skipped)} files: {shown}{more}")
        if self.non_finite:
            n_more = len(self.non_finite) - _N_SHOWN
            shown = "; ".join(f"{f} ({n})" for f, n in self.non_finite[:_N_SHOWN])
            more = f" and {n_more} more" if n_more > 0 else ""
            lines.append(
                f"NaN or infinite pixels replaced by the crop's median in "
                f"{len(self.non_finite)} files: {shown}{more}"
            )
        lines.extend(self.notes)
        return "\n".join(lines)


@dataclass(slots=True)
class _Entry:
    """One source file in the plan."""

    path: Path
    rel: str  # posix path relative to the crops root
    header: ImageHeader
    labels: npt.NDArray | None = None  # npz ground truth, (n,)
    first_row: int = 0  # row of its first crop in the part file being written
    ok: bool = True  # False once pass 2 failed to read it


@dataclass
class _Context:
    """Everything one ingest call works with; passed between the steps below."""

    src: Path
    project: Path
    cfg: IngestConfig
    report: IngestReport
    manifest: dict[str, Any] | None  # existing pixels/parts.json, None for a new project
    labels: cell_table.PathCsv | None = None  # labels.csv, one column "label"
    metadata: cell_table.PathCsv | None = None
    entries: list[_Entry] = field(default_factory=list)
    runner: Runner | None = None  # where pass 2 runs (datasets.parallel); in process if None


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
    ctx = _Context(Path(source.folder).resolve(), project, cfg, report, manifest, runner=runner)
    check_existing(project, manifest, cfg)
    _load_csvs(ctx, source.labels_csv, source.metadata_csv)
    _scan(ctx)
    cfg = ctx.cfg = _resolve_scale(ctx)
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


def _resolve_csv(src: Path, given: Path | None, name: str, report: IngestReport) -> Path | None:
    if given is not None:
        if not Path(given).is_file():
            raise DataError(f"{given}: {name} does not exist; pass an existing CSV or none")
        return Path(given)
    found = src / name
    if found.is_file():
        report.notes.append(f"Used {name} found at the root of the crops folder")
        return found
    return None


def _load_csvs(ctx: _Context, labels_csv: Path | None, metadata_csv: Path | None) -> None:
    if not ctx.src.is_dir():
        scan_folder(ctx.src)  # raises the folder error
    labels_path = _resolve_csv(ctx.src, labels_csv, "labels.csv", ctx.report)
    metadata_path = _resolve_csv(ctx.src, metadata_csv, "metadata.csv", ctx.report)
    if labels_path is not None:
        ctx.labels = cell_table.read_labels_csv(labels_path)
        ctx.report.labels_csv = str(labels_path)
    if metadata_path is not None:
        ctx.metadata = cell_table.read_metadata_csv(metadata_path)
        ctx.report.metadata_csv = str(metadata_path)


#: Skipped files warned about one by one; the report lists them all.
MAX_SKIP_WARNINGS = 10


def _skip(ctx: _Context, path: Path, reason: str) -> None:
    rel = path.relative_to(ctx.src).as_posix() if path.is_relative_to(ctx.src) else str(path)
    ctx.report.skipped.append((rel, reason))
    if len(ctx.report.skipped) <= MAX_SKIP_WARNINGS:
        logger.warning("skipped %s: %s", rel, reason)
    elif len(ctx.report.skipped) == MAX_SKIP_WARNINGS + 1:
        logger.warning("skipping more files; the ingest report lists every one with its cause")


def _reason(err: DataError, path: Path) -> str:
    """The cause of a per-file error, without the path the message starts with."""
    return str(err).removeprefix(f"{path}: ")


def _scan(ctx: _Context) -> None:
    """Pass 1: headers of every file; skip unreadable, unsupported and odd-channel files."""
    images, unsupported = scan_folder(ctx.src)
    if not images:
        find_images(ctx.src)  # raises the "no images found" error
    for path in unsupported:
        _skip(ctx, path, skip_reason(path))
    first_error = ""
    for path in images:
        try:
            header = read_header(path)
            labels = read_npz_labels(path) if path.suffix.lower() == ".npz" else None
            if labels is not None and len(labels) != header.n:
                raise DataError(f"{path}: {len(labels)} labels for {header.n} images")
        except DataError as err:
            first_error = first_error or str(err)
            _skip(ctx, path, _reason(err, path))
            continue
        ctx.entries.append(_Entry(path, path.relative_to(ctx.src).as_posix(), header, labels))
    if not ctx.entries:
        detail = f"; first error: {first_error}" if first_error else ""
        raise DataError(f"{ctx.src}: no readable image among {len(images)} files{detail}")
    _drop_already_ingested(ctx)
    _keep_majority_channels(ctx)
    row = 0
    for entry in ctx.entries:
        entry.first_row, row = row, row + entry.header.n


def _drop_already_ingested(ctx: _Context) -> None:
    """Adding a folder the project already holds: only its new files are added (an instrument
    that keeps writing into one folder); every file already in the project is left out.

    Raises:
        DataError: when every file of the folder is already in the project.
    """
    parts = [p["part"] for p in (ctx.manifest or {}).get("parts", []) if p["root"] == str(ctx.src)]
    if not parts:
        return
    cells = cell_table.read_cells(ctx.project, ["source", "part"])
    sources = cells.loc[cells["part"].isin(parts), "source"].astype(str)
    held = set(sources.str.replace(r"(\.npz)#\d+$", r"\1", regex=True, case=False))
    new = [e for e in ctx.entries if e.rel not in held]
    n_old = len(ctx.entries) - len(new)
    where = f"part{'s' if len(parts) > 1 else ''} {', '.join(map(str, parts))}"
    if not new:
        raise DataError(
            f"{ctx.src}: all {n_old} files are already in the project ({where}); nothing to add"
        )
    if n_old:
        ctx.report.notes.append(
            f"Left out {n_old} files already in the project ({where}); added the {len(new)} new"
        )
    ctx.entries = new


#: Bumped when the same crops ingest to other pixels (simulation caches are keyed on it): 2, the
#: normalisation ranges from the crops' own pixels; 3, the scale from the cells' sizes.
INGEST_VERSION = 3

#: Crops read to measure the cells in them when the crops are larger than the crop size.
SIZE_SAMPLE = 200


def _resolve_scale(ctx: _Context) -> IngestConfig:
    """The ingest settings with a number for the scale: the one given, or (``scale=None``) one
    chosen for the whole screen so the typical cell fits (:func:`datasets.crops.choose_scale`,
    from the crops' sizes and, when they are larger than the crop size, the sizes of the cells
    measured in a seeded sample of them)."""
    cfg = ctx.cfg
    if cfg.scale is not None:
        ctx.report.scale = cfg.scale
        return cfg
    heights = np.concatenate([np.full(e.header.n, e.header.height) for e in ctx.entries])
    widths = np.concatenate([np.full(e.header.n, e.header.width) for e in ctx.entries])
    crops_scale = choose_scale(heights, widths, cfg.crop_px)
    if crops_scale == 1.0:
        ctx.report.scale = 1.0
        return replace(cfg, scale=1.0)
    objects = _object_sides(ctx.entries)
    scale = choose_scale(heights, widths, cfg.crop_px, objects)
    ctx.report.scale = scale
    side = float(np.quantile(np.maximum(heights, widths), FIT_QUANTILE))
    q = int(FIT_QUANTILE * 100)
    if scale > crops_scale:
        cell = float(np.quantile(objects, FIT_QUANTILE))
        ctx.report.notes.append(
            f"Crops larger than the crop size ({q}% have a larger side of up to {side:.0f} px) "
            f"around smaller cells ({q}% up to {cell:.0f} px, measured on {len(objects)} crops): "
            + (f"every image scaled by {scale}" if scale < 1.0 else "images kept at full size")
            + f" so the cells fit in {cfg.crop_size} px with a margin, the rest of each crop "
            f"cut ({crops_scale} would have fitted whole crops); "
            "relative sizes kept (stored in project.toml; --scale or --crop-size override)"
        )
    else:
        ctx.report.notes.append(
            f"Crops larger than the crop size ({q}% have a larger side of up to {side:.0f} px): "
            f"every image scaled by {scale} so they fit in {cfg.crop_size} px, relative sizes "
            "kept (stored in project.toml; --scale or --crop-size override)"
        )
    return replace(cfg, scale=scale)


def _object_sides(entries: list[_Entry]) -> npt.NDArray[np.float64]:
    """The cell's larger side in the first crop of up to :data:`SIZE_SAMPLE` files (a seeded
    sample); files that fail to read are left out."""
    from datasets.morphology import central_object_side

    rng = np.random.default_rng(0)
    pick = rng.choice(len(entries), size=min(SIZE_SAMPLE, len(entries)), replace=False)
    sides = []
    for i in np.sort(pick):
        try:
            pixels, _ = read_image_file(entries[i].path)
        except DataError:
            continue
        sides.append(central_object_side(pixels[0]))
    return np.asarray(sides, dtype=np.float64)


def _keep_majority_channels(ctx: _Context) -> None:
    counts = Counter(e.header.channels for e in ctx.entries)
    n_channels = counts.most_common(1)[0][0]
    if n_channels > ctx.cfg.max_channels:
        raise DataError(
            f"{ctx.src}: images have {n_channels} channels, at most {ctx.cfg.max_channels} "
            "are supported; save fewer channels per crop"
        )
    if len(counts) > 1:
        for entry in ctx.entries:
            if entry.header.channels != n_channels:
                reason = f"{entry.header.channels} channels, most files have {n_channels}"
                _skip(ctx, entry.path, reason)
        ctx.entries = [e for e in ctx.entries if e.header.channels == n_channels]


def _write_pixels(
    ctx: _Context, tmp: Path, dtype: np.dtype, progress: Progress | None
) -> npt.NDArray[np.bool_]:
    """Pass 2: fit every crop and write it, as tasks over runs of files
    (:mod:`datasets.crops.tasks`); returns which source channels hold any nonzero."""
    from datasets.crops.tasks import CHUNK_CELLS, FileJob, PixelChunk, chunk_files, write_chunk

    size, n_channels = ctx.cfg.crop_px, ctx.entries[0].header.channels
    total = sum(e.header.n for e in ctx.entries)
    PartWriter(tmp, (total, n_channels, size, size), dtype).close()  # full size, zeros
    jobs = [FileJob(str(e.path), e.rel, (e.header.n, e.header.channels, e.header.height,
                                         e.header.width), e.first_row)
            for e in ctx.entries]  # fmt: skip
    runner = ctx.runner or Runner()
    local = runner.config.in_process(total)  # in process: a task per file, progress per file
    runs = chunk_files(jobs, 1 if local else CHUNK_CELLS)
    scale = float(ctx.cfg.scale or 1.0)  # a number once _resolve_scale ran
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
            _skip(ctx, ctx.src / rel, reason)
    for entry in ctx.entries:
        entry.ok = entry.rel not in failed
    if not any(e.ok for e in ctx.entries):
        first = ctx.report.skipped[-1]
        raise DataError(
            f"{ctx.src}: no readable image; every file failed, e.g. {first[0]}: {first[1]}"
        )
    return nonzero


def _choose_channels(ctx: _Context, nonzero: npt.NDArray[np.bool_]) -> list[int]:
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


def _written_rows(ctx: _Context, tmp: Path, keep: list[int]) -> PartPixels:
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


def _build_table(ctx: _Context, part: int) -> pd.DataFrame:
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
    skipped = [f"{root}/{f}" for f, _ in ctx.report.skipped]
    if ctx.labels is not None:  # labels.csv overrides npz labels
        labels, note = cell_table.match_csv(ctx.labels, keys, files, skipped)
        table["truth"] = labels["label"].where(labels["label"].notna(), table["truth"])
        ctx.report.notes.extend([note] if note else [])
    if ctx.metadata is not None:
        metadata, note = cell_table.match_csv(ctx.metadata, keys, files, skipped)
        table = pd.concat([table, metadata.astype("str")], axis=1)
        ctx.report.notes.extend([note] if note else [])
    return table


def _sources(entries: list[_Entry]) -> list[str]:
    """Each cell's source: the relative path, ``file.npz#i`` for npz members."""
    sources: list[str] = []
    for e in entries:
        if e.path.suffix.lower() == ".npz":
            sources.extend(f"{e.rel}#{i}" for i in range(e.header.n))
        else:
            sources.append(e.rel)
    return sources


def _npz_truth(entries: list[_Entry]) -> pd.Series:
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
    ctx: _Context, table: pd.DataFrame, part: int, dtype: np.dtype, keep: list[int]
) -> None:
    report, n_source = ctx.report, ctx.entries[0].header.channels
    layouts = Counter(e.header.layout for e in ctx.entries)
    report.part, report.n_files, report.n_cells = part, len(ctx.entries), len(table)
    report.n_channels, report.dtype = len(keep), str(dtype)
    report.channel_names = channel_names(ctx.cfg, n_source, keep)
    report.layout = (
        next(iter(layouts))
        if len(layouts) == 1
        else ", ".join(f"{k} ({v} files)" for k, v in layouts.most_common())
    )
    report.dropped_channels = [c for c in range(n_source) if c not in keep]
    counts = table["truth"].value_counts()
    report.class_counts = {str(k): int(v) for k, v in counts.items()}
    by_dtype = Counter(str(e.header.dtype) for e in ctx.entries)
    if list(by_dtype) != [str(dtype)]:
        odd = next(e.rel for e in ctx.entries if str(e.header.dtype) != str(dtype))
        counts = ", ".join(f"{n} files {d}" for d, n in by_dtype.most_common())
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

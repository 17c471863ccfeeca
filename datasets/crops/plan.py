"""Pass 1 of a crops ingest: which files go in, with what shape, at which scale.

Reads every file's header (never its pixels, but for a sample of 200 crops when the scale is
chosen from the cells' sizes), skips unreadable, unsupported and odd-channel files and the files
a project already holds, reads the ground-truth and metadata CSVs, and fixes the dataset-wide
scale. :mod:`datasets.crops.ingest` writes the pixels of the plan (pass 2).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from datasets import cells as cell_table
from datasets.config import IngestConfig
from datasets.crops.readers import (
    ImageHeader,
    find_images,
    read_header,
    read_image_file,
    read_npz_labels,
    scan_folder,
    skip_reason,
)
from datasets.crops.report import IngestReport
from datasets.crops.resize import FIT_QUANTILE, choose_scale
from datasets.errors import DataError
from datasets.parallel import Runner
from datasets.words import count

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Entry:
    """One source file in the plan."""

    path: Path
    rel: str  # posix path relative to the crops root
    header: ImageHeader
    labels: npt.NDArray | None = None  # npz ground truth, (n,)
    first_row: int = 0  # row of its first crop in the part file being written
    ok: bool = True  # False once pass 2 failed to read it
    #: one file per channel (``path`` is the first), grouped by the source's pattern
    channel_files: tuple[Path, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)  # the pattern's other placeholders


@dataclass
class Context:
    """Everything one ingest call works with; passed between the steps below."""

    src: Path
    project: Path
    cfg: IngestConfig
    report: IngestReport
    manifest: dict[str, Any] | None  # existing pixels/parts.json, None for a new project
    labels: cell_table.PathCsv | None = None  # labels.csv, one column "label"
    metadata: cell_table.PathCsv | None = None
    entries: list[Entry] = field(default_factory=list)
    runner: Runner | None = None  # where pass 2 runs (datasets.parallel); in process if None
    pattern: str | None = None  # groups one file per channel into a crop (CropSource.pattern)


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


def load_csvs(ctx: Context, labels_csv: Path | None, metadata_csv: Path | None) -> None:
    if not ctx.src.is_dir():
        scan_folder(ctx.src)  # raises the folder error
    labels_path = _resolve_csv(ctx.src, labels_csv, "labels.csv", ctx.report)
    metadata_path = _resolve_csv(ctx.src, metadata_csv, "metadata.csv", ctx.report)
    if labels_path is not None:
        ctx.labels = cell_table.read_labels_csv(labels_path, ctx.src)
        ctx.report.labels_csv = str(labels_path)
    if metadata_path is not None:
        ctx.metadata = cell_table.read_metadata_csv(metadata_path, ctx.src)
        ctx.report.metadata_csv = str(metadata_path)


#: Skipped files warned about one by one; the report lists them all.
MAX_SKIP_WARNINGS = 10


def skip(ctx: Context, path: Path, reason: str) -> None:
    rel = path.relative_to(ctx.src).as_posix() if path.is_relative_to(ctx.src) else str(path)
    ctx.report.skipped.append((rel, reason))
    if len(ctx.report.skipped) <= MAX_SKIP_WARNINGS:
        logger.warning("skipped %s: %s", rel, reason)
    elif len(ctx.report.skipped) == MAX_SKIP_WARNINGS + 1:
        logger.warning("skipping more files; the ingest report lists every one with its cause")


def _reason(err: DataError, path: Path) -> str:
    """The cause of a per-file error, without the path the message starts with."""
    return str(err).removeprefix(f"{path}: ")


def scan(ctx: Context) -> None:
    """Pass 1: headers of every file; skip unreadable, unsupported and odd-channel files."""
    if (ctx.src / "project.toml").is_file() and (ctx.src / "cells.parquet").is_file():
        raise DataError(
            f"{ctx.src}: is a PhenoScout project, not a folder of crops; open it as a project "
            "(phenoscout app PROJECT) or point to the folder its crops came from"
        )
    images, unsupported = scan_folder(ctx.src)
    if not images:
        find_images(ctx.src)  # raises the "no images found" error
    for path in unsupported:
        skip(ctx, path, skip_reason(path))
    first_error = ""
    if ctx.pattern:
        images = _grouped(ctx, images)  # the groups are entries already
    for path in images:
        try:
            header = read_header(path)
            labels = read_npz_labels(path) if path.suffix.lower() == ".npz" else None
            if labels is not None and len(labels) != header.n:
                raise DataError(f"{path}: {len(labels)} labels for {header.n} images")
        except DataError as err:
            first_error = first_error or str(err)
            skip(ctx, path, _reason(err, path))
            continue
        ctx.entries.append(Entry(path, path.relative_to(ctx.src).as_posix(), header, labels))
    if not ctx.entries:
        detail = f"; first error: {first_error}" if first_error else ""
        raise DataError(f"{ctx.src}: no readable image among {len(images)} files{detail}")
    _drop_already_ingested(ctx)
    _keep_majority_channels(ctx)
    if not ctx.pattern:
        _hint_one_file_per_channel(ctx)
    row = 0
    for entry in ctx.entries:
        entry.first_row, row = row, row + entry.header.n


def _grouped(ctx: Context, images: list[Path]) -> list[Path]:
    """Crops held in one file per channel: an entry per group of ``ctx.pattern`` (the
    grouping of fields, :func:`datasets.fields.files.group_by_pattern`); returns no files left
    to read one by one."""
    from datasets.fields.files import group_by_pattern

    assert ctx.pattern is not None
    groups, skipped = group_by_pattern(images, ctx.src, ctx.pattern)
    for name, reason in skipped:
        skip(ctx, ctx.src / name, reason)
    for spec, header in groups:
        first = spec.channel_files[0]
        rel = first.relative_to(ctx.src).as_posix()
        ctx.entries.append(Entry(first, rel, header, channel_files=spec.channel_files,
                                 metadata=spec.metadata))  # fmt: skip
    if not ctx.entries:
        example = f"; e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DataError(
            f"{ctx.src}: no crop matches pattern {ctx.pattern!r} with every channel "
            f"({len(images)} files){example}"
        )
    return []


def _hint_one_file_per_channel(ctx: Context) -> None:
    """Say so when the crops look like one file per channel
    (:func:`datasets.fields.files.looks_per_channel`), read one by one as cells: the pattern
    that groups them is named in a note and a warning."""
    from datasets.fields.files import looks_per_channel

    if any(e.header.channels != 1 for e in ctx.entries):
        return
    found = looks_per_channel([e.path for e in ctx.entries], "cell")
    if found is None:
        return
    note = found.note(len(ctx.entries), "cell")
    ctx.report.notes.append(note)
    logger.warning("%s: %s", ctx.src, note)


def _drop_already_ingested(ctx: Context) -> None:
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


#: Crops read to measure the cells in them when the crops are larger than the crop size.
SIZE_SAMPLE = 200


def resolve_scale(ctx: Context) -> IngestConfig:
    """The ingest settings with a number for the scale: the one given, or (``scale=None``) one
    chosen for the whole screen so the typical cell fits (:func:`datasets.crops.choose_scale`,
    from the crops' sizes and, when they are larger than the crop size, the sizes of the cells
    measured in a seeded sample of them)."""
    cfg = ctx.cfg
    heights = np.concatenate([np.full(e.header.n, e.header.height) for e in ctx.entries])
    widths = np.concatenate([np.full(e.header.n, e.header.width) for e in ctx.entries])
    if cfg.scale is not None:
        ctx.report.scale = cfg.scale
        _note_cut(ctx, heights, widths, cfg.scale)
        return cfg
    crops_scale = choose_scale(heights, widths, cfg.crop_px)
    if crops_scale == 1.0:
        ctx.report.scale = 1.0
        _note_cut(ctx, heights, widths, 1.0)
        return replace(cfg, scale=1.0)
    objects, unreadable = _object_sides(ctx.entries)
    if unreadable:  # a header that reads but pixels that do not: such a file sizes nothing
        for entry, reason in unreadable:
            skip(ctx, entry.path, reason)
        gone = {id(entry) for entry, _ in unreadable}
        ctx.entries = [e for e in ctx.entries if id(e) not in gone]
        if not ctx.entries:
            raise DataError(f"{ctx.src}: no readable crop ({len(gone)} files failed to read)")
        heights = np.concatenate([np.full(e.header.n, e.header.height) for e in ctx.entries])
        widths = np.concatenate([np.full(e.header.n, e.header.width) for e in ctx.entries])
        crops_scale = choose_scale(heights, widths, cfg.crop_px)
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
        _note_cut(ctx, heights, widths, scale)
    return replace(cfg, scale=scale)


def _note_cut(ctx: Context, heights: npt.NDArray, widths: npt.NDArray, scale: float) -> None:
    """Tell the user how many crops are still larger than the crop size at ``scale`` (their
    centre is kept, the rest cut), naming the largest."""
    crop_px = ctx.cfg.crop_px
    side = np.maximum(heights, widths) * scale
    cut = side > crop_px + 0.5
    if not cut.any():
        return
    starts = np.cumsum([0] + [e.header.n for e in ctx.entries])
    biggest = int(np.argmax(side))
    entry = ctx.entries[int(np.searchsorted(starts, biggest, side="right")) - 1]
    verb = "is" if cut.sum() == 1 else "are"
    ctx.report.notes.append(
        f"{int(cut.sum())} of {len(side)} crops {verb} larger than {crop_px} px at scale {scale} "
        f"(the largest, {entry.rel}, {int(heights[biggest])}x{int(widths[biggest])} px): "
        "their centre is kept and the rest cut"
    )


def read_entry(entry: Entry) -> npt.NDArray:
    """(n, C, H, W) pixels of an entry in the source dtype: one file, or one file per channel."""
    return read_source(entry.path, entry.rel, entry.channel_files)


def read_source(path: Path, rel: str, channel_files: tuple[Path, ...] = ()) -> npt.NDArray:
    """(n, C, H, W) pixels of one file, or (1, C, H, W) of one file per channel (read as a
    field held that way is, :func:`datasets.fields.files.read_field`)."""
    if not channel_files:
        return read_image_file(path)[0]
    from datasets.fields.files import read_field
    from datasets.fields.spec import FieldSpec

    return read_field(FieldSpec(rel, channel_files))[None]


def _object_sides(
    entries: list[Entry],
) -> tuple[npt.NDArray[np.float64], list[tuple[Entry, str]]]:
    """The cell's larger side in the first crop of up to :data:`SIZE_SAMPLE` files (a seeded
    sample), and the sampled files that fail to read, with why (left out of the sizes; the
    caller skips them, so their header sizes choose no scale either)."""
    from datasets.morphology import central_object_side

    rng = np.random.default_rng(0)
    pick = rng.choice(len(entries), size=min(SIZE_SAMPLE, len(entries)), replace=False)
    sides, unreadable = [], []
    for i in np.sort(pick):
        try:
            pixels = read_entry(entries[i])
        except DataError as err:
            unreadable.append((entries[i], _reason(err, entries[i].path)))
            continue
        sides.append(central_object_side(pixels[0]))
    return np.asarray(sides, dtype=np.float64), unreadable


def _keep_majority_channels(ctx: Context) -> None:
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
                reason = f"{count(entry.header.channels, 'channel')}, most files have {n_channels}"
                skip(ctx, entry.path, reason)
        ctx.entries = [e for e in ctx.entries if e.header.channels == n_channels]

"""Lay a project stored one array per part (``parts.json`` format 2) out one array per plate
(format 3, :mod:`datasets.pixels.plates`), in place.

Run when a project is opened, after the ``.npy`` conversion (:mod:`datasets.pixels.npy_migration`).
For each part, each plate's cells are appended, in row order, to the plate's array (crops, and
object masks for fields); the part's record then lists its rows as runs by plate. Cells without
a plate stay where they were, in ``part-NNNN.zarr``. The cell table is not touched (a cell's
``row`` keeps its meaning, its place in its part), so ``parts.json``, replaced atomically, is
the one file that changes, and only after a seeded sample of every part's rows reads the same
through the new layout as from the old array. Then each part array that no segment names any
more is moved to ``pixels/backup-format2/``. The ``.npy`` conversion's lock keeps two processes
from doing this at once. A crash before the new ``parts.json`` leaves the project as it was
(plus rows past the end of the plate arrays that nothing reads); the next opening starts over.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from datasets.cells import (
    CELLS_FILE,
    DAMAGED_FIX,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    PIXELS_DIR,
    read_cells,
    write_manifest,
)
from datasets.errors import DataError, ProjectDamagedError
from datasets.pixels.arrays import PartArray
from datasets.pixels.npy_migration import migrating, stored_per_part
from datasets.pixels.plates import (
    PLATES_DIR,
    PartPixels,
    PartView,
    Segment,
    copy_cells,
    part_array_file,
    plan_copy,
    plate_groups,
    runs_of,
    segment_records,
    stored_segment,
)

logger = logging.getLogger(__name__)

BACKUP_DIR = "backup-format2"  # in PIXELS_DIR: part arrays whose rows all moved to plates
SAMPLE_ROWS = 64  # rows per part compared between the old array and the new layout


def needs_plate_layout(project_dir: Path) -> bool:
    """Whether ``parts.json`` says the project is stored one array per part (a cheap check:
    :func:`datasets.pixels.npy_migration.stored_per_part`)."""
    return stored_per_part(project_dir)


def _plate_segments(
    pixels_dir: Path, part: int, array: PartArray, plates: Any, masks: PartArray | None
) -> list[Segment]:
    """Append part ``part``'s plated rows to their plates' arrays; its segments, by row."""
    n = len(array)
    codes, groups = plate_groups(plates, n)
    pixels = PartPixels(n, array.shape[1:], array.dtype, array.take,
                        masks.take if masks is not None else None)  # fmt: skip
    mask_file = part_array_file(part, masks=True) if masks is not None else None
    segments: list[Segment] = []
    for code, plate in enumerate(groups):
        members = np.flatnonzero(codes == code)
        if plate is None:  # rows stay in the part's array
            segments += [Segment(a, b - a, part_array_file(part), a, mask_file, a)
                         for a, b in runs_of(members)]  # fmt: skip
            continue
        task = plan_copy(pixels_dir, pixels, members, plate, part)
        copy_cells(task)
        stored, k = stored_segment(task, 0), 0
        for a, b in task.runs:  # each run of the part's rows, at its place in the plate's rows
            segments.append(Segment(a, b - a, stored.file, stored.at + k, stored.mask,
                                    stored.mask_at + k))  # fmt: skip
            k += b - a
    return sorted(segments, key=lambda s: s.start)


def _check_copy(pixels_dir: Path, part: int, array: PartArray, segments: list[Segment]) -> None:
    """The new layout reads what the old array holds, at a seeded sample of rows."""
    n = len(array)
    rng = np.random.default_rng(part)
    rows = np.unique(np.r_[0, n - 1, rng.choice(n, min(SAMPLE_ROWS, n), replace=False)])
    if not np.array_equal(PartView(pixels_dir, segments).take(rows), array.take(rows)):
        raise DataError(f"{pixels_dir}: part {part}'s copy into plate arrays differs; nothing "
                        "was changed, open the project again to retry")  # fmt: skip


def _lay_out(project: Path, manifest: dict[str, Any]) -> list[Path]:
    """Give every part record segments; the part arrays no segment names any more."""
    pixels = project / PIXELS_DIR
    has_plate = "plate" in pq.read_schema(project / CELLS_FILE).names
    table = read_cells(project, ["part", "row", *(["plate"] if has_plate else [])])
    unused: list[Path] = []
    for record in manifest["parts"]:
        if "segments" in record:
            continue
        try:
            part = int(record["part"])
        except (KeyError, TypeError, ValueError) as err:
            raise ProjectDamagedError(pixels / MANIFEST_FILE, f"no valid part {err}",
                                      DAMAGED_FIX) from err  # fmt: skip
        array = PartArray(pixels / part_array_file(part))
        cells = table[table["part"] == part].sort_values("row")
        mask_path = pixels / part_array_file(part, masks=True)
        masks = PartArray(mask_path) if mask_path.exists() else None
        in_order = np.array_equal(cells["row"].to_numpy(), np.arange(len(array)))
        if not has_plate or not in_order:  # no plates (or rows not one per cell): one segment
            record["segments"] = segment_records([Segment(
                0, len(array), part_array_file(part), 0,
                part_array_file(part, masks=True) if masks is not None else None)])  # fmt: skip
            continue
        segments = _plate_segments(pixels, part, array, cells["plate"].reset_index(drop=True),
                                   masks)  # fmt: skip
        _check_copy(pixels, part, array, segments)
        record["segments"] = segment_records(segments)
        if not any(s.file == part_array_file(part) for s in segments):
            unused += [p for p in (array.path, mask_path) if p.exists()]
    return unused


def migrate_to_plates(project_dir: Path) -> list[str]:
    """Lay the project out one array per plate (see the module text).

    Returns:
        The part arrays moved to ``pixels/backup-format2/`` (empty when there was nothing to
        do, or every part keeps cells without a plate).

    Raises:
        DataError: a part's copy differs, or could not be written; the project is unchanged.
    """
    project = Path(project_dir)
    pixels = project / PIXELS_DIR
    with migrating(project, needs_plate_layout) as manifest:
        if manifest is None:
            return []
        (pixels / PLATES_DIR).mkdir(exist_ok=True)
        try:
            unused = _lay_out(project, manifest)
        except OSError as err:  # no space left, no permission
            raise DataError(
                f"{pixels}: cannot lay the pixels out per plate ({err}); nothing was changed, "
                "fix this and open the project again"
            ) from err
        manifest["format"] = MANIFEST_FORMAT
        for record in manifest["parts"]:
            record.pop("file", None)
        write_manifest(project, manifest)
        if unused:
            (pixels / BACKUP_DIR).mkdir(exist_ok=True)
            for path in unused:
                os.replace(path, pixels / BACKUP_DIR / path.name)
        logger.info("pixels: laid out one array per plate (parts.json format %d); %d part "
                    "array(s) moved to %s", MANIFEST_FORMAT, len(unused),
                    pixels / BACKUP_DIR)  # fmt: skip
    return [p.name for p in unused]

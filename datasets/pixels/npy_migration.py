"""Convert a project's pixels from ``.npy`` parts (earlier versions) to sharded Zarr, in place.

Run when a project is opened (:func:`migrate_pixels`). Each ``pixels/part-NNNN.npy`` (crops)
and ``pixels/mask-part-NNNN.npy`` (object masks of fields) is copied into its Zarr array next
to it (:func:`datasets.pixels.npy.copy_npy_to_zarr`, one shard at a time), the copy is verified
(shape, dtype and a seeded sample of rows compared with the ``.npy``), ``parts.json`` is
rewritten with format 2, and only then the ``.npy`` files are moved (renamed, not copied) into
``pixels/backup-npy/``. A lock file keeps two processes from converting at once: the second
waits, then finds nothing left to do. A crash at any point leaves the ``.npy`` files where
they were (or, after a verified copy and the new manifest, in the backup folder), and the next
opening redoes what is missing. Once checked, the backup folder may be deleted.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from datasets.errors import DataError, ProjectDamagedError

logger = logging.getLogger(__name__)

BACKUP_DIR = "backup-npy"  # in PIXELS_DIR: the converted .npy files
LOCK_FILE = ".convert.lock"  # in PIXELS_DIR: held while converting
SAMPLE_ROWS = 64  # rows compared between a .npy part and its Zarr copy (plus first and last)
# datasets.cells.PIXELS_DIR, MANIFEST_FILE and MANIFEST_FORMAT, not imported: the check on
# every opening stays light (datasets.cells loads pandas); a test keeps them equal.
_PIXELS_DIR, _MANIFEST_FILE, _ZARR_FORMAT = "pixels", "parts.json", 2  # the first Zarr format


def _old_files(pixels: Path) -> list[Path]:
    return sorted([*pixels.glob("part-*.npy"), *pixels.glob("mask-part-*.npy")])


def _old_manifest(pixels: Path) -> bool:
    """Whether parts.json says the parts are ``.npy`` files (a damaged one is left to the
    command that reads it)."""
    try:
        manifest = json.loads((pixels / _MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    found = manifest.get("format", 1) if isinstance(manifest, dict) else _ZARR_FORMAT
    return isinstance(found, int) and found < _ZARR_FORMAT


def stored_per_part(project_dir: Path) -> bool:
    """Whether ``parts.json`` says the project is stored one Zarr array per part (format 2, to
    be laid out per plate by :mod:`datasets.pixels.plate_migration`): a cheap check, here so
    that opening a project imports neither pandas nor Zarr to make it."""
    try:
        manifest = json.loads((Path(project_dir) / _PIXELS_DIR / _MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False  # nothing ingested, or damaged: the commands that read it say so
    return isinstance(manifest, dict) and manifest.get("format") == _ZARR_FORMAT


def needs_migration(project_dir: Path) -> bool:
    """Whether the project still stores pixels as ``.npy`` parts (a cheap check)."""
    pixels = Path(project_dir) / _PIXELS_DIR
    return pixels.is_dir() and (bool(_old_files(pixels)) or _old_manifest(pixels))


@contextmanager
def locked(pixels: Path) -> Iterator[None]:
    """Hold ``pixels/.convert.lock`` (waiting for another process that holds it)."""
    with open(pixels / LOCK_FILE, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextmanager
def migrating(project: Path, needed: Callable[[Path], bool]) -> Iterator[dict[str, Any] | None]:
    """The project's ``parts.json``, read under the lock when ``needed(project)`` holds (asked
    again under the lock: another process may have migrated while we waited); None when there
    is nothing to do, nothing ingested, or a damaged manifest (the commands say so)."""
    if not needed(project):
        yield None
        return
    from datasets.cells import read_manifest

    with locked(project / _PIXELS_DIR):
        manifest = read_manifest(project) if needed(project) else None
        valid = isinstance(manifest, dict) and isinstance(manifest.get("parts"), list)
        yield manifest if valid else None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def verified(old: Path, new: Path, seed: int = 0) -> bool:
    """Whether the Zarr array ``new`` holds the ``.npy`` file ``old``: same shape and dtype,
    and equal rows at a seeded sample (first and last row included).

    Raises:
        ProjectDamagedError: when ``old`` itself cannot be read.
    """
    from datasets.pixels.arrays import PartArray
    from datasets.pixels.npy import open_npy

    source = open_npy(old)
    try:
        copy = PartArray(new)
        if copy.shape != tuple(source.shape) or copy.dtype != source.dtype:
            return False
        n = len(source)
        if n == 0:
            return True
        rng = np.random.default_rng(seed)
        rows = np.unique(np.r_[0, n - 1, rng.choice(n, min(SAMPLE_ROWS, n), replace=False)])
        return bool(np.array_equal(copy.take(rows), np.asarray(source[rows])))
    except ProjectDamagedError:
        return False  # a half-written or damaged copy: convert again
    finally:
        del source


def _convert(old: Path, new: Path, part: int) -> None:
    """Copy ``old`` into ``new`` unless a verified copy is there already; log one line."""
    from datasets.pixels.npy import copy_npy_to_zarr

    if new.exists() and verified(old, new, seed=part):
        logger.info("pixels: %s already converted to %s (verified)", old.name, new.name)
        return
    try:
        n = copy_npy_to_zarr(old, new)
    except OSError as err:  # no space left, no permission
        raise DataError(
            f"{new}: cannot convert {old.name} to Zarr ({err}); the .npy files are kept, fix "
            "this and open the project again"
        ) from err
    if not verified(old, new, seed=part):
        raise DataError(f"{new}: the Zarr copy differs from {old.name}; the .npy files are "
                        "kept, open the project again to retry")  # fmt: skip
    logger.info("pixels: %s (%d rows, %.1f MB) converted to %s (%.1f MB), verified",
                old.name, n, _size(old) / 1e6, new.name, _size(new) / 1e6)  # fmt: skip


def migrate_pixels(project_dir: Path) -> list[str]:
    """Convert the project's ``.npy`` pixel parts to Zarr in place (see the module text).

    Args:
        project_dir: the project folder.

    Returns:
        The names of the ``.npy`` files converted and moved to ``pixels/backup-npy/`` (empty
        when there was nothing to do).

    Raises:
        DataError: a ``.npy`` part is damaged, a part has no pixels at all, or the copy could
            not be written; the ``.npy`` files stay where they are.
    """
    project = Path(project_dir)
    pixels = project / _PIXELS_DIR
    if not needs_migration(project):  # the usual case: no pandas or Zarr imported to say so
        return []
    from datasets.cells import DAMAGED_FIX, write_manifest
    from datasets.fields.store import mask_part_file, npy_mask_part_file
    from datasets.pixels.arrays import part_file
    from datasets.pixels.npy import npy_part_file

    with migrating(project, needs_migration) as manifest:
        if manifest is None:
            return []
        moved: list[Path] = []
        for record in manifest["parts"]:
            try:
                part = int(record["part"])
            except (KeyError, TypeError, ValueError) as err:
                path = pixels / _MANIFEST_FILE
                raise ProjectDamagedError(path, f"no valid part {err}", DAMAGED_FIX) from err
            kinds = (("crops", npy_part_file, part_file),
                     ("masks", npy_mask_part_file, mask_part_file))  # fmt: skip
            for kind, old_file, new_file in kinds:
                old, new = old_file(project, part), new_file(project, part)
                if old.is_file():
                    _convert(old, new, part)
                    moved.append(old)
                elif kind == "crops" and not new.exists():
                    raise ProjectDamagedError(old, "missing, and no Zarr copy", DAMAGED_FIX)
            record["file"] = part_file(Path(), part).name
        manifest["format"] = _ZARR_FORMAT  # one array per part, as format 2 records say
        write_manifest(project, manifest)
        backup = pixels / BACKUP_DIR
        if moved:
            backup.mkdir(exist_ok=True)
        for old in moved:
            os.replace(old, backup / old.name)
        if moved:
            logger.info("pixels: %d .npy file(s) moved to %s", len(moved), backup)
    return [p.name for p in moved]

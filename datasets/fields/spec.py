"""The plain-data description of whole fields of view, shared by every way fields arrive.

A folder of fields (one multi-channel file per field, or one file per channel grouped by a
filename pattern) and a CellProfiler export both become a list of :class:`FieldSpec`; field ingest
(:mod:`datasets.fields.ingest`) turns each into cells, one field at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SEGMENT_METHODS = ("classical", "unet", "given")


@dataclass(frozen=True, eq=False)
class FieldSpec:
    """One field of view and where its cells come from.

    Attributes:
        key: unique, human-readable name of the field, e.g. ``"P1_A01_s1"`` or its relative path;
            stored as each cell's ``field`` and used in error messages.
        channel_files: one multi-channel file (TIFF/OME-TIFF, channel axis detected), or one
            single-channel file per channel in channel order.
        metadata: plate, well, site, ... ; each becomes a column of the cell table.
        mask_file: integer label image of the field's objects (0 = background), used as given.
        objects: objects at given centres instead of a mask or segmentation (CellProfiler):
            columns ``y`` and ``x`` in pixels, plus any columns carried to the cell table
            (``ImageNumber``, ``ObjectNumber``, measurements prefixed ``cp_``).
    """

    key: str
    channel_files: tuple[Path, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    mask_file: Path | None = None
    objects: pd.DataFrame | None = None

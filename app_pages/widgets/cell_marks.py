"""The mark of the cell to label on a tile: its object's outline when the project knows its
mask (cells segmented from fields, or given masks), else a discreet centre mark (crops,
CellProfiler objects). A crop often holds two to four cells; the mark says which one is meant.

Masks are read from the project's mask arrays (one per plate, beside the crops': see
``datasets.pixels.plates``), (n, S, S) uint8 with 1 on the cell's own object, by the cell's part
and row in the cell table; an all-zero mask (an
object known only by its centre) gets the centre mark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from datasets.cells import read_cells
from datasets.fields.store import mask_part
from datasets.pixels.arrays import PartArray
from datasets.pixels.plates import PartView

MARK_RGB = (255, 214, 0)  # yellow, as the Fields page outlines cells
MARK_ALPHA = 0.85  # the mark lets a little of the cell through
_TICK = (0.12, 0.22)  # centre mark: ticks from 12% to 22% of the tile's side off the centre


class MaskReader:
    """Per-cell object masks of one project (None for a cell without one)."""

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = Path(project_dir)
        self._parts: dict[int, PartView | None] = {}
        self._opened: dict[str, PartArray] = {}
        self._where: dict[str, tuple[int, int]] | None = None

    def _mask_part(self, part: int) -> PartView | None:
        if part not in self._parts:
            self._parts[part] = mask_part(self.project_dir, part, self._opened)
        return self._parts[part]

    def has_masks(self) -> bool:
        """Whether any part of the project has object masks (a field ingest)."""
        pixels = self.project_dir / "pixels"
        return any(pixels.glob("mask-part-*.zarr")) or any(pixels.glob("plates/*.mask.zarr"))

    def read(self, cell_ids: list[str]) -> list[npt.NDArray[np.uint8] | None]:
        """One (S, S) mask per cell, None where none is known (or it is empty)."""
        if not self.has_masks():
            return [None] * len(cell_ids)
        if self._where is None:
            table = read_cells(self.project_dir, ["cell_id", "part", "row"])
            self._where = dict(
                zip(
                    table["cell_id"].astype(str),
                    zip(table["part"].astype(int), table["row"].astype(int)),
                )
            )
        where = [self._where.get(cell_id, (-1, -1)) for cell_id in cell_ids]
        out: list[npt.NDArray[np.uint8] | None] = [None] * len(cell_ids)
        for part in sorted({p for p, _ in where if p >= 0}):
            masks = self._mask_part(part)
            at = [i for i, (p, row) in enumerate(where) if p == part and masks is not None
                  and row < len(masks)]  # fmt: skip
            if masks is None or not at:
                continue
            read = masks.take(np.asarray([where[i][1] for i in at], dtype=np.int64))
            for i, mask in zip(at, read, strict=True):
                out[i] = mask if mask.any() else None
        return out


def outline(mask: npt.NDArray, zoom: int) -> npt.NDArray[np.bool_]:
    """The boundary of ``mask`` (S, S) enlarged ``zoom`` times: pixels of the object with a
    neighbour (4-connected) outside it, one enlarged pixel wide at most (``max(1, zoom // 2)``)."""
    big = np.repeat(np.repeat(mask.astype(bool), zoom, 0), zoom, 1)
    inside = big.copy()
    for _ in range(max(1, zoom // 2)):
        padded = np.pad(inside, 1, constant_values=False)
        inside = (
            inside & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        )
    return big & ~inside


def centre_mark(height: int, width: int) -> npt.NDArray[np.bool_]:
    """Four short ticks pointing at the centre, leaving the centre itself free."""
    out = np.zeros((height, width), dtype=bool)
    cy, cx = height // 2, width // 2
    side = min(height, width)
    near, far = int(round(side * _TICK[0])), int(round(side * _TICK[1]))
    thick = max(1, side // 64)
    half = thick // 2
    out[cy - far : cy - near, cx - half : cx - half + thick] = True
    out[cy + near : cy + far, cx - half : cx - half + thick] = True
    out[cy - half : cy - half + thick, cx - far : cx - near] = True
    out[cy - half : cy - half + thick, cx + near : cx + far] = True
    return out


def draw_mark(
    tile: npt.NDArray[np.uint8], mask: npt.NDArray | None, zoom: int
) -> npt.NDArray[np.uint8]:
    """``tile`` (H, W, 3), an enlarged crop ``zoom`` times its crop, with the cell marked: the
    outline of ``mask`` (the crop's own object), or the centre mark without one. A copy."""
    h, w = tile.shape[:2]
    if mask is not None and mask.any() and mask.shape[0] * zoom == h and mask.shape[1] * zoom == w:
        where = outline(mask, zoom)
    else:
        where = centre_mark(h, w)
    out = tile.copy()
    colour = np.asarray(MARK_RGB, dtype=np.float32)
    blended = out[where].astype(np.float32) * (1 - MARK_ALPHA) + colour * MARK_ALPHA
    out[where] = (blended + 0.5).astype(np.uint8)
    return out

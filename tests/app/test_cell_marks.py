"""The mark of the cell to label: its object's outline from the crop's mask, else a centre mark;
and the masks read from a project made from fields (none for crops)."""

from __future__ import annotations

import json

import numpy as np

from app_pages.widgets.cell_marks import MARK_RGB, MaskReader, centre_mark, draw_mark, outline


def test_outline_follows_the_mask_edge_only():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 3:7] = 1
    ring = outline(mask, zoom=2)
    assert ring.shape == (16, 16)
    big = np.repeat(np.repeat(mask.astype(bool), 2, 0), 2, 1)
    assert not (ring & ~big).any()  # inside the object only
    assert ring[4, 6:14].all() and ring[4:12, 6].all()  # its edges
    assert not ring[6:10, 8:12].any()  # not its middle


def test_draw_mark_outlines_with_a_mask_else_marks_the_centre_leaving_it_free():
    tile = np.zeros((16, 16, 3), np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    mask[1:7, 1:7] = 1
    drawn = draw_mark(tile, mask, zoom=2)
    assert drawn[2, 2].tolist() == [round(c * 0.85) for c in MARK_RGB]
    assert not tile.any()  # a copy
    centre = draw_mark(np.zeros((128, 128, 3), np.uint8), None, zoom=2)
    marked = centre.any(axis=2)
    assert marked.any() and not marked[60:68, 60:68].any()  # the cell itself stays visible
    assert marked.sum() == centre_mark(128, 128).sum() < 128 * 128 * 0.02  # discreet
    empty = draw_mark(np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8), np.uint8), zoom=2)
    assert empty.any(axis=2).sum() == centre_mark(16, 16).sum()  # all-zero mask: centre


def test_masks_come_from_the_fields_project_and_not_for_crops(tmp_path, small_project):
    from datasets.cells import read_cells
    from datasets.fields.store import mask_part_file
    from datasets.pixels.writer import write_part

    assert MaskReader(small_project).read(["x"]) == [None]  # crops: no masks
    cells = read_cells(small_project, ["cell_id", "part", "row"]).head(3)
    (tmp_path / "pixels").mkdir()
    masks = np.zeros((int(cells["row"].max()) + 1, 4, 4), np.uint8)
    masks[cells["row"].iloc[0], 1:3, 1:3] = 1
    part = int(cells["part"].iloc[0])
    write_part(mask_part_file(tmp_path, part), masks)
    write_part(tmp_path / "pixels" / f"part-{part:04d}.zarr", np.zeros((len(masks), 1, 4, 4)))
    record = {"part": part, "n_cells": len(masks), "file": f"part-{part:04d}.zarr"}
    (tmp_path / "pixels" / "parts.json").write_text(json.dumps({"format": 2, "parts": [record]}))
    import shutil

    shutil.copy(small_project / "cells.parquet", tmp_path / "cells.parquet")
    got = MaskReader(tmp_path).read(list(cells["cell_id"]))
    assert got[0] is not None and got[0].sum() == 4
    assert got[1] is None  # an empty mask: the centre mark

"""Fields drawn with their objects' outlines, and a cell shown in its field."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.segmentation import find_boundaries

from datasets.config import IngestConfig
from datasets.errors import DataError
from datasets.fields.ingest import ingest_fields
from datasets.fields.lookup import cell_row, field_cells, field_ranges, has_fields
from datasets.fields.render import (
    HIGHLIGHT_COLOUR,
    MUTED_COLOUR,
    OUTLINE_COLOUR,
    FieldView,
    Outlines,
    OverlayStyle,
    cell_in_field,
    draw_markers,
    field_overlay,
    label_edges,
    reduce_plane,
    render_field,
)
from datasets.fields.spec import FieldSpec
from datasets.render import hex_to_rgb

RED = "#ff0000"


def rgb_of(colour: str) -> np.ndarray:
    return (hex_to_rgb(colour) * 255 + 0.5).astype(np.uint8)


def discs(shape=(64, 80), centres=((20, 20), (40, 55)), radius=6):
    """(H, W) int32 labels with one disc per centre, labelled 1, 2, ..."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = k
    return labels


def is_colour(rgb: np.ndarray, colour: str) -> np.ndarray:
    return (rgb == rgb_of(colour)).all(axis=-1)


def test_outlines_are_drawn_exactly_on_the_mask_boundary():
    labels = discs()
    black = np.zeros((1, *labels.shape), np.uint16)
    rgb = field_overlay(black, Outlines(labels), [RED], np.array([[0.0, 1.0]]))
    edges = find_boundaries(labels, mode="inner")
    assert rgb.shape == (*labels.shape, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(is_colour(rgb, OUTLINE_COLOUR), edges)
    assert (rgb[~edges] == 0).all()  # the rest is the (black) field


def test_the_highlighted_object_has_its_own_colour_over_the_rest():
    labels = discs()
    black = np.zeros((1, *labels.shape), np.uint16)
    rgb = field_overlay(black, Outlines(labels, highlight=2), [RED], np.array([[0.0, 1.0]]))
    high = is_colour(rgb, HIGHLIGHT_COLOUR)
    assert high.any()
    assert set(np.unique(labels[high])) <= {0, 2}  # only object 2's edge (2 px: in and out)
    assert high[find_boundaries(labels == 2, mode="inner")].all()
    edge1 = find_boundaries(labels == 1, mode="inner")
    assert is_colour(rgb, OUTLINE_COLOUR)[edge1].all() and not high[edge1].any()


def test_muted_objects_and_channel_colours():
    labels = discs()
    image = np.zeros((2, *labels.shape), np.uint16)
    image[0, labels > 0] = 100  # channel 0 bright inside the objects
    rgb = field_overlay(image, Outlines(labels, muted={1}), [RED, "#00ff00"],
                        np.array([[0, 100], [0, 100.0]]))  # fmt: skip
    assert is_colour(rgb, MUTED_COLOUR)[find_boundaries(labels == 1, mode="inner")].all()
    assert is_colour(rgb, OUTLINE_COLOUR)[find_boundaries(labels == 2, mode="inner")].all()
    inside = (labels > 0) & ~find_boundaries(labels, mode="inner")
    assert is_colour(rgb, RED)[inside].all()
    hidden = field_overlay(image, None, [RED, "#00ff00"], np.array([[0, 100], [0, 100.0]]),
                           style=OverlayStyle(visible=(False, True)))  # fmt: skip
    assert (hidden == 0).all()  # channel 0 off, channel 1 empty, no labels: black


def test_without_ranges_the_fields_own_percentiles_scale_it():
    image = np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64)
    rgb = field_overlay(image, None, ["#ffffff"], style=OverlayStyle(percentiles=(0.0, 100.0)))
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255


def test_bad_labels_or_ranges_raise():
    image = np.zeros((2, 32, 32), np.uint16)
    with pytest.raises(DataError, match="does not fit the 32x32 field"):
        field_overlay(image, Outlines(np.zeros((16, 32), np.int32)), [RED, RED])
    with pytest.raises(DataError, match="ranges of shape"):
        field_overlay(image, None, [RED, RED], np.zeros((3, 2)))


def test_big_fields_are_reduced_with_their_outlines_and_bounded_memory():
    size = 2048
    labels = np.zeros((size, size), np.int32)
    labels[1000:1004, 1500:1504] = 7  # a 4 px object: its outline must survive a 4x reduction
    image = np.zeros((1, size, size), np.uint16)
    tracemalloc.start()
    try:
        rgb = field_overlay(image, Outlines(labels), [RED], np.array([[0.0, 1.0]]),
                            style=OverlayStyle(max_size=512))  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rgb.shape == (512, 512, 3)
    ys, xs = np.nonzero(is_colour(rgb, OUTLINE_COLOUR))
    assert set(ys) == {250} and set(xs) == {375}
    # less than the int32 labels themselves; one float32 copy of the field would be 4 bytes
    # per pixel, a float32 RGB composite at full size 12
    assert peak < 4 * size * size, f"peak {peak / 1e6:.0f} MB"


def test_edges_in_strips_are_those_of_the_whole_image():
    rng = np.random.default_rng(0)
    labels = (rng.random((700, 90)) > 0.6).astype(np.int32) * rng.integers(1, 5, (700, 90))
    np.testing.assert_array_equal(label_edges(labels), find_boundaries(labels, mode="inner"))


def test_reduce_plane_takes_block_means_and_pads_the_edge():
    plane = np.arange(15, dtype=np.float32).reshape(3, 5)
    out = reduce_plane(plane, 2)
    assert out.shape == (2, 3)
    assert out[0, 0] == pytest.approx(np.mean([0, 1, 5, 6]))
    assert out[1, 2] == pytest.approx(14.0)  # the corner block is the edge pixel repeated


def test_markers_are_circles_clipped_at_the_edge():
    rgb = np.zeros((20, 20, 3), np.uint8)
    draw_markers(rgb, np.array([[10, 10], [0, 0]]), RED, radius=4)
    red = is_colour(rgb, RED)
    assert red[10, 14] and red[10, 6] and not red[10, 10]
    assert red[0, 4] and red[4, 0]  # the corner circle's visible quarter


# -- a cell in its field (needs a project made from a field) -----------------------------------

SHAPE = (96, 128)
CENTRES = [(30, 30), (50, 90), (70, 60)]


def _field(tmp_path: Path, with_mask: bool) -> tuple[Path, np.ndarray]:
    """A project of one 2-channel field with three discs; with_mask: a label image, else the
    objects given as centres (CellProfiler style). Returns (project, labels)."""
    labels = discs(SHAPE, CENTRES, radius=5).astype(np.uint16)
    image = np.full((2, *SHAPE), 100, np.uint16)
    image[:, labels > 0] = 1000
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / "A01.tif", image, photometric="minisblack")
    spec = FieldSpec("A01", (src / "A01.tif",), {"plate": "P1", "well": "A01"})
    if with_mask:
        tifffile.imwrite(src / "A01_mask.tif", labels)
        spec = FieldSpec(spec.key, spec.channel_files, spec.metadata, src / "A01_mask.tif")
    else:
        objects = pd.DataFrame({"y": [c[0] for c in CENTRES], "x": [c[1] for c in CENTRES],
                                "ObjectNumber": [1, 2, 3]})  # fmt: skip
        spec = FieldSpec(spec.key, spec.channel_files, spec.metadata, objects=objects)
    project = tmp_path / "project"
    project.mkdir()
    ingest_fields([spec], project, IngestConfig(crop_size=16))
    return project, labels


def test_cell_in_field_highlights_the_cell_and_clips_the_window(tmp_path):
    project, labels = _field(tmp_path, with_mask=True)
    row = cell_row(project, "A01:1")
    assert (row["field"], row["object"]) == ("A01", 1)
    rgb = cell_in_field(project, "A01:1", context_px=40)
    # bbox rows/cols 25..36 grown by 40: clipped at 0 above/left, 76 below/right
    assert rgb.shape == (76, 76, 3)
    high = is_colour(rgb, HIGHLIGHT_COLOUR)
    assert high[find_boundaries(labels == 1, mode="inner")[:76, :76]].all()
    assert set(np.unique(labels[:76, :76][high])) <= {0, 1}
    assert is_colour(rgb, OUTLINE_COLOUR)[find_boundaries(labels == 3)[:76, :76]
                                          & (labels[:76, :76] == 3)].any()  # fmt: skip
    far = cell_in_field(project, "A01:2", context_px=200)
    assert far.shape == (*SHAPE, 3)  # the window is the whole field at most
    by_row = cell_in_field(project, row, context_px=40)  # a row works as well as an id
    np.testing.assert_array_equal(by_row, rgb)


def test_cell_without_a_mask_gets_a_marker_at_its_centre(tmp_path):
    project, _ = _field(tmp_path, with_mask=False)
    rgb = cell_in_field(project, "A01:2", context_px=20)
    # no bbox: a 16 px half box round (50, 90) grown by 20 -> rows 14..86, cols 54..126
    assert rgb.shape == (72, 72, 3)
    high = is_colour(rgb, HIGHLIGHT_COLOUR)
    cy, cx = 50 - 14, 90 - 54
    assert high[cy, cx + 6] and high[cy - 6, cx] and not high[cy, cx]
    assert not is_colour(rgb, OUTLINE_COLOUR).any()  # no label image: no other outlines


def test_field_ranges_are_the_crops_ranges_of_the_fields_plate(tmp_path):
    project, _ = _field(tmp_path, with_mask=True)
    manifest = json.loads((project / "pixels" / "parts.json").read_text())
    part = manifest["parts"][0]
    group = "P1" if part["group_column"] == "plate" else "*"
    np.testing.assert_allclose(field_ranges(project, "A01"), part["ranges"][group])
    with pytest.raises(DataError, match="no field 'B07'"):
        field_ranges(project, "B07")


def test_unknown_cells_and_crop_projects_are_one_line_errors(tmp_path):
    project, _ = _field(tmp_path, with_mask=True)
    with pytest.raises(DataError, match="no cell 'nope'"):
        cell_row(project, "nope")
    crops = tmp_path / "crops_project"
    crops.mkdir()
    pd.DataFrame({"cell_id": ["a"], "source": ["a.tif"]}).to_parquet(crops / "cells.parquet")
    with pytest.raises(DataError, match="do not come from whole fields"):
        cell_in_field(crops, "a")


def test_render_field_outlines_cells_mutes_border_objects_and_enlarges(tmp_path):
    labels = discs(SHAPE, [*CENTRES, (2, 100)], radius=5).astype(np.uint16)  # 4 touches the top
    image = np.full((2, *SHAPE), 100, np.uint16)
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / "A01.tif", image, photometric="minisblack")
    tifffile.imwrite(src / "A01_mask.tif", labels)
    project = tmp_path / "project"
    project.mkdir()
    spec = FieldSpec("A01", (src / "A01.tif",), {"plate": "P1"}, src / "A01_mask.tif")
    ingest_fields([spec], project, IngestConfig(crop_size=16))
    assert has_fields(project) and not has_fields(tmp_path)
    assert field_cells(project, "A01")["object"].tolist() == [1, 2, 3]
    rgb = render_field(project, "A01", [RED, RED], FieldView(highlight=2, display_size=256))
    assert rgb.shape == (2 * SHAPE[0], 2 * SHAPE[1], 3)  # 128 px wide: enlarged 2x
    small = rgb[::2, ::2]
    assert is_colour(small, MUTED_COLOUR)[find_boundaries(labels == 4, mode="inner")].all()
    assert is_colour(small, OUTLINE_COLOUR)[find_boundaries(labels == 1, mode="inner")].all()
    assert is_colour(small, HIGHLIGHT_COLOUR)[find_boundaries(labels == 2, mode="inner")].all()
    bare = render_field(project, "A01", [RED, RED], FieldView(outlines=False, display_size=128))
    assert not is_colour(bare, OUTLINE_COLOUR).any() and not is_colour(bare, MUTED_COLOUR).any()


def test_render_field_of_centres_draws_circles(tmp_path):
    project, _ = _field(tmp_path, with_mask=False)
    rgb = render_field(project, "A01", [RED, RED], FieldView(highlight=3, display_size=128))
    assert rgb.shape == (*SHAPE, 3)
    assert is_colour(rgb, OUTLINE_COLOUR)[30, 30 + 4]  # circle of radius 4 round cell 1
    assert is_colour(rgb, HIGHLIGHT_COLOUR)[70, 60 + 6]  # the highlighted one, radius 6

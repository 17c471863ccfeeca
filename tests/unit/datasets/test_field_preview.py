"""The preview of one field before a project is made from it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from datasets.errors import DataError
from datasets.fields.preview import preview_field
from datasets.fields.render import HIGHLIGHT_COLOUR, MUTED_COLOUR, OUTLINE_COLOUR
from datasets.fields.spec import FieldSpec
from datasets.render import hex_to_rgb

SHAPE = (96, 128)
CENTRES = [(30, 30), (50, 90), (70, 60), (3, 100)]  # the last one touches the top border


def _has(rgb: np.ndarray, colour: str) -> bool:
    return bool((rgb == (hex_to_rgb(colour) * 255 + 0.5).astype(np.uint8)).all(axis=-1).any())


@pytest.fixture
def field(tmp_path) -> FieldSpec:
    """A 1-channel field of four bright discs (radius 6) on a noisy background, and its mask."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    labels = np.zeros(SHAPE, np.uint16)
    for k, (y, x) in enumerate(CENTRES, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= 36] = k
    image = (100 + 900 * (labels > 0) + rng.normal(0, 10, SHAPE)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "A01.tif", image)
    tifffile.imwrite(tmp_path / "A01_mask.tif", labels)
    return FieldSpec("A01", (tmp_path / "A01.tif",), {}, tmp_path / "A01_mask.tif")


def test_a_field_with_a_mask_shows_its_mask_whatever_the_method(field):
    for method in ("classical", "given"):
        shown = preview_field(field, method, display_size=128)
        assert (shown.source, shown.n_objects, shown.n_border) == ("mask", 4, 1)
        assert "A01_mask.tif, used as given" in shown.note
        assert shown.image.shape == (*SHAPE, 3)
        assert _has(shown.image, OUTLINE_COLOUR) and _has(shown.image, MUTED_COLOUR)
    kept = preview_field(field, "classical", keep_border=True, display_size=128)
    assert not _has(kept.image, MUTED_COLOUR)


def test_without_a_mask_the_field_is_segmented_classically(field):
    bare = FieldSpec(field.key, field.channel_files)
    shown = preview_field(bare, "classical", display_size=256)
    assert (shown.source, shown.n_objects, shown.n_border) == ("classical", 4, 1)
    assert shown.image.shape == (2 * SHAPE[0], 2 * SHAPE[1], 3)  # enlarged 2x for display
    unet = preview_field(bare, "unet", display_size=128)
    assert unet.source == "classical" and "U-Net is trained when the project is made" in unet.note
    given = preview_field(bare, "given", display_size=128)
    assert (given.source, given.n_objects) == ("none", 0) and "will be skipped" in given.note
    assert not _has(given.image, OUTLINE_COLOUR)


def test_objects_at_centres_get_circles_and_bad_methods_raise(field):
    objects = pd.DataFrame({"y": [30.0, 50.0], "x": [30.0, 90.0]})
    shown = preview_field(FieldSpec("A01", field.channel_files, objects=objects), display_size=128)
    assert (shown.source, shown.n_objects) == ("centres", 2) and _has(shown.image, HIGHLIGHT_COLOUR)
    with pytest.raises(DataError, match="segment 'magic'"):
        preview_field(field, "magic")

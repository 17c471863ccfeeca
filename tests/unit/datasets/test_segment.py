"""Classical field segmentation (datasets.segmentation.classical) and its scoring (datasets.segmentation.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from datasets.errors import DataError
from datasets.segmentation.classical import (
    SegmentConfig,
    field_polarity,
    object_table,
    segment_field,
    segment_nuclei,
    touches_border,
)
from datasets.segmentation.metrics import SegScore, score_segmentation
from tests.conftest import NUCLEI_FIELD


def discs(
    centres: list[tuple[int, int]], radius: float = 8.0, size: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A uint16 fluorescence-like image of bright discs on a noisy background, and the
    true labels (1..n in ``centres`` order; where discs overlap the nearer centre wins)."""
    yy, xx = np.mgrid[:size, :size]
    dist = np.stack([np.hypot(yy - cy, xx - cx) for cy, cx in centres])
    truth = np.where(dist.min(axis=0) < radius, dist.argmin(axis=0) + 1, 0).astype(np.int32)
    rng = np.random.default_rng(seed)
    image = 200.0 + 800.0 * (truth > 0) + rng.normal(0.0, 20.0, (size, size))
    return np.clip(image, 0, 65535).astype(np.uint16), truth


SPREAD = [(20, 20), (20, 64), (20, 105), (64, 30), (100, 40), (100, 100)]


def test_separate_discs_are_found_one_each():
    image, truth = discs(SPREAD)
    labels = segment_nuclei(image)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert labels.max() == len(SPREAD)
    assert sorted(np.unique(labels)) == list(range(len(SPREAD) + 1))  # consecutive ids
    score = score_segmentation(truth, labels)
    assert score.tp == len(SPREAD) and score.f1 == 1.0
    assert score.mean_iou > 0.85


def test_touching_pair_is_split():
    image, truth = discs([(64, 50), (64, 67)], radius=9.0)  # overlap by one pixel
    assert len(np.unique(truth)) == 3
    labels = segment_nuclei(image)
    assert labels.max() == 2
    assert score_segmentation(truth, labels).tp == 2
    assert segment_nuclei(image, SegmentConfig(split=False)).max() == 1  # one blob without it


def test_dark_nuclei_give_the_same_objects_as_bright():
    image, truth = discs(SPREAD + [(64, 80), (64, 97)])
    dark = (65535 - image).astype(np.uint16)  # brightfield-like: nuclei darker than background
    assert field_polarity(image) == "bright" and field_polarity(dark) == "dark"
    bright_labels, dark_labels = segment_nuclei(image), segment_nuclei(dark)
    assert dark_labels.max() == bright_labels.max() == len(SPREAD) + 2
    assert score_segmentation(bright_labels, dark_labels, exclude_border=False).f1 == 1.0
    forced = segment_nuclei(dark, SegmentConfig(polarity="dark"))
    assert score_segmentation(truth, forced).f1 == 1.0


def test_dark_nuclei_under_uneven_illumination():
    image, truth = discs(SPREAD, size=256)
    ramp = np.linspace(0.5, 1.0, 256)
    shading = ramp[:, None] * ramp[None, ::-1]  # a quarter of the light in one corner
    brightfield = ((4000.0 - image) * shading).astype(np.uint16)  # darker nuclei, bright background
    assert score_segmentation(truth, segment_nuclei(brightfield)).f1 == 1.0


def test_8_bit_16_bit_and_float_agree():
    image, truth = discs(SPREAD)
    as8 = np.clip(image / 8, 0, 255).astype(np.uint8)
    for variant in (as8, image.astype(np.float32) / 65535.0):
        assert score_segmentation(truth, segment_nuclei(variant)).f1 == 1.0


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64), np.uint16),
        np.full((64, 64), 1234, np.uint16),
        np.full((64, 64), 0.5, np.float32),
        np.tile(np.arange(256, dtype=np.uint16), (256, 1)),  # a smooth ramp
        (100 + np.random.default_rng(1).poisson(50, (256, 256))).astype(np.uint16),  # noise
        np.random.default_rng(2).integers(0, 256, (256, 256)).astype(np.uint8),
    ],
    ids=["zeros", "constant", "float-constant", "ramp", "poisson-noise", "uniform-noise"],
)
def test_empty_flat_or_noise_fields_have_no_objects(image):
    labels = segment_nuclei(image)
    assert labels.shape == image.shape and labels.max() == 0
    assert segment_field(np.stack([image, image]), SegmentConfig(cell_channel=1)).max() == 0


def test_size_filter():
    image, _ = discs([(30, 30), (90, 90)], radius=4.0)  # area ~50 px each
    assert segment_nuclei(image).max() == 2
    assert segment_nuclei(image, SegmentConfig(min_area=80)).max() == 0
    assert segment_nuclei(image, SegmentConfig(max_area=40)).max() == 0


def test_segment_field_uses_the_nuclear_channel_and_grows_cells():
    image, truth = discs([(40, 40), (40, 90), (95, 64)])
    yy, xx = np.mgrid[:128, :128]
    cytoplasm = np.full(image.shape, 100.0)
    for cy, cx in [(40, 40), (40, 90), (95, 64)]:
        cytoplasm[np.hypot(yy - cy, xx - cx) < 18] = 600.0
    field = np.stack([np.full(image.shape, 7, np.uint16), cytoplasm.astype(np.uint16), image])
    nuclei = segment_field(field, SegmentConfig(channel=2))
    assert score_segmentation(truth, nuclei).f1 == 1.0
    cells = segment_field(field, SegmentConfig(channel=2, cell_channel=1, expand_px=15))
    assert cells.max() == 3
    assert np.all(cells[nuclei > 0] == nuclei[nuclei > 0])  # each cell holds its nucleus
    for label in (1, 2, 3):
        area = (cells == label).sum()
        assert 3 * (nuclei == label).sum() < area < np.pi * 19**2  # grown, but not past the cell


def test_field_and_config_errors_name_the_problem():
    field = np.zeros((2, 32, 32), np.uint16)
    with pytest.raises(DataError, match=r"channel=2 but the field has 2 channel\(s\)"):
        segment_field(field, SegmentConfig(channel=2))
    with pytest.raises(DataError, match=r"cell_channel=5 but the field has 2"):
        segment_field(field, SegmentConfig(cell_channel=5))
    with pytest.raises(DataError, match=r"expected \(C, H, W\) or \(H, W\)"):
        segment_field(np.zeros((1, 2, 32, 32)))
    with pytest.raises(DataError, match=r"expected one \(H, W\) channel"):
        segment_nuclei(field)
    with pytest.raises(DataError, match="too small"):
        segment_nuclei(np.zeros((1, 40), np.uint8))
    with pytest.raises(DataError, match="NaN"):
        segment_nuclei(np.full((32, 32), np.nan, np.float32))
    with pytest.raises(DataError, match=r"SegmentConfig.threshold='adaptive' is invalid"):
        SegmentConfig(threshold="adaptive")
    with pytest.raises(DataError, match=r"SegmentConfig.max_area=10 is invalid"):
        SegmentConfig(min_area=20, max_area=10)


def test_object_table_and_touches_border():
    labels = np.zeros((20, 30), np.int32)
    labels[0:4, 5:9] = 1  # on the top edge
    labels[8:12, 10:16] = 2
    labels[15:20, 25:30] = 5  # bottom-right corner
    assert touches_border(labels) == {1, 5}
    table = object_table(labels)
    assert list(table["label"]) == [1, 2, 5]
    row = table.set_index("label").loc[2]
    assert (row.min_row, row.min_col, row.max_row, row.max_col) == (8, 10, 12, 16)
    assert row.area == 24 and (row.centroid_y, row.centroid_x) == (9.5, 12.5)
    assert list(table["touches_border"]) == [True, False, True]
    empty = object_table(np.zeros((5, 5), np.int32))
    assert len(empty) == 0 and "touches_border" in empty.columns


# -- scoring ----------------------------------------------------------------------------------


def squares(*boxes: tuple[int, int, int, int], size: int = 40) -> np.ndarray:
    """Labels 1..n of rectangles (row0, col0, row1, col1), in order."""
    labels = np.zeros((size, size), np.int32)
    for k, (r0, c0, r1, c1) in enumerate(boxes, start=1):
        labels[r0:r1, c0:c1] = k
    return labels


def test_perfect_prediction_scores_one_whatever_the_ids():
    truth = squares((5, 5, 15, 15), (20, 20, 30, 32))
    pred = np.where(truth > 0, 10 - truth, 0)  # other ids
    assert score_segmentation(truth, pred) == SegScore(2, 2, 2, 1.0, 1.0, 1.0, 1.0)


def test_shifted_and_merged_predictions():
    truth = squares((5, 5, 15, 15), (5, 16, 15, 22), (25, 25, 35, 35))
    shifted = squares((5, 7, 15, 17), (5, 30, 15, 36), (27, 25, 37, 35))  # IoU 80/120, 0, 80/120
    score = score_segmentation(truth, shifted)
    assert (score.n_true, score.n_pred, score.tp) == (3, 3, 2)
    assert score.mean_iou == pytest.approx(80 / 120)
    assert score.f1 == pytest.approx(2 / 3)
    merged = squares((5, 5, 15, 22), (25, 25, 35, 35))  # the first two as one object
    score = score_segmentation(truth, merged)  # IoU 100/170 with the first: still a match
    assert (score.n_true, score.n_pred, score.tp) == (3, 2, 2)
    assert score_segmentation(truth, merged, iou_threshold=0.7).tp == 1


def test_border_rule():
    truth = squares((0, 5, 10, 15), (20, 20, 30, 30), (10, 30, 18, 39))
    pred = squares(
        (0, 5, 8, 15),  # a border truth object: dropped on both sides
        (20, 20, 30, 30),  # interior hit
        (10, 30, 18, 40),  # reaches the edge, matches interior truth 3: kept, a hit
        (30, 0, 36, 6),  # on the edge, no truth: dropped, not a false positive
        (8, 4, 14, 16),  # interior, but its best partner is border truth 1: dropped
        (33, 15, 38, 20),  # interior, no truth: a false positive
    )
    score = score_segmentation(truth, pred)
    assert (score.n_true, score.n_pred, score.tp) == (2, 3, 2)
    assert score.precision == pytest.approx(2 / 3) and score.recall == 1.0
    plain = score_segmentation(truth, pred, exclude_border=False)
    assert (plain.n_true, plain.n_pred, plain.tp) == (3, 6, 3)


def test_low_threshold_matching_is_one_to_one():
    truth = squares((5, 5, 15, 15), (5, 15, 15, 25))
    pred = squares((5, 5, 15, 25))  # IoU 0.5 with each
    score = score_segmentation(truth, pred, iou_threshold=0.3, exclude_border=False)
    assert score.tp == 1 and score.mean_iou == pytest.approx(0.5)
    assert score_segmentation(np.zeros((8, 8), int), np.zeros((8, 8), int)).f1 == 1.0


def test_scoring_errors():
    with pytest.raises(DataError, match="same shape"):
        score_segmentation(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(DataError, match="non-negative integer"):
        score_segmentation(np.zeros((4, 4), float), np.zeros((4, 4), int))
    with pytest.raises(DataError, match="iou_threshold"):
        score_segmentation(np.zeros((4, 4), int), np.zeros((4, 4), int), iou_threshold=0)


@pytest.mark.skipif(not (NUCLEI_FIELD / "img2d.tif").is_file(), reason="shared data absent")
def test_dsb2018_field_with_default_settings():
    image = tifffile.imread(NUCLEI_FIELD / "img2d.tif")
    truth = tifffile.imread(NUCLEI_FIELD / "mask2d.tif")
    score = score_segmentation(truth, segment_nuclei(image))
    assert score.n_true == 112
    assert score.f1 >= 0.85 and score.mean_iou >= 0.8


def _magnified(image: np.ndarray, truth: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``truth`` as a ``factor`` times stronger objective would see them: pixels
    interpolated, labels repeated, fresh pixel noise (5% of the image's spread) added."""
    from skimage.transform import rescale

    big = rescale(image.astype(np.float64), factor, order=1)
    big += np.random.default_rng(0).normal(0.0, 0.05 * big.std(), big.shape)
    labels = np.kron(truth, np.ones((factor, factor), dtype=truth.dtype))
    return np.clip(big, 0, 65535).astype(np.uint16), labels


def test_object_sizes_follow_the_magnification():
    from datasets.fields.demo import make_field

    image, truth, _ = make_field(np.random.default_rng(3), size=256)
    for factor in (1, 4):  # 4x: nuclei of ~8,000 px, beyond any fixed 20x size range
        big, labels = _magnified(image[0], truth, factor)
        score = score_segmentation(labels, segment_nuclei(big))
        assert score.f1 >= 0.9, (factor, score)
    smallest, largest = SegmentConfig().size_range(radius=40.0)
    assert smallest == pytest.approx(np.pi * 100) and largest == pytest.approx(25 * np.pi * 1600)
    assert SegmentConfig(min_area=5, max_area=9).size_range(radius=40.0) == (5.0, 9.0)


@pytest.mark.skipif(not (NUCLEI_FIELD / "img2d.tif").is_file(), reason="shared data absent")
def test_dsb2018_field_at_three_times_the_magnification():
    image = tifffile.imread(NUCLEI_FIELD / "img2d.tif")
    truth = tifffile.imread(NUCLEI_FIELD / "mask2d.tif")
    big, labels = _magnified(image, truth, 3)  # nuclei of ~60 px across: a 60x objective
    score = score_segmentation(labels, segment_nuclei(big))
    assert score.n_true == 112 and score.f1 >= 0.9 and score.mean_iou >= 0.8


def test_objects_left_out_for_their_size_are_counted():
    from datasets.segmentation.classical import ClassicalSegmenter, Dropped

    centres = [(28, 28), (28, 112), (112, 28), (112, 112), (70, 70)]
    image, _ = discs(centres, radius=20.0, size=140)
    yy, xx = np.mgrid[:140, :140]
    for cy, cx in ((8, 64), (132, 64)):  # two small blobs of ~38 px: more than noise, less
        image[np.hypot(yy - cy, xx - cx) < 3.5] = 1000  # than a disc of a quarter radius
    segmenter = ClassicalSegmenter()
    labels = segmenter(image)
    assert labels.max() == 5 and (segmenter.dropped.small, segmenter.dropped.large) == (2, 0)
    assert "left out 2 specks" in (segmenter.dropped.note() or "")
    assert Dropped().note() is None
    counts = Dropped()
    assert segment_nuclei(image, SegmentConfig(max_area=300), counts).max() == 0
    assert counts.large == 5  # every disc (~1,250 px) is above a max_area of 300

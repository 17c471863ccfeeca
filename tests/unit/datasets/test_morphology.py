"""Tests for datasets.morphology: polarity, masks, shape/intensity/texture features."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import measure

from datasets.errors import DataError
from datasets.morphology import detect_polarity, morphology_features

S = 64
YY, XX = np.mgrid[:S, :S].astype(np.float32)
from tests.conftest import JURKAT  # noqa: E402


def ellipse(cx: float, cy: float, a: float, b: float, theta: float = 0.0) -> np.ndarray:
    """(S, S) bool filled ellipse."""
    u = (XX - cx) * np.cos(theta) + (YY - cy) * np.sin(theta)
    v = -(XX - cx) * np.sin(theta) + (YY - cy) * np.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def disk(r: float, cx: float = 31.5, cy: float = 31.5) -> np.ndarray:
    return ellipse(cx, cy, r, r)


def crops_of(*masks: np.ndarray, fg: float = 0.8, bg: float = 0.1) -> np.ndarray:
    """(n, 1, S, S) float32 crops, one per mask."""
    return np.stack([np.where(m, fg, bg) for m in masks])[:, None].astype(np.float32)


def feature(crops: np.ndarray, name: str, polarity: str = "bright") -> np.ndarray:
    feats, names = morphology_features(crops, polarity)
    return feats[:, names.index(name)]


def test_polarity_bright_on_dark_and_dark_on_bright() -> None:
    rng = np.random.default_rng(0)
    masks = [disk(r, 31.5 + dx, 31.5 + dy) for r, dx, dy in rng.uniform(5, 14, (20, 3))]
    bright = np.repeat(crops_of(*masks), 2, axis=1)
    bright += rng.normal(0, 0.03, bright.shape).astype(np.float32)
    dark_rgb = np.repeat(1.0 - bright[:, :1], 3, axis=1)  # brightfield-like RGB
    assert detect_polarity(bright) == "bright"
    assert detect_polarity(dark_rgb) == "dark"


def test_area_grows_with_radius_and_matches_the_disk() -> None:
    radii = [4, 7, 10, 14, 18]
    area = feature(crops_of(*(disk(r) for r in radii)), "ch0_area")
    assert np.all(np.diff(area) > 0)
    np.testing.assert_allclose(area, np.pi * np.square(radii), rtol=0.15)


def test_dark_polarity_segments_the_dark_cell() -> None:
    crops = 1.0 - crops_of(disk(10))
    assert feature(crops, "ch0_area", "dark")[0] == pytest.approx(np.pi * 100, rel=0.1)


def test_elongated_ellipse_is_more_eccentric_than_a_disk() -> None:
    crops = crops_of(ellipse(31.5, 31.5, 16, 5, 0.6), disk(9))
    ecc = feature(crops, "ch0_eccentricity")
    assert ecc[0] > 0.9 and ecc[1] < 0.3


def test_shape_measures_agree_with_regionprops() -> None:
    mask = ellipse(30.0, 33.0, 15, 8, 0.4)
    feats, names = morphology_features(crops_of(mask))
    got = dict(zip(names, feats[0], strict=True))
    props = measure.regionprops(mask.astype(np.uint8))[0]
    assert got["ch0_area"] == pytest.approx(props.area, rel=0.03)
    assert got["ch0_eccentricity"] == pytest.approx(props.eccentricity, abs=0.02)
    assert got["ch0_major_axis"] == pytest.approx(props.axis_major_length, rel=0.03)
    assert got["ch0_minor_axis"] == pytest.approx(props.axis_minor_length, rel=0.03)
    assert got["ch0_extent"] == pytest.approx(props.extent, rel=0.05)
    assert got["ch0_perimeter"] == pytest.approx(props.perimeter, rel=0.08)
    assert got["ch0_solidity"] == pytest.approx(props.solidity, abs=0.05)


def test_concave_shape_has_lower_solidity() -> None:
    crescent = disk(14) & ~disk(12, 38.0, 31.5)
    solidity = feature(crops_of(disk(12), crescent), "ch0_solidity")
    assert solidity[0] > 0.9 and solidity[1] < 0.7


def test_two_blobs_count_two_objects_and_an_edge_neighbour_is_ignored() -> None:
    two = disk(5, 24, 31.5) | disk(5, 40, 31.5)
    with_neighbour = disk(8) | disk(10, 62, 5)  # a neighbour cut at the crop corner
    feats, names = morphology_features(crops_of(disk(8), two, with_neighbour))
    n_objects = feats[:, names.index("ch0_n_objects")]
    area = feats[:, names.index("ch0_area")]
    extra = feats[:, names.index("ch0_extra_area")]
    np.testing.assert_array_equal(n_objects, [1, 2, 1])
    assert area[2] == pytest.approx(area[0], rel=0.02)
    assert extra[0] == 0 and extra[1] == pytest.approx(np.pi * 25, rel=0.2)


def test_intensity_statistics_inside_the_mask_and_outside() -> None:
    feats, names = morphology_features(crops_of(disk(10), fg=0.8, bg=0.1))
    got = dict(zip(names, feats[0], strict=True))
    assert got["ch0_mean"] == pytest.approx(0.8, abs=0.01)
    assert got["ch0_p50"] == pytest.approx(0.8, abs=1e-6)
    assert got["ch0_max"] == pytest.approx(0.8, abs=1e-6)
    assert got["ch0_integrated"] == pytest.approx(0.8 * got["ch0_area"], rel=0.01)
    assert got["ch0_background_mean"] == pytest.approx(0.1, abs=0.01)
    assert got["ch0_crop_max"] == pytest.approx(0.8, abs=1e-6)


def test_textured_cell_has_more_texture_than_a_flat_one() -> None:
    rng = np.random.default_rng(1)
    flat = crops_of(disk(12))
    rough = flat.copy()
    rough[0, 0][disk(12)] += rng.uniform(-0.15, 0.15, disk(12).sum()).astype(np.float32)
    feats, names = morphology_features(np.concatenate([flat, rough]))
    for name in ("ch0_residual_std", "ch0_contrast", "ch0_std"):
        assert feats[1, names.index(name)] > feats[0, names.index(name)] + 0.01


def test_empty_and_flat_crops_give_finite_zeros() -> None:
    crops = np.zeros((3, 2, S, S), dtype=np.float32)
    crops[1] = 0.5  # flat, not empty
    feats, names = morphology_features(crops)
    assert np.isfinite(feats).all()
    np.testing.assert_array_equal(feats[0], 0.0)
    area_cols = [i for i, n in enumerate(names) if n.endswith("_area") or n.endswith("_objects")]
    np.testing.assert_array_equal(feats[1, area_cols], 0.0)


def test_features_of_a_cell_do_not_depend_on_its_batch() -> None:
    rng = np.random.default_rng(2)
    crops = np.clip(
        crops_of(disk(6), ellipse(31, 30, 14, 6, 1.0), disk(11))
        + rng.normal(0, 0.05, (3, 1, S, S)),
        0,
        1,
    ).astype(np.float32)
    batch, names = morphology_features(crops)
    alone = np.concatenate([morphology_features(c[None])[0] for c in crops])
    np.testing.assert_allclose(batch, alone, rtol=1e-5, atol=1e-6)
    assert len(names) == batch.shape[1] == 31
    assert names[0] == "ch0_area" and len(set(names)) == len(names)


def test_channels_are_measured_separately() -> None:
    crops = np.concatenate([crops_of(disk(5)), crops_of(disk(12))], axis=1)
    feats, names = morphology_features(crops)
    assert feats.shape == (1, 62)
    assert feats[0, names.index("ch1_area")] > 4 * feats[0, names.index("ch0_area")]


def test_bad_input_raises_data_error() -> None:
    with pytest.raises(DataError, match=r"expected \(n, C, S, S\)"):
        morphology_features(np.zeros((2, 64, 64), dtype=np.float32))
    with pytest.raises(DataError, match="polarity 'sideways'"):
        morphology_features(np.zeros((1, 1, 64, 64), dtype=np.float32), polarity="sideways")
    with pytest.raises(DataError, match="0 crops"):
        detect_polarity(np.zeros((0, 1, 64, 64), dtype=np.float32))


@pytest.mark.skipif(not JURKAT.exists(), reason="shared Jurkat data not present")
def test_real_dna_stain_is_bright_and_telophase_has_two_nuclei() -> None:
    import pandas as pd
    import tifffile

    from datasets.normalise import apply_ranges, compute_ranges

    labels = pd.read_csv(JURKAT / "labels.csv")
    chosen = labels[labels["label"].isin(["G1", "Telophase"])].groupby("label").head(20)
    raw = np.stack([tifffile.imread(JURKAT / p)[1:2] for p in chosen["path"]])  # DNA channel
    crops = apply_ranges(raw, compute_ranges(raw))
    assert detect_polarity(crops) == "bright"
    n_objects = feature(crops, "ch0_n_objects")
    is_telo = (chosen["label"] == "Telophase").to_numpy()
    assert n_objects[is_telo].mean() > 1.5 > 1.1 > n_objects[~is_telo].mean()


def test_hu_moments_are_rotation_invariant_and_separate_shapes() -> None:
    from datasets.morphology import HU_NAMES

    flat_ellipse = crops_of(ellipse(31.5, 31.5, 14, 5, 0.0))
    turned = np.rot90(flat_ellipse, k=1, axes=(2, 3)).copy()
    round_ = crops_of(disk(9))
    feats, names = morphology_features(np.concatenate([flat_ellipse, turned, round_]))
    cols = [names.index(f"ch0_{h}") for h in HU_NAMES]
    hu = feats[:, cols]
    np.testing.assert_allclose(hu[0, :2], hu[1, :2], rtol=1e-3)
    assert hu[0, 1] > hu[2, 1] + 1.0, "an ellipse's second invariant exceeds a disk's"


def mixed_channels(n: int = 30, seed: int = 0) -> np.ndarray:
    """(n, 3, S, S): a bright nucleus, a dark brightfield-like cell, and a channel of smooth
    random blotches with no cell in it (no clean foreground/background split)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    radii = rng.uniform(6, 12, n)
    nucleus = crops_of(*(disk(r) for r in radii))[:, 0]
    brightfield = 1.0 - crops_of(*(disk(r + 4) for r in radii), fg=0.7, bg=0.2)[:, 0]
    blotches = ndimage.gaussian_filter(rng.random((n, S, S)), sigma=(0, 4, 4))
    blotches = (blotches - blotches.min()) / (blotches.max() - blotches.min())
    noise = rng.normal(0, 0.02, (n, 3, S, S))
    return (np.stack([nucleus, brightfield, blotches], axis=1) + noise).astype(np.float32)


def test_each_channel_gets_its_own_polarity() -> None:
    from datasets.morphology import channel_polarities

    crops = mixed_channels()[:, :2]
    assert channel_polarities(crops) == ("bright", "dark")
    # the dark channel segmented as dark finds the cell, as bright it finds the background
    feats, names = morphology_features(crops, ("bright", "dark"))
    feats_wrong, _ = morphology_features(crops, "bright")
    col = names.index("ch1_area")
    assert np.all(feats[:, col] < 0.5 * S * S) and np.all(feats_wrong[:, col] > 0.5 * S * S)


def test_mask_quality_separates_a_clean_split_from_blotches() -> None:
    from datasets.morphology import MASK_QUALITY_MIN, mask_quality

    q = mask_quality(mixed_channels(), ("bright", "dark", "bright"))
    assert q.shape == (3,) and np.all((q >= 0) & (q <= 1))
    assert min(q[0], q[1]) >= MASK_QUALITY_MIN > q[2]


def test_unmasked_channel_gets_whole_crop_statistics_only() -> None:
    from datasets.morphology import CROP_NAMES

    crops = mixed_channels(5)
    feats, names = morphology_features(crops, ("bright", "dark", "bright"), (True, True, False))
    assert feats.shape == (5, 31 * 2 + len(CROP_NAMES)) and len(names) == feats.shape[1]
    assert names[-3:] == [f"ch2_{m}" for m in CROP_NAMES]
    np.testing.assert_allclose(feats[:, -3], crops[:, 2].mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(feats[:, -1], crops[:, 2].max(axis=(1, 2)), rtol=1e-6)
    with pytest.raises(DataError, match="2 mask flags for 3 channels"):
        morphology_features(crops, "bright", (True, False))
    with pytest.raises(DataError, match="2 polarities for 3 channels"):
        morphology_features(crops, ("bright", "dark"))


def test_profile_trusts_clean_channels_and_always_keeps_one() -> None:
    from datasets.features import profile_channels

    crops = mixed_channels()
    profile = profile_channels(crops)
    assert profile.polarities[:2] == ("bright", "dark")
    assert profile.masked == (True, True, False)
    only_blotches = profile_channels(crops[:, 2:])
    assert only_blotches.masked == (True,), "the best channel is segmented even when poor"


@pytest.mark.skipif(not JURKAT.exists(), reason="shared Jurkat data not present")
def test_real_ifc_profile_segments_only_the_dna_stain() -> None:
    """Brightfield and darkfield masks of imaging flow cytometry are unstable; DNA is not."""
    import pandas as pd
    import tifffile

    from datasets.features import profile_channels
    from datasets.normalise import apply_ranges, compute_ranges

    labels = pd.read_csv(JURKAT / "labels.csv").sample(120, random_state=0)
    raw = np.stack([tifffile.imread(JURKAT / p) for p in labels["path"]])  # (n, 3, 40, 40)
    profile = profile_channels(apply_ranges(raw, compute_ranges(raw)))
    assert profile.masked == (False, True, False)
    assert profile.polarities[1] == "bright"


def test_central_object_side_measures_the_cell_not_the_crop(rng):
    from datasets.morphology import central_object_side

    yy, xx = np.mgrid[:150, :120] - np.array([74.5, 59.5])[:, None, None]
    disc = np.hypot(yy, xx) < 25  # a 50-px cell in a 150 x 120 crop
    bright = (100 + 900 * disc + rng.normal(0, 10, disc.shape)).astype(np.uint16)
    assert abs(central_object_side(bright[None]) - 50) <= 3
    dark_rgb = np.stack([230 - 150 * disc] * 3).astype(np.uint8)  # stained: dark on bright
    assert abs(central_object_side(dark_rgb) - 50) <= 3
    flat = np.full((2, 40, 30), 7, np.uint16)
    assert central_object_side(flat) == 40  # nothing to measure: the crop's larger side

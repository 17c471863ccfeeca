"""Stained brightfield RGB: modality detection, stain separation and colour/texture features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets.errors import DataError
from datasets.morphology import morphology_features
from datasets.stain import (
    STAIN_NAMES,
    _glcm,
    _quantise,
    detect_modality,
    separate_stains,
    stain_features,
)

PURPLE = (0.45, 0.25, 0.6)  # haematoxylin-like (Giemsa nucleus / parasite)
PINK = (0.95, 0.6, 0.75)  # eosin-like


def stained(n=6, size=32, colour=PURPLE, seed=0):
    """RGB crops (n, 3, S, S) in [0, 1]: a dyed disc on a bright background, with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    disc = np.hypot(yy, xx) < size / 5
    out = np.empty((n, 3, size, size), np.float32)
    for c in range(3):
        out[:, c] = np.where(disc, colour[c], 0.95)
    return np.clip(out + rng.normal(0, 0.02, out.shape), 0, 1).astype(np.float32)


def test_stain_separation_is_skimages_rgb2hed():
    from skimage.color import rgb2hed

    x = stained(3)
    ref = np.maximum(rgb2hed(np.moveaxis(x, 1, -1)), 0)
    np.testing.assert_allclose(np.moveaxis(separate_stains(x), 1, -1), ref, atol=1e-5)


def test_glcm_is_skimages_graycoprops():
    from skimage.feature import graycomatrix, graycoprops

    q = _quantise(separate_stains(stained(2, seed=3))[:, 0])
    for i in range(2):
        m = graycomatrix(q[i].astype(np.uint8), [1], [0, np.pi / 2], levels=8, symmetric=True)
        m = m.sum(axis=(2, 3), keepdims=True).astype(float)
        ref = [graycoprops(m / m.sum(), p)[0, 0] for p in
               ("contrast", "homogeneity", "energy", "correlation")]  # fmt: skip
        np.testing.assert_allclose(_glcm(q)[i], ref, rtol=1e-5)


def test_modality_tells_stained_rgb_from_fluorescence():
    assert detect_modality(stained()) == "stained_rgb"
    fluo = 1.0 - stained()  # bright cells on a dark background
    assert detect_modality(fluo) == "fluorescence"
    assert detect_modality(stained()[:, :2]) == "fluorescence"  # two channels: not RGB


DATA = Path(__file__).resolve().parents[4] / "shared" / "data"


def _real(name: str, tmp_path: Path, n: int = 80) -> np.ndarray:
    """``n`` crops of a real set, spread over its files, ingested as PhenoScout does (one scale
    for the screen, 64 x 64, per-channel ranges), as stored and read for the features."""
    import shutil

    from datasets.cells import read_cells
    from datasets.crops.ingest import ingest_crops
    from datasets.pixels.store import PixelStore

    folder = DATA / name
    if not folder.exists():
        pytest.skip(f"{folder} not found")
    paths = sorted((folder / "images").rglob("*.*"))
    for k, p in enumerate(paths[:: max(1, len(paths) // n)]):
        shutil.copy(p, tmp_path / f"c{k:03d}{p.suffix}")
    ingest_crops(tmp_path, tmp_path / "project")
    ids = read_cells(tmp_path / "project", columns=["cell_id"])["cell_id"].tolist()
    return PixelStore(tmp_path / "project").read(ids)


@pytest.mark.parametrize(
    ("name", "modality"),
    [
        ("mpidb_falciparum_stages", "stained_rgb"),  # Giemsa-stained thin smears
        ("jurkat_cellcycle_ifc", "fluorescence"),  # brightfield, DNA, darkfield: not one picture
    ],
)
def test_modality_on_real_screens(tmp_path, name, modality):
    assert detect_modality(_real(name, tmp_path)) == modality


def test_stain_features_separate_a_purple_from_a_pink_cell():
    feats, names = stain_features(np.concatenate([stained(4), stained(4, colour=PINK)]))
    assert feats.shape == (8, len(STAIN_NAMES)) and np.isfinite(feats).all()
    col = {n: j for j, n in enumerate(names)}
    hema, eosin = feats[:, col["stain_hema_contrast"]], feats[:, col["stain_eosin_contrast"]]
    assert hema[:4].min() > hema[4:].max()  # purple: more haematoxylin at the centre
    assert (eosin[4:] / np.maximum(hema[4:], 1e-6)).min() > (eosin[:4] / hema[:4]).max()
    assert feats[:4, col["stain_hema_objects"]].min() >= 1


def test_morphology_adds_stain_features_only_for_stained_rgb():
    x = stained(5)
    plain, names = morphology_features(x, "dark")
    both, more = morphology_features(x, "dark", modality="stained_rgb")
    assert more[: len(names)] == names and len(more) == len(names) + len(STAIN_NAMES)
    np.testing.assert_array_equal(both[:, : len(names)], plain)


def test_stain_features_need_rgb():
    with pytest.raises(DataError, match=r"RGB crops of shape \(n, 3, S, S\)"):
        stain_features(np.zeros((2, 2, 16, 16), np.float32))


def test_stained_rgb_is_segmented_once_on_its_best_channel():
    from datasets.features import profile_channels

    profile = profile_channels(stained(40, size=48))
    assert profile.modality == "stained_rgb"
    assert sum(profile.masked) == 1  # one colour picture: one mask, not three
    assert profile.masked[int(np.argmax(profile.quality))]
    fluo = profile_channels(1.0 - stained(40, size=48))  # three bright channels: all segmented
    assert fluo.modality == "fluorescence" and all(fluo.masked)


def test_stained_rgb_override_segments_once(tmp_path):
    from datasets.crops.ingest import ingest_crops
    from datasets.features import project_channels
    from datasets.pixels.store import PixelStore

    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "a.npz", images=(1.0 - stained(30, size=32)) * 1000, labels=["x"] * 30)
    ingest_crops(src, tmp_path / "p")
    store = PixelStore(tmp_path / "p")
    assert all(project_channels(tmp_path / "p", store).masked)
    forced = project_channels(tmp_path / "p", store, modality="stained_rgb")
    assert forced.modality == "stained_rgb" and sum(forced.masked) == 1


def test_stain_features_of_non_finite_crops_are_finite():
    x = stained(3)
    x[0, 1, 5, 5], x[1, 0, 2, 3] = np.nan, np.inf
    feats, _ = stain_features(x)
    assert np.isfinite(feats).all()
    np.testing.assert_array_equal(feats[2], stain_features(stained(3))[0][2])


def test_modality_of_a_whole_stored_giemsa_screen(tmp_path):
    """500 crops of all of MP-IDB as stored (one scale, 64 px), as ingest samples them: red and
    blue move together only weakly (median correlation 0.29), the three channels clearly."""
    from datasets.cells import read_cells
    from datasets.crops.ingest import ingest_crops
    from datasets.pixels.store import PixelStore

    folder = DATA / "mpidb_falciparum_stages"
    if not folder.exists():
        pytest.skip(f"{folder} not found")
    ingest_crops(folder / "images", tmp_path / "p")
    ids = read_cells(tmp_path / "p", columns=["cell_id"])["cell_id"].to_numpy()
    sample = np.sort(np.random.default_rng(0).choice(len(ids), 500, replace=False))
    assert detect_modality(PixelStore(tmp_path / "p").read(list(ids[sample]))) == "stained_rgb"

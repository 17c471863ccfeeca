from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import models.segmentation.segmentation as seg  # noqa: E402
from models.backbone.checkpoint import save_checkpoint  # noqa: E402
from models.backbone.unet import UNet, UNetConfig  # noqa: E402
from models.errors import ModelError  # noqa: E402
from models.segmentation.seg_train import SegmenterConfig, SegTrainConfig, targets_from_labels  # noqa: E402

TINY = SegmenterConfig(width=8, depth=2, tile=64, overlap=16)
PLAIN = SegTrainConfig(
    steps=150,
    max_seconds=0,
    batch_size=4,
    crop=32,
    scale_min=1.0,
    scale_max=1.0,
    gamma_max=1.0,
    gain=0.0,
    noise_max=0.0,
)


def disc_field(
    rng: np.random.Generator, size: int = 64, n: int = 4, radius=(5.0, 9.0), channels: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Separated bright discs on a noisy background: (image uint16, mask int32); image is
    (H, W) or, with ``channels``, (channels, H, W) with the discs on channel 0."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), np.int32)
    for _ in range(50 * n):
        if mask.max() == n:
            break
        r = rng.uniform(*radius)
        cy, cx = rng.uniform(r + 1, size - r - 1, 2)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        if not (mask[d2 <= (r + 3) ** 2] > 0).any():
            mask[d2 <= r**2] = mask.max() + 1
    image = np.clip(100 + 400 * (mask > 0) + rng.normal(0, 20, mask.shape), 0, None)
    image = image.astype(np.uint16)
    if channels:
        image = np.stack(
            [image]
            + [rng.integers(0, 50, mask.shape, dtype=np.uint16) for _ in range(channels - 1)]
        )
    return image, mask


def train_tiny(pairs, device="cpu", **kwargs) -> seg.SegmenterModel:
    run = seg.SegTrainRun(device=device)
    return seg.train_segmenter(pairs, run=run, config=TINY, train_config=PLAIN, **kwargs)


@pytest.fixture(scope="module")
def disc_pairs():
    rng = np.random.default_rng(0)
    return [disc_field(rng) for _ in range(3)]


@pytest.fixture(scope="module")
def trained(disc_pairs) -> seg.SegmenterModel:
    torch.set_num_threads(1)
    return train_tiny(disc_pairs)


def test_targets_mark_boundaries_between_touching_objects():
    labels = np.zeros((8, 8), np.int32)
    labels[1:7, 1:4], labels[1:7, 4:7] = 1, 2
    t = targets_from_labels(labels)
    assert t[0].tolist() == [0] * 8
    assert t[3].tolist() == [0, 2, 1, 2, 2, 1, 2, 0]  # two boundary pixels split the pair
    assert set(np.unique(t[labels == 0])) == {0}


def test_overfits_a_tiny_batch(trained, disc_pairs):
    for image, mask in disc_pairs:
        fg = trained.probabilities(image)[0] > 0.5
        assert (fg == (mask > 0)).mean() > 0.97
        assert trained.segment(image).max() == mask.max()
    assert trained.extra["history"][-1]["stopped"] == "steps"


def test_same_seed_same_weights_on_cpu(disc_pairs):
    short = dataclasses.replace(PLAIN, steps=3)
    runs = [
        seg.train_segmenter(
            disc_pairs, run=seg.SegTrainRun(device="cpu", seed=s), config=TINY, train_config=short
        ).net.state_dict()
        for s in (4, 4, 5)
    ]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_save_load_round_trip(trained, disc_pairs, tmp_path):
    path = trained.save(tmp_path / "seg.pt")
    loaded = seg.load_segmenter(path, device="cpu")
    assert loaded.config == TINY and loaded.channel == trained.channel
    image = disc_pairs[1][0]
    assert np.array_equal(loaded.segment(image), trained.segment(image))


def test_corrupt_and_foreign_checkpoints(tmp_path):
    model = seg.SegmenterModel(UNet(UNetConfig(1, out_channels=3, width=4, depth=2)), TINY)
    good = model.save(tmp_path / "seg.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ModelError, match=r"bad\.pt: corrupt or not a PhenoScout checkpoint"):
        seg.load_segmenter(bad)
    other = save_checkpoint(tmp_path / "other.pt", UNet(UNetConfig(2, width=4, depth=2)))
    with pytest.raises(ModelError, match=r"other\.pt: not a U-Net segmentation checkpoint"):
        seg.load_segmenter(other)
    net = UNet(UNetConfig(1, out_channels=3, width=4, depth=2))
    old = save_checkpoint(tmp_path / "old.pt", net, extra={"segmenter": {"seed_level": 0.7}})
    with pytest.raises(ModelError, match=r"old\.pt: segmenter config has unknown keys"):
        seg.load_segmenter(old)


def test_tiles_stitch_like_one_pass():
    torch.manual_seed(0)
    net = UNet(UNetConfig(1, out_channels=3, width=4, depth=2)).eval()
    plane = np.random.default_rng(1).random((150, 170), dtype=np.float32)
    tiled = seg._tiled_probs(net, plane, TINY, torch.device("cpu"))
    whole = seg._tiled_probs(net, plane, dataclasses.replace(TINY, tile=256), torch.device("cpu"))
    assert tiled.shape == (2, 150, 170)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    # tiles batched into one forward pass (as on CUDA) stitch the same
    batched = seg._tiled_probs(net, plane, TINY, torch.device("cpu"), batch=16)
    np.testing.assert_allclose(batched, tiled, atol=1e-5)


def test_segments_a_field_bigger_than_a_tile(trained):
    image, mask = disc_field(np.random.default_rng(7), size=200, n=25, channels=2)
    labels = trained.segment(image)
    assert labels.shape == (200, 200) and labels.dtype == np.int32
    assert labels.max() == mask.max() == 25
    hits = np.unique(labels[mask > 0])
    assert set(hits.tolist()) - {0} == set(range(1, 26))


def test_labels_from_probs_splits_touching_objects():
    interior = np.zeros((20, 30), np.float32)
    interior[5:15, 3:12], interior[5:15, 15:26] = 1.0, 1.0
    foreground = np.zeros_like(interior)
    foreground[4:16, 2:27] = 1.0  # one blob of foreground, two interior cores
    foreground[0, 0] = interior[0, 0] = 1.0  # a one-pixel speck is filtered out
    labels = seg.labels_from_probs(foreground, interior, TINY)
    assert labels.max() == 2 and labels[0, 0] == 0
    assert labels[10, 5] != labels[10, 20] and (labels[4:16, 2:27] > 0).all()


def test_labels_from_probs_splits_a_dumbbell_but_not_an_ellipse():
    yy, xx = np.mgrid[:40, :80]
    dumbbell = ((yy - 20) ** 2 + (xx - 20) ** 2 < 100) | ((yy - 20) ** 2 + (xx - 37) ** 2 < 100)
    ellipse = ((yy - 20) / 8.0) ** 2 + ((xx - 62) / 15.0) ** 2 < 1
    probs = (dumbbell | ellipse).astype(np.float32)
    labels = seg.labels_from_probs(probs, probs, TINY)
    assert labels.max() == 3
    assert labels[20, 15] != labels[20, 42] and len(np.unique(labels[ellipse])) == 1


def test_bad_training_pairs_are_clear_errors():
    image, mask = disc_field(np.random.default_rng(0), channels=2)
    with pytest.raises(ModelError, match="no \\(image, mask\\) pairs"):
        train_tiny([])
    with pytest.raises(ModelError, match="channel 3 asked for.*2 channels"):
        train_tiny([(image, mask)], channel=3)
    with pytest.raises(ModelError, match="training mask 0: shape \\(10, 10\\)"):
        train_tiny([(image, mask[:10, :10])])
    with pytest.raises(ModelError, match="dtype float64, expected an integer"):
        train_tiny([(image, mask.astype(float))])
    with pytest.raises(ModelError, match="all 1 training masks are empty"):
        train_tiny([(image, np.zeros_like(mask))])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_absent_is_a_clear_error(disc_pairs, tmp_path):
    with pytest.raises(ModelError, match="no CUDA GPU.*--device cpu"):
        train_tiny(disc_pairs, device="cuda")
    model = seg.SegmenterModel(UNet(UNetConfig(1, out_channels=3, width=4, depth=2)), TINY)
    with pytest.raises(ModelError, match="no CUDA GPU"):
        seg.load_segmenter(model.save(tmp_path / "seg.pt"), device="cuda")
    with pytest.raises(ModelError, match="no CUDA GPU"):
        seg.make_unet_segmenter(disc_pairs, device="cuda", cache=tmp_path / "seg.pt")


@pytest.fixture
def counted_training(monkeypatch):
    """Make ``make_unet_segmenter`` train the tiny network briefly; records (n_pairs, channel)
    of every training."""
    calls = []
    real, short = seg.train_segmenter, dataclasses.replace(PLAIN, steps=5)

    def fake(pairs, **kwargs):
        calls.append((len(pairs), kwargs["channel"]))
        return real(pairs, config=TINY, train_config=short, **kwargs)

    monkeypatch.setattr(seg, "train_segmenter", fake)
    return calls


def test_make_unet_segmenter_reuses_its_cache(counted_training, disc_pairs, tmp_path, caplog):
    cache = tmp_path / "cache" / "seg.pt"
    first = seg.make_unet_segmenter(disc_pairs, device="cpu", cache=cache)
    assert counted_training == [(3, 0)] and cache.is_file()
    second = seg.make_unet_segmenter(disc_pairs, device="cpu", cache=cache)
    assert counted_training == [(3, 0)]  # reused, not retrained
    image = disc_pairs[0][0]
    assert np.array_equal(first(image), second(image))
    seg.make_unet_segmenter(disc_pairs[:2], device="cpu", cache=cache)
    assert counted_training[1:] == [(2, 0)]  # other masks: retrained
    cache.write_bytes(b"not a checkpoint")
    seg.make_unet_segmenter(disc_pairs[:2], device="cpu", cache=cache)
    assert len(counted_training) == 3 and "retraining" in caplog.text


def test_a_cache_folder_keeps_one_segmenter_per_training_data(
    counted_training, disc_pairs, tmp_path
):
    folder = tmp_path / "segmenters"
    seg.make_unet_segmenter(disc_pairs, device="cpu", cache=folder)
    seg.make_unet_segmenter(disc_pairs[:2], device="cpu", cache=folder)
    assert counted_training == [(3, 0), (2, 0)] and len(list(folder.glob("segmenter-*.pt"))) == 2
    seg.make_unet_segmenter(disc_pairs, device="cpu", cache=folder)  # the first: kept
    seg.make_unet_segmenter(disc_pairs[:2], device="cpu", cache=folder)
    assert len(counted_training) == 2


def test_make_unet_segmenter_uses_demo_fields_without_masks(counted_training, monkeypatch):
    seen = []

    def demo(n, size, seed):
        seen.append((n, size, seed))
        rng = np.random.default_rng(seed)
        return [disc_field(rng, channels=2) for _ in range(2)]

    monkeypatch.setattr(seg, "demo_training_pairs", demo)
    segment = seg.make_unet_segmenter(channel=1, device="cpu", seed=3)
    # demo nuclei are on channel 0; the user's fields have them on channel 1
    assert seen == [(seg.DEMO_FIELDS, seg.DEMO_SIZE, 3)] and counted_training == [(2, 0)]
    image, _ = disc_field(np.random.default_rng(9), channels=2)
    assert segment(image).shape == (64, 64)
    with pytest.raises(ModelError, match="channel 1 asked for"):
        segment(image[:1])


def test_tiny_and_empty_fields(trained):
    assert trained.segment(np.zeros((2, 40, 40), np.uint16)).max() == 0
    image, mask = disc_field(np.random.default_rng(2), size=24, n=1, radius=(6.0, 7.0))
    labels = trained.segment(image)
    assert labels.shape == (24, 24) and labels.max() == 1

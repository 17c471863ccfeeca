"""U-Net shapes, overfitting a tiny batch, determinism of pretraining and fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.backbone.finetune import (  # noqa: E402
    FinetuneConfig,
    LabeledCells,
    balanced_batches,
    finetune,
    stratified_split,
    supcon_loss,
)
from models.backbone.pretrain import TrainConfig, patch_mask, pretrain  # noqa: E402
from models.backbone.training import DeviceCrops, augment, device_generator  # noqa: E402
from models.backbone.unet import Classifier, UNet, UNetConfig, check_input_size  # noqa: E402
from models.errors import ModelError  # noqa: E402

CPU = torch.device("cpu")


def test_unet_shapes_and_embedding(tiny_config):
    x = torch.rand(3, 2, 16, 16)
    net = UNet(tiny_config).eval()
    assert net(x).shape == (3, 2, 16, 16)
    assert net.embed(x).shape == (3, tiny_config.embedding_dim) == (3, 4 + 8)
    cfg = UNetConfig(in_channels=5, out_channels=1, width=2, depth=3, pool_skips=False)
    assert UNet(cfg)(torch.rand(1, 5, 16, 16)).shape == (1, 1, 16, 16)
    assert UNet(cfg).embed(torch.rand(1, 5, 16, 16)).shape == (1, 8)


def test_config_validation():
    with pytest.raises(ModelError, match="in_channels=6"):
        UNetConfig(in_channels=6)
    with pytest.raises(ModelError, match="not divisible by 4"):
        check_input_size(18, UNetConfig(depth=3))
    with pytest.raises(ModelError, match="at least 2 classes"):
        Classifier(UNetConfig(), 1)
    with pytest.raises(ModelError, match="unknown keys"):
        UNetConfig.from_dict({"widht": 3})


def test_overfits_a_tiny_batch(fake_pixels, tiny_config):
    torch.manual_seed(0)
    model = Classifier(tiny_config, 2)
    x = torch.from_numpy(fake_pixels.read(fake_pixels.cell_ids[:8]))
    y = torch.tensor([0, 1] * 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model.train()(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert (model.eval()(x).argmax(1) == y).all()


def test_augment_only_moves_pixels_never_rescales():
    crops = torch.rand(64, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    out = augment(crops, device_generator(CPU, 0), shift=0)
    assert out.shape == crops.shape
    # a dihedral transform per crop: the same multiset of values in every crop and channel
    torch.testing.assert_close(out.flatten(2).sort(-1).values, crops.flatten(2).sort(-1).values)
    assert not torch.equal(out, crops)
    kinds = {tuple(o[0].flatten().tolist()) for o in out}
    assert len(kinds) > 4  # several of the 8 transforms were drawn
    shifted = augment(crops, device_generator(CPU, 0), shift=2)
    # shifts repeat border pixels: every value is still one of the crop's own channel's
    for o, c in zip(shifted, crops):
        for oc, cc in zip(o, c):
            assert set(oc.flatten().tolist()) <= set(cc.flatten().tolist())
    assert not torch.equal(shifted, out)


def test_augment_same_seed_same_draws():
    crops = torch.rand(16, 2, 8, 8)
    a = augment(crops, device_generator(CPU, 3), shift=2)
    b = augment(crops, device_generator(CPU, 3), shift=2)
    assert torch.equal(a, b)


def test_device_crops_resident_and_streamed_agree(fake_pixels):
    ids = fake_pixels.cell_ids[:10]
    resident = DeviceCrops(fake_pixels, ids, CPU)
    streamed = DeviceCrops(fake_pixels, ids, CPU, budget=0)
    assert resident.resident and not streamed.resident
    rows = np.array([3, 0, 9])
    expected = torch.from_numpy(fake_pixels.read([ids[r] for r in rows]))
    torch.testing.assert_close(streamed.batch(rows), expected)
    torch.testing.assert_close(resident.batch(rows), expected, atol=1e-3, rtol=0)  # float16
    plan = np.array([[1, 2], [5, 4]])
    for got, want in zip(streamed.batches(plan), resident.batches(plan), strict=True):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=0)


def test_patch_mask_ratio():
    mask = patch_mask(200, 16, TrainConfig(patch=4, mask_ratio=0.4), device_generator(CPU, 0))
    assert mask.shape == (200, 1, 16, 16)
    assert 0.35 < mask.mean() < 0.45
    assert set(mask.unique().tolist()) == {0.0, 1.0}


def _pretrain_once(fake_pixels, cfg):
    torch.manual_seed(0)
    model = UNet(cfg)
    calls = []
    history = pretrain(
        model,
        fake_pixels,
        TrainConfig(max_steps=10, batch_size=8, seed=1),
        CPU,
        lambda d, t: calls.append((d, t)),
    )
    return model, history, calls


def test_pretrain_same_seed_same_result_and_loss_falls(fake_pixels, tiny_config):
    m1, h1, calls = _pretrain_once(fake_pixels, tiny_config)
    m2, h2, _ = _pretrain_once(fake_pixels, tiny_config)
    assert calls[-1] == (10, 10) and len(calls) == 10
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert h1[-1]["step"] == 10 and h1[-1]["crops"] == 80


def test_pretrain_rejects_wrong_channels(fake_pixels):
    with pytest.raises(ModelError, match="2 channels but the U-Net expects 3"):
        pretrain(
            UNet(UNetConfig(in_channels=3, width=2, depth=2)),
            fake_pixels,
            TrainConfig(max_steps=1),
            CPU,
        )


def test_stratified_split_and_balanced_batches():
    y = np.array([0] * 20 + [1] * 5 + [2] * 2)
    rng = np.random.default_rng(0)
    train, held = stratified_split(y, 0.2, rng)
    assert np.bincount(y[held]).tolist() == [4, 1, 1]
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == len(y)
    picks = np.concatenate(balanced_batches(y, 50, 30, rng))
    share = np.bincount(y[picks]) / len(picks)
    assert np.all(np.abs(share - 1 / 3) < 0.05)


def _finetune_once(fake_pixels, cfg, labels, **kw):
    torch.manual_seed(0)
    model = Classifier(cfg, 2)
    conf = FinetuneConfig(batch_size=8, min_steps=4, seed=2, **kw)
    history = finetune(model, fake_pixels, LabeledCells(labels, ("round", "square")), conf, CPU)
    return model, history


def test_finetune_learns_and_is_deterministic(fake_pixels, tiny_config):
    kw = dict(max_epochs=6, patience=6, lr=1e-2, encoder_lr=1e-2, holdout_min_per_class=5)
    m1, h1 = _finetune_once(fake_pixels, tiny_config, fake_pixels.labels, **kw)
    m2, h2 = _finetune_once(fake_pixels, tiny_config, fake_pixels.labels, **kw)
    assert h1[0]["split"] and h1[-1]["val_balanced_accuracy"] is not None
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    x = torch.from_numpy(fake_pixels.crops)
    assert torch.equal(m1(x), m2(x))
    pred = m1(x).argmax(1).numpy()
    assert (pred == np.arange(32) % 2).mean() >= 0.9


def test_finetune_without_holdout_below_its_minimum(fake_pixels, tiny_config):
    # 16 per class: enough for the full schedule, too few for a held-out split (default 20)
    _, history = _finetune_once(
        fake_pixels, tiny_config, fake_pixels.labels, max_epochs=3, patience=1
    )
    assert len(history) == 3 and not any(h["split"] for h in history)


def test_finetune_head_epochs_freeze_the_encoder_and_freeze_bn_its_statistics(
    fake_pixels, tiny_config
):
    torch.manual_seed(0)
    start = Classifier(tiny_config, 2).encoder.state_dict()
    frozen, _ = _finetune_once(
        fake_pixels, tiny_config, fake_pixels.labels, max_epochs=2, head_epochs=2
    )
    for name, value in frozen.encoder.state_dict().items():
        assert torch.equal(value, start[name]), name
    assert all(p.requires_grad for p in frozen.parameters())  # unfrozen afterwards
    bn, _ = _finetune_once(
        fake_pixels, tiny_config, fake_pixels.labels, max_epochs=2, freeze_bn=True
    )
    after = bn.encoder.state_dict()
    stats = [n for n in after if "running_" in n]
    weights = [n for n in after if n.endswith("0.weight")]
    assert stats and all(torch.equal(after[n], start[n]) for n in stats)
    assert any(not torch.equal(after[n], start[n]) for n in weights)


def test_finetune_short_schedule_and_one_class(fake_pixels, tiny_config):
    few = dict(list(fake_pixels.labels.items())[:6])  # 3 per class: no split
    _, history = _finetune_once(fake_pixels, tiny_config, few, short_epochs=2)
    assert len(history) == 2 and not history[0]["split"]
    one = {k: v for k, v in fake_pixels.labels.items() if v == "round"}
    with pytest.raises(ModelError, match="at least 2 classes"):
        _finetune_once(fake_pixels, tiny_config, one)


def test_supcon_loss_matches_its_definition_and_rewards_class_clusters():
    torch.manual_seed(0)
    z, y = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 1, 2])
    t = 0.5
    u = torch.nn.functional.normalize(z, dim=1)
    expected = []
    for i in range(6):  # cell 5 is alone in its class: no term
        others = [j for j in range(6) if j != i]
        pos = [j for j in others if y[j] == y[i]]
        if pos:
            denom = torch.logsumexp(torch.stack([u[i] @ u[j] / t for j in others]), 0)
            expected.append(-torch.stack([u[i] @ u[p] / t - denom for p in pos]).mean())
    assert torch.allclose(supcon_loss(z, y, t), torch.stack(expected).mean(), atol=1e-6)
    clustered = torch.nn.functional.one_hot(y, 3).float() + 0.01 * torch.randn(6, 3)
    assert supcon_loss(clustered, y, t) < supcon_loss(z, y, t)
    assert float(supcon_loss(z, torch.arange(6), t)) == 0.0  # nobody has a partner


def test_finetune_with_supcon_learns_and_checks_its_knobs(fake_pixels, tiny_config):
    kw = dict(max_epochs=6, patience=6, lr=1e-2, encoder_lr=1e-2, holdout_min_per_class=5)
    plain, h0 = _finetune_once(fake_pixels, tiny_config, fake_pixels.labels, **kw)
    model, h1 = _finetune_once(fake_pixels, tiny_config, fake_pixels.labels, supcon=1.0, **kw)
    assert h1[0]["loss"] > h0[0]["loss"]  # the contrastive term is in the loss
    x = torch.from_numpy(fake_pixels.crops)
    assert (model(x).argmax(1).numpy() == np.arange(32) % 2).mean() >= 0.9
    with pytest.raises(ModelError, match="temperature"):
        FinetuneConfig(supcon=1.0, temperature=0.0)

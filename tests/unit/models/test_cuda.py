"""CUDA-only paths: resident crops, GPU augmentation, bf16 training and embedding, determinism.

Skipped without a CUDA GPU (CI is CPU-only); run on a GPU machine with
``python -m pytest tests/unit/models/test_cuda.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from models.backbone.finetune import FinetuneConfig, LabeledCells, finetune, predict_logits  # noqa: E402
from models.backbone.pretrain import TrainConfig, pretrain  # noqa: E402
from models.backbone.training import DeviceCrops, augment, device_generator  # noqa: E402
from models.backbone.unet import Classifier, UNet  # noqa: E402

CUDA = torch.device("cuda") if torch.cuda.is_available() else None


def test_crops_resident_on_the_gpu_match_the_host(fake_pixels):
    crops = DeviceCrops(fake_pixels, fake_pixels.cell_ids, CUDA)
    assert crops.resident and crops.data.device.type == "cuda"
    got = crops.batch(np.array([0, 5])).cpu()
    want = torch.from_numpy(fake_pixels.read(fake_pixels.cell_ids[:1] + fake_pixels.cell_ids[5:6]))
    torch.testing.assert_close(got, want, atol=1e-3, rtol=0)


def test_gpu_augment_moves_pixels_only():
    x = torch.rand(32, 2, 8, 8, device=CUDA)
    out = augment(x, device_generator(CUDA, 0), shift=0)
    torch.testing.assert_close(out.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)


def test_pretrain_on_gpu_deterministic_by_default(fake_pixels, tiny_config):
    def once():
        torch.manual_seed(0)
        model = UNet(tiny_config)
        hist = pretrain(model, fake_pixels, TrainConfig(max_steps=6, batch_size=8), CUDA)
        return model, hist

    (m1, h1), (m2, h2) = once(), once()
    assert h1[-1]["resident"] and np.isfinite(h1[-1]["loss"])
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_finetune_on_gpu_learns(fake_pixels, tiny_config):
    torch.manual_seed(0)
    model = Classifier(tiny_config, 2)
    cfg = FinetuneConfig(max_epochs=8, batch_size=8, min_steps=4, lr=1e-2, encoder_lr=1e-2)
    cells = LabeledCells(fake_pixels.labels, ("round", "square"))
    finetune(model, fake_pixels, cells, cfg, CUDA)
    pred = predict_logits(model, fake_pixels, fake_pixels.cell_ids, CUDA).argmax(1)
    assert (pred == np.arange(32) % 2).mean() >= 0.9


def test_nondeterministic_switch_sets_cudnn_benchmark(fake_pixels, tiny_config):
    pretrain(
        UNet(tiny_config),
        fake_pixels,
        TrainConfig(max_steps=2, batch_size=8, deterministic=False),
        CUDA,
    )
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    pretrain(UNet(tiny_config), fake_pixels, TrainConfig(max_steps=2, batch_size=8), CUDA)
    assert not torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()

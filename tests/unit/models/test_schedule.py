"""The pretraining time budget and the device-aware shipped schedules."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")

from models.backbone.pretrain import TrainConfig, pretrain  # noqa: E402
from models.backbone.unet import UNet  # noqa: E402
from models.errors import ModelError  # noqa: E402
from models.trainer.trainer import TrainerConfig  # noqa: E402

CPU = torch.device("cpu")


def test_time_budget_stops_early_and_says_why(fake_pixels, tiny_config):
    fast_read = fake_pixels.read

    def slow_read(cell_ids):  # every batch takes 30 ms, like a slow disk or a busy CPU
        time.sleep(0.03)
        return fast_read(cell_ids)

    fake_pixels.read = slow_read
    calls = []
    history = pretrain(
        UNet(tiny_config),
        fake_pixels,
        TrainConfig(max_steps=50, batch_size=8, max_seconds=0.05),
        CPU,
        lambda d, t: calls.append((d, t)),
    )
    assert history[-1]["stopped"] == "max_seconds"
    assert 1 <= history[-1]["step"] < 10
    assert history[-1]["seconds"] >= 0.05
    done = history[-1]["step"]
    assert calls[-1] == (done, done)  # the progress bar ends full
    assert len(calls) == done


def test_without_budget_the_schedule_runs_out(fake_pixels, tiny_config):
    history = pretrain(UNet(tiny_config), fake_pixels, TrainConfig(max_steps=4, batch_size=8), CPU)
    assert history[-1]["step"] == 4 and history[-1]["stopped"] == "steps"


def test_budget_must_not_be_negative():
    with pytest.raises(ModelError, match="max_seconds"):
        TrainConfig(max_seconds=-1.0)


def test_for_device_cpu_is_smaller_and_time_boxed():
    cpu, cuda = TrainerConfig.for_device("cpu"), TrainerConfig.for_device(torch.device("cuda"))
    assert 0 < cpu.pretrain.max_seconds <= 300
    assert cuda.pretrain.max_seconds == 0
    assert cpu.pretrain.max_steps * cpu.pretrain.batch_size < (
        cuda.pretrain.max_steps * cuda.pretrain.batch_size
    )
    assert cpu.finetune.max_epochs < cuda.finetune.max_epochs
    assert TrainerConfig.for_device("mps") == TrainerConfig()
    tiny = TrainerConfig.for_device("cpu", width=2, seed=3)
    assert (tiny.width, tiny.seed, tiny.pretrain) == (2, 3, cpu.pretrain)

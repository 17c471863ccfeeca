"""The determinism switch: TrainerConfig.deterministic reaches both schedules; CLI flag."""

from __future__ import annotations

import argparse

import pytest

torch = pytest.importorskip("torch")

from models.device import set_deterministic  # noqa: E402
from models.trainer.trainer import TrainerConfig  # noqa: E402


def test_trainer_config_copies_the_switch_into_both_schedules():
    shipped = TrainerConfig.for_device("cpu")
    assert shipped.deterministic and shipped.pretrain.deterministic
    fast = TrainerConfig.for_device("cpu", deterministic=False)
    assert not fast.pretrain.deterministic and not fast.finetune.deterministic
    assert fast.pretrain.max_steps == shipped.pretrain.max_steps  # the rest kept


def test_set_deterministic_toggles_torch_and_cudnn():
    try:
        set_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark
    finally:
        set_deterministic(True)
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark


def test_train_cli_flag_builds_a_nondeterministic_config():
    from labeling.cli.training import _train_config

    args = argparse.Namespace(nondeterministic=True, device="cpu", embed_views=1)
    assert _train_config(args).deterministic is False
    plain = argparse.Namespace(nondeterministic=False, device="cpu", embed_views=1)
    assert _train_config(plain) is None
    views = _train_config(argparse.Namespace(nondeterministic=False, device="cpu", embed_views=8))
    assert views.deterministic is True and views.embed.views == 8

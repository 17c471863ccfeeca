from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from models.device import resolve_device, seed_everything, with_oom_retry  # noqa: E402
from models.errors import ModelError  # noqa: E402


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_absent_is_a_clear_error():
    with pytest.raises(ModelError, match="no CUDA GPU.*--device cpu"):
        resolve_device("cuda")


def test_unknown_device_is_an_error():
    with pytest.raises(ModelError, match="'tpu' is unknown"):
        resolve_device("tpu")


def test_oom_retry_halves_the_batch():
    seen = []

    def run(size):
        seen.append(size)
        if size > 16:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return size * 2

    assert with_oom_retry(run, 64) == (32, 16)
    assert seen == [64, 32, 16]


def test_oom_at_batch_one_and_other_errors():
    def always(size):
        raise RuntimeError("out of memory")

    with pytest.raises(ModelError, match="batch of 1"):
        with_oom_retry(always, 4)
    with pytest.raises(RuntimeError, match="shape"):
        with_oom_retry(lambda s: (_ for _ in ()).throw(RuntimeError("shape mismatch")), 4)


def test_seed_everything_repeats_torch_draws():
    seed_everything(3)
    a = torch.rand(4)
    seed_everything(3)
    assert torch.equal(a, torch.rand(4))

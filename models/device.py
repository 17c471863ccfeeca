"""Device choice, seeding, background-process manners and out-of-memory retries."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

from models.errors import ModelError

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
T = TypeVar("T")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` picks CUDA, else MPS, else CPU.

    Raises:
        ModelError: for an unknown name, or CUDA/MPS asked for but not available here.
    """
    name = str(name).lower().strip()
    base = name.split(":")[0]
    if base not in DEVICES:
        raise ModelError(f"device {name!r} is unknown; use one of {', '.join(DEVICES)}")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "device 'cuda' asked for, but torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}); use --device auto or --device cpu"
        )
    if base == "mps" and not _mps_available():
        raise ModelError(
            "device 'mps' asked for, but Apple MPS is not available here; "
            "use --device auto or --device cpu"
        )
    return torch.device(name)


def set_deterministic(deterministic: bool = True) -> None:
    """Deterministic kernels (the default) or the fastest ones.

    ``True``: ``torch.use_deterministic_algorithms`` (warning, not failing, where an op has no
    deterministic kernel), cuDNN deterministic, no ``cudnn.benchmark``, and cuBLAS's fixed
    workspace (``CUBLAS_WORKSPACE_CONFIG``, when not set already). ``False``: cuDNN picks the
    fastest kernels per shape (``cudnn.benchmark``) and non-deterministic ones are allowed, so
    two GPU runs with one seed can differ slightly. Lasts for the whole process.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch and choose the kernels (:func:`set_deterministic`)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    set_deterministic(deterministic)


def background_mode(device: torch.device, threads: int = 1, nice: int = 10) -> None:
    """Make a CPU trainer polite: ``threads`` torch threads and a lower priority (``os.nice``).

    Does nothing on a GPU device. ``threads=0`` keeps torch's thread count; ``nice=0`` keeps
    the priority. Both settings last for the whole process.
    """
    if device.type != "cpu":
        return
    if threads > 0:
        torch.set_num_threads(threads)
    if nice > 0 and hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError as err:  # not allowed here: keep going at normal priority
            logger.warning("could not lower the trainer's priority: %s", err)


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` is an out-of-memory error of torch (CUDA, MPS or CPU allocator)."""
    if isinstance(err, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def with_oom_retry(run: Callable[[int], T], batch_size: int, what: str = "batch") -> tuple[T, int]:
    """Call ``run(batch_size)``, halving the batch size after each out-of-memory error.

    Returns:
        ``(result, batch_size that worked)``, so that the caller can keep the smaller size.

    Raises:
        ModelError: when even a batch of one does not fit.
    """
    size = max(1, int(batch_size))
    while True:
        try:
            return run(size), size
        except (RuntimeError, MemoryError) as err:
            if not is_oom(err):
                raise
            if size == 1:
                raise ModelError(
                    f"out of memory on a {what} of 1; free memory on the device or use --device cpu"
                ) from err
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(1, size // 2)
            logger.warning("out of memory in a %s: retrying with batch size %d", what, size)

"""The background trainer: one per project; pretrains, fine-tunes after each round, publishes.

``serve`` holds ``PROJECT/models/trainer.lock`` (fcntl.flock) for its whole life and
reports what it is doing in ``PROJECT/models/trainer.json``: ``state`` (starting, idle,
pretraining, finetuning, embedding, stopped, failed), ``progress`` [done, total], ``message``,
``pid``, ``device``, ``version`` (newest published) and ``updated_at``. With ``exit_with``
(``phenoscout train --exit-with PID``, as the app starts it) it ends soon after process PID
does: between rounds at once, during a phase at its next step. Every classifier version also
carries the self-supervised backbone's embeddings (``backbone_embeddings.npy``), label-free
features the labeling loop can compare with morphology without leakage, and the list of cells
it was trained on (``trained_cells.npy``), so the loop judges its fine-tuned embeddings on the
labels given after it. On a CPU each round's work is bounded (``finetune_every``,
``finetune_max_steps``; README "The deep backbone").

The trainer never reads the label store: labels arrive as plain data through a
:class:`LabelSource` (``labeling.training.run_trainer`` passes one backed by the store), and it
ends when told through :class:`ServeConfig` (``stop``, ``exit_reasons``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from datasets.parallel import Runner
from datasets.pixels.store import PixelStore
from models.backbone.checkpoint import (
    build_model,
    get_project_id,
    init_encoder_from,
    load_checkpoint,
    save_checkpoint,
)
from models.backbone.embed import EmbedConfig, EmbedResult, embed_cells
from models.backbone.finetune import FinetuneConfig, LabeledCells, finetune
from models.backbone.pretrain import TrainConfig, pretrain
from models.backbone.training import Progress
from models.backbone.unet import Classifier, UNet, UNetConfig
from models.device import background_mode, resolve_device, seed_everything
from models.errors import ModelError
from models.folder import (
    BACKBONE_EMBEDDINGS_FILE,
    BACKBONE_FILE,
    CELL_IDS_FILE,
    EMBEDDINGS_FILE,
    LOCK_FILE,
    MODELS_DIR,
    STATUS_FILE,
    TRAINED_CELLS_FILE,
    backbone_embeddings_path,
    latest_backbone_embeddings,
    latest_version,
)
from models.trainer.versions import begin_version, publish_version, remove_stale_tmp, write_json

logger = logging.getLogger(__name__)

__all__ = [
    "LabelSource",
    "Trainer",
    "TrainerConfig",
    "TrainerExit",
    "ServeConfig",
    "exit_on_sigterm",
    "serve",
    "trainer_lock",
]


@dataclass(frozen=True)
class TrainerConfig:
    """What the trainer builds and how hard it works."""

    width: int = 8  # U-Net width (see UNetConfig)
    depth: int = 3  # U-Net depth
    pretrain: TrainConfig = field(default_factory=TrainConfig)  # self-supervised schedule
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # fine-tune schedule
    embed_batch: int = 256  # cells per embedding forward pass
    # the published embedding averaged over this many of a crop's 8 rotations and flips
    # (EmbedConfig.views; `phenoscout train --embed-views`): 8 costs 8 forward passes
    embed_views: int = 1
    bf16: bool = False  # bfloat16 autocast for embeddings on CPU
    keep_versions: int = 4  # published versions kept (the loop judges one on newer labels)
    cpu_threads: int = 1  # torch threads on CPU (0: leave as is)
    nice: int = 10  # priority lowered by this on CPU (0: leave as is)
    init_checkpoint: str = ""  # optional user checkpoint to initialise the encoder from
    seed: int = 0  # seeds python, numpy, torch
    # deterministic kernels (the default); False: cudnn.benchmark and non-deterministic kernels
    # (faster on a GPU; `phenoscout train --nondeterministic`). Copied into both schedules.
    deterministic: bool = True
    # In watch mode, fine-tune only once this many label events have arrived since the last
    # version (1: after every batch). On CPU 20: about every other batch of 10.
    finetune_every: int = 1
    # Optimiser steps per fine-tune epoch at most (0: no cap): bounds a round's work as the
    # labels grow. On CPU 16 (12 epochs x 16 steps x 64 crops, 20-40 s on one thread).
    finetune_max_steps: int = 0

    def __post_init__(self) -> None:
        for name in ("pretrain", "finetune"):
            schedule = getattr(self, name)
            if schedule.deterministic != self.deterministic:
                changed = dataclasses.replace(schedule, deterministic=self.deterministic)
                object.__setattr__(self, name, changed)

    @property
    def embed(self) -> EmbedConfig:
        """How every cell is embedded: ``embed_batch`` cells per pass, ``bf16`` on a CPU,
        averaged over ``embed_views`` views."""
        return EmbedConfig(batch_size=self.embed_batch, bf16=self.bf16, views=self.embed_views)

    @classmethod
    def for_device(cls, device: torch.device | str, **overrides: Any) -> TrainerConfig:
        """The shipped configuration for ``device``, with ``overrides`` of any field.

        On CPU (``CPU_PRETRAIN``, ``CPU_FINETUNE``) pretraining stops after 300 steps or 240 s,
        whichever comes first (one thread does about 100 crops/s on this 2-core CPU, so the
        20,000-cell demo and Jurkat each pretrain in under 5 minutes), and fine-tuning runs
        fewer epochs. On CUDA (``GPU_PRETRAIN``, ``GPU_FINETUNE``) the schedules are longer.
        """
        kind = torch.device(device).type
        if kind == "cpu":
            schedules = {
                "pretrain": CPU_PRETRAIN,
                "finetune": CPU_FINETUNE,
                "finetune_every": CPU_FINETUNE_EVERY,
                "finetune_max_steps": CPU_FINETUNE_MAX_STEPS,
            }
        elif kind == "cuda":
            schedules = {"pretrain": GPU_PRETRAIN, "finetune": GPU_FINETUNE}
        else:  # mps: the default schedule
            schedules = {}
        return cls(**{**schedules, **overrides})


CPU_PRETRAIN = TrainConfig(max_steps=300, max_seconds=240.0)  # < 5 min with time to embed
# head lr 3e-2: Jurkat, one CV fold, all labels, bal. acc 0.77 (12 epochs) vs 0.59 with 1e-3.
# No held-out split below 20 labels per class (FinetuneConfig.holdout_min_per_class): at 10
# per class early stopping on 2 held-out cells per class cost 0.28 balanced accuracy.
CPU_FINETUNE = FinetuneConfig(max_epochs=12, short_epochs=4, patience=4, lr=3e-2)
CPU_FINETUNE_EVERY = 20  # label events between fine-tunes on CPU (watch mode)
CPU_FINETUNE_MAX_STEPS = 16  # steps per fine-tune epoch at most on CPU
GPU_PRETRAIN = TrainConfig(epochs=10, max_steps=3000, batch_size=256)
GPU_FINETUNE = FinetuneConfig(max_epochs=20, batch_size=128)


class LabelSource(Protocol):
    """Where the trainer's labels come from (``labeling.training`` backs it with the store)."""

    def n_labels(self) -> int:
        """Label events given so far; a change means a new round to train on."""
        ...

    def labels(self) -> dict[str, str]:
        """Current training labels, ``{cell_id: class name}`` (no pseudo-classes)."""
        ...


@dataclass(frozen=True)
class ServeConfig:
    """How long :func:`serve` runs, how it is told to end, and where it embeds."""

    watch: bool = False  # keep running and train after every new round of labels
    poll_s: float = 5.0  # seconds between label-count checks in watch mode
    stop: threading.Event = field(default_factory=threading.Event)  # set: end watch mode
    exit_reasons: list[str] = field(default_factory=list)  # non-empty: end now (TrainerExit)
    runner: Runner | None = None  # Dask tasks embed the cells (backbone.embed_tasks); None: here


class _Status:
    """Writes trainer.json; ``progress`` is rate-limited to one write per 0.5 s."""

    def __init__(self, project_dir: Path, device: torch.device) -> None:
        self.path = Path(project_dir) / MODELS_DIR / STATUS_FILE
        self.data: dict[str, Any] = {"pid": os.getpid(), "device": str(device), "version": None}
        self._last = 0.0

    def set(self, state: str, message: str = "", **extra: Any) -> None:
        self.data.update(state=state, message=message, progress=[0, 0], **extra)
        self._write()

    def progress(self, done: int, total: int) -> None:
        self.data["progress"] = [int(done), int(total)]
        if time.monotonic() - self._last > 0.5 or done >= total:
            self._write()

    def _write(self) -> None:
        self._last = time.monotonic()
        self.data["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(self.path, self.data)


class TrainerExit(BaseException):  # noqa: N818 (like KeyboardInterrupt: an order, not a fault)
    """The trainer was told to end (its app ended, or SIGTERM); run_trainer records "stopped"."""


def exit_on_sigterm() -> None:
    """Turn SIGTERM into :class:`TrainerExit` (call from the main thread), so a terminated
    trainer records "stopped" in trainer.json and releases its lock cleanly."""

    def handler(signum: int, frame: object) -> None:
        raise TrainerExit("stopped by SIGTERM")

    signal.signal(signal.SIGTERM, handler)


def _chain(status: _Status, progress: Progress | None, check: Callable[[], None]) -> Progress:
    def both(done: int, total: int) -> None:
        check()
        status.progress(done, total)
        if progress is not None:
            progress(done, total)

    return both


@contextmanager
def trainer_lock(project_dir: Path) -> Iterator[None]:
    """Hold the project's trainer lock; a second holder gets a ModelError naming the first."""
    root = Path(project_dir) / MODELS_DIR
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ModelError(
                f"a trainer is already running on {project_dir} (pid {pid}); stop it first or "
                "let it serve this project"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class Trainer:
    """One project's trainer state between rounds: its pixels, backbone, status and labels.

    Args:
        project_dir: the project folder.
        device: where to train.
        config: network and schedules.
        labels: where labels come from; None for a trainer that only pretrains and embeds.
        progress: ``progress(done, total)`` of the current phase.
        serve: ``exit_reasons`` (shared list; once non-empty, the next step raises
            TrainerExit) and ``runner`` (where every cell is embedded).
    """

    def __init__(
        self,
        project_dir: Path,
        device: torch.device,
        config: TrainerConfig,
        labels: LabelSource | None = None,
        progress: Progress | None = None,
        serve: ServeConfig | None = None,
    ) -> None:
        self.project_dir, self.device, self.config = Path(project_dir), device, config
        serve = serve or ServeConfig()
        self.runner = serve.runner  # embeds on Dask when given (models.backbone.embed_tasks)
        self.pixels = PixelStore(self.project_dir)
        self.labels = labels
        self.project_id = get_project_id(self.project_dir)
        self.status = _Status(self.project_dir, device)
        self.exit_reasons = serve.exit_reasons
        self.progress = _chain(self.status, progress, self.check_exit)
        self.backbone_path = self.project_dir / MODELS_DIR / BACKBONE_FILE

    def _embed(self, model: UNet | Classifier, out: Path) -> EmbedResult:
        """Embed every cell into ``out``: on the runner's Dask workers when there is one."""
        if self.runner is not None and not self.runner.config.in_process(self.pixels.n_cells):
            from models.backbone.embed_tasks import embed_cells_distributed

            return embed_cells_distributed(model, self.pixels, out, self.runner,
                                           self.config.embed, self.progress)  # fmt: skip
        return embed_cells(model, self.pixels, out, self.device, self.config.embed, self.progress)

    def check_exit(self) -> None:
        """Raise TrainerExit when the app this trainer follows has ended."""
        if self.exit_reasons:
            raise TrainerExit(self.exit_reasons[0])

    def backbone(self) -> UNet:
        """The pretrained U-Net, pretraining it first when the project has none."""
        if self.backbone_path.exists():
            ckpt = load_checkpoint(self.backbone_path, project=self.project_id)
            return build_model(ckpt)  # type: ignore[return-value]
        cfg = UNetConfig(
            in_channels=self.pixels.n_channels, width=self.config.width, depth=self.config.depth
        )
        model = UNet(cfg)
        if self.config.init_checkpoint:
            init_encoder_from(model, Path(self.config.init_checkpoint))
        n = self.pixels.n_cells
        sched = self.config.pretrain
        budget = f", at most {sched.max_seconds:.0f} s" if sched.max_seconds else ""
        self.status.set(
            "pretraining",
            f"self-supervised pretraining on {n} cells (at most {sched.max_steps} steps{budget})",
        )
        start = time.perf_counter()
        logger.info("pretraining started on %d cells (%s)", n, self.device)
        history = pretrain(model, self.pixels, self.config.pretrain, self.device, self.progress)
        seconds = time.perf_counter() - start
        steps = history[-1]["step"] if history else 0
        logger.info("pretraining done in %.1f s (%d steps)", seconds, steps)
        extra = {
            "pretrain": dataclasses.asdict(self.config.pretrain),
            "history": history[-5:],
            "seconds": seconds,
        }
        save_checkpoint(self.backbone_path, model.cpu(), self.project_id, extra=extra)
        return model

    def publish(
        self,
        model: UNet | Classifier,
        classes: tuple[str, ...],
        n_labels: int,
        timings: dict[str, float],
        backbone: UNet | None = None,
        trained: list[str] | None = None,
    ) -> int:
        """Checkpoint, embed every cell and publish the next version; returns its number.

        A classifier's version also gets the label-free embeddings of ``backbone`` and the ids
        of the cells it was trained on, ``trained`` (``trained_cells.npy``)."""
        number, tmp = begin_version(self.project_dir)
        if trained is not None:
            np.save(tmp / TRAINED_CELLS_FILE, np.array(sorted(trained), dtype=str))
        save_checkpoint(tmp / "checkpoint.pt", model.cpu(), self.project_id, classes)
        write_json(
            tmp / "config.json",
            {"unet": dataclasses.asdict(model.config), "trainer": dataclasses.asdict(self.config)},
        )
        self.status.set("embedding", f"embedding {self.pixels.n_cells} cells for v{number:04d}")
        result = self._embed(model, tmp)
        timings = {**timings, "embed_s": result.seconds}
        if backbone is not None:
            self.add_backbone_embeddings(backbone, tmp)
        meta = {
            "n_labels": n_labels,
            "timings": timings,
            "device": str(self.device),
            "project_id": self.project_id,
            "n_cells": result.n_cells,
            "dim": result.dim,
            "kind": "classifier" if isinstance(model, Classifier) else "unet",
        }
        if trained is not None:
            meta["n_trained"] = len(trained)
        publish_version(tmp, meta, classes, keep=self.config.keep_versions)
        self.status.data["version"] = number
        spent = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in timings.items())
        logger.info(
            "version v%04d published: %d labels, %d classes (%s)",
            number,
            n_labels,
            len(classes),
            spent,
        )
        return number

    def add_backbone_embeddings(self, backbone: UNet, tmp: Path) -> None:
        """``tmp/backbone_embeddings.npy``: linked from the newest version that has them for
        the same cells, else computed (once, e.g. after a plate was added)."""
        ids = np.load(tmp / CELL_IDS_FILE, allow_pickle=False)
        found = latest_backbone_embeddings(self.project_dir)
        src = backbone_embeddings_path(found[0]) if found is not None else None
        if src is not None and found is not None and np.array_equal(found[1], ids):
            try:
                os.link(src, tmp / BACKBONE_EMBEDDINGS_FILE)
            except OSError:
                shutil.copyfile(src, tmp / BACKBONE_EMBEDDINGS_FILE)
            return
        sub = tmp / "backbone"
        sub.mkdir()
        self.status.set("embedding", f"embedding {self.pixels.n_cells} cells with the backbone")
        self._embed(backbone, sub)
        os.replace(sub / EMBEDDINGS_FILE, tmp / BACKBONE_EMBEDDINGS_FILE)
        shutil.rmtree(sub)

    def round(self, n_labels: int) -> int | None:
        """Fine-tune on the current labels and publish; None when fewer than 2 classes."""
        labels = self.labels.labels() if self.labels is not None else {}
        classes = tuple(sorted(set(labels.values())))
        if len(classes) < 2:
            self.status.set(
                "idle",
                f"{len(labels)} labels in {len(classes)} class(es): "
                "fine-tuning needs at least 2 classes; the current version serves",
            )
            return None
        backbone = self.backbone()
        model = Classifier(backbone.config, len(classes))
        model.encoder.load_state_dict(backbone.encoder.state_dict())
        what = f"{len(labels)} labels, {len(classes)} classes"
        self.status.set("finetuning", f"fine-tuning on {what}")
        logger.info("fine-tune started on %s", what)
        start = time.perf_counter()
        schedule = self.config.finetune
        if self.config.finetune_max_steps:  # bound the round's work as the labels grow
            auto = max(schedule.min_steps, -(-len(labels) // schedule.batch_size))
            steps = min(schedule.steps_per_epoch or auto, self.config.finetune_max_steps)
            schedule = dataclasses.replace(schedule, steps_per_epoch=max(1, steps))
        try:
            finetune(
                model,
                self.pixels,
                LabeledCells(labels, classes),
                schedule,
                self.device,
                self.progress,
            )
        except Exception as err:
            logger.error("fine-tune failed after %.1f s: %s", time.perf_counter() - start, err)
            raise
        logger.info("fine-tune done in %.1f s", time.perf_counter() - start)
        return self.publish(
            model,
            classes,
            n_labels,
            {"finetune_s": time.perf_counter() - start},
            backbone=backbone,
            trained=list(labels),
        )


def serve(
    project_dir: Path,
    labels: LabelSource,
    device: str = "auto",
    config: TrainerConfig | None = None,
    watch: ServeConfig | None = None,
    progress: Progress | None = None,
) -> int | None:
    """Train the project's models on ``labels`` and publish versions.

    Pretrains (and publishes an embedding-only version) when the project has no version; then,
    whenever ``labels.n_labels()`` differs from the newest version's count, fine-tunes on the
    labels (at least 2 classes), re-embeds every cell with predictions and publishes vN+1.
    Without ``watch.watch`` it does this once and returns; with it, it polls every
    ``watch.poll_s`` seconds until ``watch.stop`` is set (or the process is interrupted).
    ``labeling.training.run_trainer`` (``phenoscout train``) calls it with the store's labels.

    Args:
        project_dir: the project folder.
        labels: where labels come from.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        config: network and schedules; ``TrainerConfig.for_device`` when None.
        watch: how long to run, how to be told to end and where to embed; once, in this
            process, when None.
        progress: ``progress(done, total)`` of the current phase.

    Returns:
        The newest published version number, or None when none exists.

    Raises:
        ModelError: device not available, another trainer running on the project, bad checkpoint.
        TrainerExit: ``watch.exit_reasons`` got a reason during a phase (or SIGTERM, see
            exit_on_sigterm).
    """
    dev = resolve_device(device)
    config = config or TrainerConfig.for_device(dev)
    watch = watch or ServeConfig()
    with trainer_lock(project_dir):
        background_mode(dev, config.cpu_threads, config.nice)
        seed_everything(config.seed, config.deterministic)
        remove_stale_tmp(project_dir)
        trainer = Trainer(Path(project_dir), dev, config, labels, progress, watch)
        logger.info("trainer started on %s (pid %d, %s)", project_dir, os.getpid(), dev)
        try:
            return _loop(trainer, labels, watch)
        except BaseException as err:
            failed = isinstance(err, Exception)
            trainer.status.set("failed" if failed else "stopped", str(err))
            logger.log(
                logging.ERROR if failed else logging.INFO,
                "trainer %s: %s",
                "failed" if failed else "stopped",
                err,
            )
            raise


def _loop(trainer: Trainer, labels: LabelSource, watch: ServeConfig) -> int | None:
    latest = latest_version(trainer.project_dir)
    trainer.status.data["version"] = latest.version if latest else None
    seen = latest.n_labels if latest else None
    while True:
        n_labels = labels.n_labels()
        if seen is None:  # a new project: pretrain, publish the embedding-only version
            start = time.perf_counter()
            backbone = trainer.backbone()
            trainer.publish(backbone, (), 0, {"pretrain_s": time.perf_counter() - start})
            seen = 0
        # watch mode on CPU waits for finetune_every new label events (the app's rounds go on
        # with the newest version meanwhile); a single pass trains on whatever changed
        enough = not watch.watch or abs(n_labels - seen) >= trainer.config.finetune_every
        if n_labels != seen and enough:
            trainer.round(n_labels)
            seen = n_labels
        if trainer.status.data.get("state") != "idle":
            trainer.status.set("idle", "waiting for new labels" if watch.watch else "done")
        if not watch.watch or watch.stop.wait(watch.poll_s):
            break
    reason = trainer.exit_reasons[0] if trainer.exit_reasons else "trainer ended"
    trainer.status.set("stopped", reason)
    logger.info("trainer stopped: %s", reason)
    return trainer.status.data.get("version")

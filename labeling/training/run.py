"""Run a project's trainer on the label store's labels (``phenoscout train``).

The trainer itself (``models.trainer.trainer.serve``) never reads the store: this module hands it a
:class:`StoreLabels` source and, with ``exit_with``, ends it soon after the app that started it.
Torch loads only when :func:`run_trainer` runs.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from datasets.progress import Progress
from labeling.store.labels import LabelStore
from labeling.training.process import parent_gone

if TYPE_CHECKING:
    from models.trainer.trainer import ServeConfig, TrainerConfig

logger = logging.getLogger(__name__)

__all__ = ["StoreLabels", "run_trainer"]


class StoreLabels:
    """The trainer's labels, read from ``PROJECT/labels.db`` (opened on first use)."""

    def __init__(self, project_dir: Path) -> None:
        self.path = Path(project_dir) / "labels.db"
        self._store: LabelStore | None = None

    def _open(self) -> LabelStore:
        if self._store is None:
            self._store = LabelStore(self.path)
        return self._store

    def n_labels(self) -> int:
        """Label events given so far (a change means a new round)."""
        return self._open().n_labels_given()

    def labels(self) -> dict[str, str]:
        """Current labels without pseudo-classes, ``{cell_id: class}``."""
        return self._open().current_labels(include_pseudo=False)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _watch_parent(pid: int, stop: threading.Event, reasons: list[str]) -> threading.Event:
    """Start a daemon thread that sets ``stop`` (and appends the reason) once ``pid`` ends;
    set the returned event to end the thread."""
    was_child, done = os.getppid() == pid, threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            if parent_gone(pid, was_child):
                reasons.append(f"the app that started it (pid {pid}) has ended")
                stop.set()
                return

    threading.Thread(target=watch, name="trainer-exit-with", daemon=True).start()
    return done


def run_trainer(
    project_dir: Path,
    device: str = "auto",
    *,
    config: TrainerConfig | None = None,
    serve: ServeConfig | None = None,
    exit_with: int | None = None,
    progress: Progress | None = None,
) -> int | None:
    """Train the project's models on its labels and publish versions (``phenoscout train``).

    See :func:`models.trainer.trainer.serve` for what one pass does.

    Args:
        project_dir: the project folder.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        config: network and schedules; ``TrainerConfig.for_device`` when None.
        serve: ``watch`` (keep running and train after every new round of labels), ``poll_s``
            (seconds between label-count checks), ``stop`` (set it to end watch mode, between
            rounds) and ``runner`` (embeds every cell as Dask tasks,
            ``models.backbone.embed_tasks``); once, in this process, when None.
        exit_with: end when process ``exit_with`` (the app that started the trainer) ends:
            at once between rounds, at the next step of a running phase (TrainerExit).
        progress: ``progress(done, total)`` of the current phase.

    Returns:
        The newest published version number, or None when none exists.

    Raises:
        ModelError: device not available, another trainer running on the project, bad checkpoint.
        TrainerExit: ``exit_with`` ended during a phase (or SIGTERM, see exit_on_sigterm).
    """
    from models.trainer.trainer import ServeConfig
    from models.trainer.trainer import serve as serve_labels

    options = serve or ServeConfig()
    watching = threading.Event()
    if exit_with:
        watching = _watch_parent(exit_with, options.stop, options.exit_reasons)
    labels = StoreLabels(Path(project_dir))
    try:
        return serve_labels(Path(project_dir), labels, device, config, options, progress)
    finally:
        watching.set()
        labels.close()

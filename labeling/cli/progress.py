"""What the long ``phenoscout`` commands show while they run, and where their work runs.

:func:`tqdm_progress` draws a progress bar on a terminal only; :func:`ingest_runner` is the
Dask runner (or this process) an ingest's reading and features run on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets.parallel import Runner

__all__ = ["ingest_runner", "tqdm_progress"]


@contextmanager
def tqdm_progress(desc: str, unit: str = "cell") -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr, only when stderr is a
    terminal: in a log file (``trainer.log``, CI) a bar is hundreds of updates on one line, so
    there the bar is off and the callers' log lines tell what happens."""
    from tqdm import tqdm

    bar = None
    on_terminal = sys.stderr.isatty()

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                file=sys.stderr,
                dynamic_ncols=True,
                disable=not on_terminal,
            )
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def ingest_runner(args: argparse.Namespace) -> Iterator[Runner]:
    """Where the ingest's work runs (``--workers``, ``--scheduler``, $PHENOSCOUT_SCHEDULER)."""
    from datasets.parallel import ParallelConfig, Runner

    config = ParallelConfig.from_env(
        getattr(args, "workers", None), getattr(args, "scheduler", None)
    )
    with Runner(config) as runner:
        yield runner

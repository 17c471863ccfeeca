"""Work over many cells as ``dask.distributed`` tasks: a local cluster, an existing one, or
this process.

Ingest (reading, fitting and writing crops; reading, segmenting and cropping fields) and the
morphology features run as one task per chunk of cells or fields through a :class:`Runner`:

- ``workers=1`` (or a small input when the number of workers was not asked for) runs the same
  task functions one after the other in this process;
- otherwise a ``LocalCluster`` of worker processes (one per core by default, one thread each);
- ``scheduler="tcp://host:8786"`` (or :data:`SCHEDULER_ENV`) sends them to an existing cluster
  (dask-jobqueue on SLURM/PBS, dask-cuda on GPU nodes, ...) whose workers see the project folder.

A task writes only its own output (rows of a part file planned before it ran, or a chunk file
written under a temporary name and renamed into place), so a worker killed mid-task costs a
retry of that task, never a missing or doubled cell; the driver assembles the chunks in order.
Results come back in the order of the items, whatever order the tasks finish in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets.errors import DataError, PhenoScoutError
from datasets.progress import Progress

logger = logging.getLogger(__name__)

__all__ = ["IN_PROCESS_BELOW", "SCHEDULER_ENV", "ParallelConfig", "Runner", "default_workers"]

#: Environment variable naming an existing Dask scheduler (``tcp://host:8786``).
SCHEDULER_ENV = "PHENOSCOUT_SCHEDULER"
_WORKER_ENV = "distributed.nanny.pre-spawn-environ"


def _worker_env(env: dict[str, Any]) -> dict[str, Any]:
    """The environment our local workers start with: Dask's, less ``MALLOC_TRIM_THRESHOLD_``.

    Dask sets it to 64 KiB, which also freezes glibc's mmap threshold at 128 KiB: every array
    past that is mapped afresh and its pages zeroed by the kernel, so the workers spent more
    time in the kernel than in numpy (demo rendering: 2.9 s system for 1.3 s user)."""
    return {k: v for k, v in env.items() if k != "MALLOC_TRIM_THRESHOLD_"}


#: Inputs of fewer cells run in this process unless the number of workers was given:
#: starting worker processes costs seconds, more than such an input takes.
IN_PROCESS_BELOW = 20_000


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ParallelConfig:
    """Where the work over many cells runs.

    Attributes:
        workers: worker processes of the local cluster; None: one per core (and in this
            process for inputs under :data:`IN_PROCESS_BELOW` cells); 1: in this process.
        scheduler: address of an existing Dask scheduler; takes precedence over ``workers``.
        retries: extra attempts of a task that raised an unexpected error (a task on a worker
            that died is rescheduled by Dask without counting against these).
    """

    workers: int | None = None
    scheduler: str | None = None
    retries: int = 2

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise DataError(f"workers={self.workers}: give at least 1 (1 runs in this process)")

    @classmethod
    def from_env(cls, workers: int | None = None, scheduler: str | None = None
                 ) -> ParallelConfig:  # fmt: skip
        """The config the command line asks for: ``scheduler`` or else :data:`SCHEDULER_ENV`."""
        return cls(workers=workers, scheduler=scheduler or os.environ.get(SCHEDULER_ENV) or None)

    def in_process(self, n_cells: int) -> bool:
        """Whether an input of ``n_cells`` runs in this process."""
        if self.scheduler:
            return False
        if self.workers is None:
            return n_cells < IN_PROCESS_BELOW or default_workers() == 1
        return self.workers == 1


@dataclass(frozen=True)
class _Failure:
    """A PhenoScoutError raised in a task, carried back as text (some do not unpickle)."""

    kind: str
    message: str


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    try:
        return fn(item)
    except PhenoScoutError as exc:
        return _Failure(type(exc).__name__, str(exc))


def _raise_failure(result: Any) -> Any:
    if isinstance(result, _Failure):
        raise DataError(result.message)
    return result


class Runner:
    """Runs task functions over items, in this process or on a Dask cluster (see the module
    docstring). Use as a context manager; the cluster starts on the first :meth:`map` that
    needs it and stops (a local one) on exit.

    Args:
        config: where to run; in this process when None.
    """

    def __init__(self, config: ParallelConfig | None = None) -> None:
        self.config = config or ParallelConfig(workers=1)
        self.local = True  # where the last map ran
        self._client: Any = None
        self._cluster: Any = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def description(self) -> str:
        """Where the work runs, for logs and reports."""
        if self.local:
            return "in process"
        if self.config.scheduler:
            return f"Dask cluster at {self.config.scheduler}"
        return f"local Dask cluster, {self.config.workers or default_workers()} workers"

    def _start(self) -> Any:
        if self._client is not None:
            return self._client
        from distributed import Client, LocalCluster

        if not logger.isEnabledFor(logging.DEBUG):  # Dask's own INFO lines are noise here
            logging.getLogger("distributed").setLevel(logging.WARNING)
        if self.config.scheduler:
            try:
                self._client = Client(self.config.scheduler, timeout="20s")
            except OSError as exc:
                raise DataError(
                    f"Dask scheduler {self.config.scheduler}: cannot connect ({exc}); check "
                    f"the address (--scheduler or ${SCHEDULER_ENV}) or leave it out to run "
                    "on this machine"
                ) from exc
        else:
            import dask

            n = self.config.workers or default_workers()
            with dask.config.set({_WORKER_ENV: _worker_env(dask.config.get(_WORKER_ENV))}):
                self._cluster = LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=None, memory_limit=0, silence_logs=logging.ERROR,
                )  # fmt: skip
            self._client = Client(self._cluster)
        logger.info("work runs on a %s", self.description)
        return self._client

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        *,
        weights: Sequence[int] | None = None,
        progress: Progress | None = None,
        n_cells: int | None = None,
        consume: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """``[fn(item) for item in items]``, run as one task per item.

        Args:
            fn: a module-level function (it is sent to the workers by reference).
            items: its arguments, small (paths, row ranges), not arrays.
            weights: cells per item, for ``progress``; 1 each when None.
            progress: called as ``progress(done, total)`` as tasks finish.
            n_cells: the size of the job, which decides :meth:`ParallelConfig.in_process`;
                the sum of ``weights`` when None.
            consume: called as ``consume(i, result)`` in item order, as soon as item ``i``
                and every item before it are done (later results wait, small ones best:
                paths); the returned list then holds None. In this process each result is
                consumed before the next item runs, so results never pile up.

        Raises:
            DataError: a task raised a PhenoScoutError (its message, one line), or the
                cluster cannot be reached.
        """
        weights = list(weights) if weights is not None else [1] * len(items)
        total, done = int(sum(weights)), 0
        self.local = self.config.in_process(total if n_cells is None else n_cells)
        if self.local or len(items) == 0:
            out = []
            for i, (item, weight) in enumerate(zip(items, weights, strict=True)):
                result = _raise_failure(_call(fn, item))
                if consume is not None:
                    consume(i, result)
                    result = None
                out.append(result)
                done += weight
                if progress is not None:
                    progress(done, total)
            return out
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        client = self._start()
        futures = [client.submit(_call, fn, item, pure=False, retries=self.config.retries)
                   for item in items]  # fmt: skip
        where = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        finished = [False] * len(items)
        next_up = 0
        try:
            for future in as_completed(futures):
                i = where[future.key]
                results[i], finished[i] = _raise_failure(future.result()), True
                future.release()
                while consume is not None and next_up < len(items) and finished[next_up]:
                    consume(next_up, results[next_up])
                    results[next_up] = None
                    next_up += 1
                done += weights[i]
                if progress is not None:
                    progress(done, total)
        except KilledWorker as exc:
            client.cancel(futures)
            raise DataError(
                f"a {getattr(fn, '__name__', 'task')} task ended its worker process again and "
                f"again ({exc}); check the workers' memory and logs"
            ) from exc
        except BaseException:
            client.cancel(futures)
            raise
        return results

    def close(self) -> None:
        """Disconnect; stop the local cluster if this runner started one."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

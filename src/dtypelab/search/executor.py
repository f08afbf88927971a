"""Pluggable executors that map a scoring function over genomes: serial, local processes, or Ray.

Process workers are started with ``spawn`` (forking a process that already ran torch's thread pools can
hang) with one torch and numba thread each; they exit when the parent process dies, and each builds its
scorer state once and reuses it.

Example:
    >>> run = make_executor("serial")
    >>> run(abs, [-1, 2, -3])
    [1, 2, 3]
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

EXECUTORS = ("serial", "process", "ray")
Executor = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]


def _worker_setup(parent: int) -> None:
    import numba
    import torch

    torch.set_num_threads(1)
    numba.set_num_threads(1)  # the workers already use every core; nested kernel threads only contend
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """A killed search leaves no workers behind: exit once the parent process is gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


class ProcessExecutor:
    """A pool of ``workers`` spawned processes, kept for the executor's lifetime."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def __call__(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_worker_setup,
                                             initargs=(os.getpid(),))
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class RayExecutor:
    """Ray tasks (a local Ray instance unless ``address`` names a cluster). Needs ``pip install ray``."""

    def __init__(self, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError("the ray executor needs Ray: pip install 'ray[default]'") from None
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self._remote = ray.remote(_apply)

    def __call__(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return self._ray.get([self._remote.remote(fn, item) for item in items])

    def close(self) -> None:
        pass


def _apply(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def _serial(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(item) for item in items]


def make_executor(kind: str = "serial", workers: int | None = None) -> Executor:
    """``serial``, ``process`` (``workers`` processes, default one per core) or ``ray``."""
    if kind == "serial":
        return _serial
    if kind == "process":
        return ProcessExecutor(workers)
    if kind == "ray":
        return RayExecutor()
    raise ValueError(f"unknown executor {kind!r}; valid: {', '.join(EXECUTORS)}")

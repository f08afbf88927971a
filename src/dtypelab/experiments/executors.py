"""Executors: map a picklable function over items, in order — serially, on local processes, or on Ray.

The sweep and the search both run their work through :func:`make_executor`. ``map`` yields results in the
order of the items as they become available (so a sweep stores each cell as soon as it and the cells before it
are done); calling an executor returns the list.

Process workers are started with ``spawn`` (forking a process that already ran torch's thread pools can hang)
with one torch and numba thread each; they exit when the parent process dies, and each builds its scorer state
once and reuses it. Ray tasks run on a local Ray instance (or the cluster at ``address``). Workers of both kinds
get the parent's ``sys.path`` and first load the user's own ``.py`` files (``--model path/file.py:build``), so
what the parent could pickle they can unpickle.

Example:
    >>> run = make_executor("serial")
    >>> run(abs, [-1, 2, -3])
    [1, 2, 3]
    >>> make_executor("threads")
    Traceback (most recent call last):
    ...
    ValueError: unknown executor 'threads'; valid: serial, process, ray
"""

from __future__ import annotations

import abc
import importlib.util
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

#: modules loaded from a user's file path (``dtypelab.workloads.user``) are named with this prefix
USER_MODULE_PREFIX = "dtypelab_user_"


class Executor(abc.ABC):
    """Runs ``fn`` over ``items``; ``close()`` releases workers (also on leaving a ``with`` block)."""

    @abc.abstractmethod
    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        """``fn(item)`` for each item, in order."""

    def __call__(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return list(self.map(fn, items))

    @abc.abstractmethod
    def close(self) -> None:
        """Release the workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """In this process, one item after another."""

    def __init__(self, workers: int | None = None) -> None:
        pass

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        return (fn(item) for item in items)

    def close(self) -> None:
        """Nothing to release: the work ran in this process."""


def _user_modules() -> list[tuple[str, str]]:
    """(name, file) of every module loaded from a user's file path: workers load them before unpickling."""
    return [(name, m.__file__) for name, m in list(sys.modules.items())
            if name.startswith(USER_MODULE_PREFIX) and getattr(m, "__file__", None)]


def _prepare(paths: list[str], modules: list[tuple[str, str]]) -> None:
    """In a worker: the parent's import path, then the user's file modules under the parent's names."""
    sys.path.extend(p for p in paths if p not in sys.path)
    for name, file in modules:
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:  # pragma: no cover - the parent loaded it the same way
            raise ImportError(f"cannot load {file!r} as module {name!r} in a worker")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def _worker_setup(parent: int, paths: list[str], modules: list[tuple[str, str]]) -> None:
    import numba
    import torch

    torch.set_num_threads(1)
    numba.set_num_threads(1)  # the workers already use every core; nested kernel threads only contend
    _prepare(paths, modules)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """A killed run leaves no workers behind: exit once the parent process is gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


class ProcessExecutor(Executor):
    """A pool of ``workers`` spawned processes (default one per core), kept for the executor's lifetime."""

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_worker_setup,
                                             initargs=(os.getpid(), list(sys.path), _user_modules()))
        return self._pool.map(fn, items)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _ray_apply(paths: list[str], modules: list[tuple[str, str]], payload: bytes) -> Any:
    _prepare(paths, modules)
    fn, item = pickle.loads(payload)
    return fn(item)


class RayExecutor(Executor):
    """Ray tasks on a local Ray instance (started here and shut down on ``close``) or the cluster at ``address``.

    Tasks are pickled here (with Ray's cloudpickle, which also takes classes it cannot import by name) and
    unpickled in the worker after the user's file modules are loaded.
    """

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError("the ray executor needs Ray: pip install 'ray[default]'") from None
        self._ray = ray
        self._owned = not ray.is_initialized()
        if self._owned:
            ray.init(address=address, num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        self._remote = ray.remote(_ray_apply)

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        paths, modules = list(sys.path), _user_modules()
        refs = [self._remote.remote(paths, modules, self._ray.cloudpickle.dumps((fn, item))) for item in items]
        return (self._ray.get(ref) for ref in refs)

    def close(self) -> None:
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False


EXECUTORS: dict[str, type[Executor]] = {"serial": SerialExecutor, "process": ProcessExecutor, "ray": RayExecutor}


def make_executor(kind: str = "serial", workers: int | None = None) -> Executor:
    """The executor registered as ``kind`` (``serial``, ``process`` or ``ray``) with ``workers`` workers."""
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; valid: {', '.join(EXECUTORS)}")
    return EXECUTORS[kind](workers)

"""The one small interface every workload implements, plus the cache directory and atomic writes.

A workload is a real model, real data and the metrics that judge it. Everything the rest of dtypelab
needs from one is here: a fresh FP32 model, calibration batches, a forward pass of one batch, and
``evaluate(model) -> metrics`` with the primary metric named.

Example:
    >>> from dtypelab.workloads.base import Workload
    >>> sorted(m for m in ("model", "calibration", "run", "evaluate") if hasattr(Workload, m))
    ['calibration', 'evaluate', 'model', 'run']
"""

from __future__ import annotations

import abc
import contextlib
import copy
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dtypelab._io import atomic_write  # re-exported for workload authors

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = ["Workload", "WorkloadUnavailable", "cache_dir", "atomic_write", "load_cached",
           "TrainedOnFirstUse", "torch_threads"]


class WorkloadUnavailable(RuntimeError):
    """A workload that dtypelab knows but cannot run here (its data or weights are not on this machine)."""


class Workload(abc.ABC):
    """A model + data + metrics behind one interface.

    Subclasses set ``name`` and ``primary_metric`` and implement ``_build_model``, ``calibration``,
    ``run`` and ``evaluate``. ``model()`` builds the pristine FP32 model once per workload object and
    hands out a deep copy in eval mode on every call, so callers may quantize or mutate what they get.

    Example:
        >>> import torch
        >>> class Tiny(Workload):
        ...     name, primary_metric = "tiny", "mse"
        ...     def _build_model(self): return torch.nn.Linear(2, 1)
        ...     def calibration(self, n_batches=1): return [torch.ones(1, 2)] * n_batches
        ...     def run(self, model, batch): return model(batch)
        ...     def evaluate(self, model, limit=None): return {"mse": 0.0}
        >>> w = Tiny()
        >>> w.model() is w.model()
        False
    """

    #: registry name, e.g. ``"digits-vgg"``
    name: str = ""
    #: key of ``evaluate()``'s result that judges the model
    primary_metric: str = ""
    #: True when a larger primary metric is better
    higher_is_better: bool = True
    #: the default sweep's cells (format columns) for this workload; None: every default cell
    sweep_cells: tuple[str, ...] | None = None

    _pristine: nn.Module | None = None
    #: attributes holding caches that a copy can rebuild identically (a model loaded from fixed weights, data):
    #: left out when the workload is pickled, e.g. for every task sent to a search worker
    _REBUILDABLE: tuple[str, ...] = ()

    def __getstate__(self) -> dict:
        return {k: (None if k in self._REBUILDABLE else v) for k, v in self.__dict__.items()}

    @abc.abstractmethod
    def _build_model(self) -> nn.Module:
        """Build (load, or train) the FP32 model once."""

    def model(self) -> nn.Module:
        """A fresh FP32 copy of the workload's model, in eval mode; mutate it freely."""
        return copy.deepcopy(self._fp32()).eval()

    def _fp32(self) -> nn.Module:
        """The pristine FP32 model itself (built once); for read-only use inside the workload."""
        if self._pristine is None:
            self._pristine = self._build_model().eval()
        return self._pristine

    @abc.abstractmethod
    def calibration(self, n_batches: int = 4) -> list[Any]:
        """The first ``n_batches`` input batches for calibration (each accepted by ``run``)."""

    @abc.abstractmethod
    def run(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Forward pass of one batch (no gradient): the model's final representation."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, limit: int | None = None) -> dict[str, float]:
        """Every metric of ``model`` on the workload's test data; ``limit`` evaluates on a small slice."""

    def describe(self) -> str:
        """One line that names the workload and its primary metric."""
        return f"{self.name}: primary metric {self.primary_metric}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} primary_metric={self.primary_metric!r}>"


def cache_dir() -> Path:
    """The directory dtypelab caches trained models and reference results in (created on demand).

    ``$DTYPELAB_CACHE`` if set, else ``$XDG_CACHE_HOME/dtypelab``, else ``~/.cache/dtypelab``.

    Example:
        >>> import os
        >>> os.environ["DTYPELAB_CACHE"] = "/tmp/dl-cache-doc"
        >>> str(cache_dir())
        '/tmp/dl-cache-doc'
        >>> del os.environ["DTYPELAB_CACHE"]
    """
    explicit = os.environ.get("DTYPELAB_CACHE")
    if explicit:
        path = Path(explicit).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base).expanduser() / "dtypelab"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_cached(model: nn.Module, path: Path, what: str) -> nn.Module:
    """Load a cached state dict into ``model`` (``weights_only``); a damaged or foreign file raises ValueError
    naming it and what to do, instead of a deep traceback.

    Example:
        >>> import tempfile, pathlib, torch
        >>> bad = pathlib.Path(tempfile.mkdtemp()) / "m.pt"
        >>> _ = bad.write_bytes(b"not a checkpoint")
        >>> try:
        ...     load_cached(torch.nn.Linear(2, 2), bad, "toy model")
        ... except ValueError as err:
        ...     print(str(err).startswith(f"{bad}: the cached toy model cannot be read"), str(err)[-31:])
        True it is trained again on next use
    """
    import torch

    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:
        raise ValueError(f"{path}: the cached {what} cannot be read ({type(err).__name__}: {str(err)[:200]}); "
                         "delete the file and it is trained again on next use") from None
    return model


class TrainedOnFirstUse:
    """A workload mixin for a model trained on first use and cached: the weights at :attr:`weights_path` and the
    training history (JSON) beside them, each written atomically, the history first, so that weights found always
    have their history. Subclasses give ``weights_path`` (a key of everything the training depends on),
    ``_train() -> (state_dict, history)`` and ``_new_model()`` (the untrained architecture)."""

    name: str
    weights_path: Path

    @property
    def history_path(self) -> Path:
        """The training history beside the weights: ``<weights stem>.history.json``."""
        return self.weights_path.with_suffix(".history.json")

    def _train(self) -> tuple[dict[str, Any], dict[str, Any]]:
        raise NotImplementedError

    def _new_model(self) -> nn.Module:
        raise NotImplementedError

    def ensure_trained(self) -> Path:
        """Train and cache the model unless the cache already holds it; returns the weights path."""
        import torch

        path = self.weights_path
        if path.exists() and self.history_path.exists():
            return path
        log.info("training %s (settings %s) into %s", self.name, getattr(self, "settings", None), path)
        state, history = self._train()
        atomic_write(self.history_path, json.dumps(history, indent=1))
        atomic_write(path, lambda t: torch.save(state, t))
        return path

    def history(self) -> dict[str, Any]:
        """The training history, training first if needed."""
        self.ensure_trained()
        return json.loads(self.history_path.read_text())

    def _build_model(self) -> nn.Module:
        return load_cached(self._new_model(), self.ensure_trained(), f"{self.name} model")


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run a block with ``n`` torch threads (default: every CPU this process may use), then restore.

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1) as n:
        ...     torch.get_num_threads() == n == 1
        True
        >>> torch.get_num_threads() == before
        True
    """
    import torch

    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not on Linux
            n = os.cpu_count() or 1
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield max(1, n)
    finally:
        torch.set_num_threads(before)

"""Backends: who runs the rounding kernels for tensors on a given device, chosen by ``tensor.device.type``.

An engine (:mod:`dtypelab.kernels.engine`) owns a format's tables; a backend owns how they are applied to a
tensor on its device. ``cpu`` is served by the numba kernels (:mod:`dtypelab.kernels.cpu`); every other device
falls back to :class:`TorchBackend`, the exact torch reference (tensor ops, on the tensor's device). A new
device is one module with a :class:`Backend` subclass plus one line in ``_MODULES`` (loaded on first use, so
``import dtypelab`` never imports a GPU toolkit).

Example:
    >>> import torch
    >>> type(backend_for(torch.device("cpu"))).__name__, type(backend_for(torch.device("meta"))).__name__
    ('NumbaBackend', 'TorchBackend')
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Protocol

import numpy as np
import torch

from dtypelab.kernels.random import torch_words
from dtypelab.kernels.stochastic import torch_goes_away
from dtypelab.kernels.table import BY_SIGN, UP, RoundingTable


class TableEngineLike(Protocol):
    """What a backend reads of :class:`dtypelab.kernels.engine.TableEngine` (named here, not imported: the
    engines import the backends)."""

    table: RoundingTable
    bits: int


class PositEngineLike(Protocol):
    """What a backend reads of :class:`dtypelab.kernels.engine.PositEngine`."""

    bits: int
    es: int


class StochasticEngineLike(Protocol):
    """What a backend reads of :class:`dtypelab.kernels.engine.StochasticEngine`."""

    bits: int
    index: TableEngineLike
    results: RoundingTable
    base: np.ndarray
    inv_up: np.ndarray
    inv_down: np.ndarray
    random_bits: int
    flush_below: float


@dataclass(frozen=True)
class BlockRule:
    """What a fused block kernel needs of a scale rule and the element range: the rule's kernel name
    (``none``, ``absmax``, ``mx``, ``mx-ceil``, ``mx-even`` or ``mx-rceil``), the element max, MX's ``emax`` and
    fixed-point unit, the zero point, whether elements are clipped to ±max before rounding, and the element's
    fraction bits in its top binade (``mbits``, read by ``mx-even``)."""

    name: str
    qmax: float
    emax: int = 0
    unit: float = 1.0
    zero_point: float = 0.0
    clip: bool = False
    mbits: int = 0


class Backend:
    """Applies engines to tensors of one device kind. ``out`` is a contiguous tensor of ``x``'s shape on its
    device (values in ``x``'s dtype, or codes); each method returns the number of NaN inputs it saw."""

    def table(self, engine: TableEngineLike, x: torch.Tensor, out: torch.Tensor, what: str) -> int:
        """Round ``x`` through ``engine``'s table into ``out`` (``what``: ``value`` or ``code``)."""
        raise NotImplementedError

    def posit(self, engine: PositEngineLike, x: torch.Tensor, out: torch.Tensor, what: str) -> int:
        """The closed-form posit rounding of ``x`` into ``out``."""
        raise NotImplementedError

    def stochastic(self, engine: StochasticEngineLike, x: torch.Tensor, out: torch.Tensor, what: str, seed: int
                   ) -> int:
        """Stochastic rounding of ``x`` into ``out`` with the random words of ``seed``
        (:mod:`dtypelab.kernels.random`; element ``i`` of the flat tensor uses counter ``i``)."""
        raise NotImplementedError

    def block(self, engine: TableEngineLike, x: torch.Tensor, size: int, rule: BlockRule, want_codes: bool
              ) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """Fused block scaling of flat ``x`` in blocks of ``size``: ``(codes or fake-quantized values, float32
        scales per block, blocks holding NaN)``, or None where this backend has no fused kernel for it (the
        caller then takes the generic path, which gives the same bits)."""
        return None

    def log2_hist_centres(self, rows: torch.Tensor, bins: int) -> torch.Tensor:
        """PositTune's histogram rule per row (see :mod:`dtypelab.kernels.log2hist`), float64 ``[rows]``."""
        cpu = rows.detach().cpu()
        cpu = cpu if cpu.dtype in (torch.float32, torch.float64) else cpu.float()  # exact for half precision
        return backend_for(cpu.device).log2_hist_centres(cpu, bins).to(rows.device)


class TorchBackend(Backend):
    """The exact reference on any device: the rounding table searched with ``torch.searchsorted``."""

    def table(self, engine: TableEngineLike, x: torch.Tensor, out: torch.Tensor, what: str) -> int:
        t = engine.table
        x64 = x.to(torch.float64)
        idx = _intervals(t, x64)
        source = t.codes if what == "code" else t.values
        out.copy_(torch.as_tensor(source, device=x.device)[idx])
        return int(torch.isnan(x64).sum())

    def stochastic(self, engine: StochasticEngineLike, x: torch.Tensor, out: torch.Tensor, what: str, seed: int
                   ) -> int:
        x64 = x.reshape(-1).to(torch.float64)
        x64 = torch.where((x64 != 0) & (x64.abs() < engine.flush_below), x64 * 0, x64)
        j = _intervals(engine.index.table, x64)
        up = x64 > 0
        table = {name: torch.as_tensor(getattr(engine, name), device=x.device) for name in ("base", "inv_up",
                                                                                           "inv_down")}
        d = (x64.abs() - table["base"][j]) * torch.where(up, table["inv_up"][j], table["inv_down"][j])
        d = torch.where(d > 0, d, torch.zeros_like(d))
        away = torch_goes_away(d, torch_words(seed, x64.numel(), x.device), engine.random_bits)
        j = torch.where(away, j + 2 * up.long() - 1, j)
        source = engine.results.codes if what == "code" else engine.results.values
        out.copy_(torch.as_tensor(source, device=x.device)[j].reshape(out.shape))
        return int(torch.isnan(x64).sum())

    def posit(self, engine: PositEngineLike, x: torch.Tensor, out: torch.Tensor, what: str) -> int:
        cpu = x.to("cpu", torch.float64)
        result = torch.empty(cpu.shape, dtype=cpu.dtype if what == "value" else out.dtype)
        nans = backend_for(cpu.device).posit(engine, cpu, result, what)
        out.copy_(result)
        return nans


def _intervals(t: RoundingTable, x64: torch.Tensor) -> torch.Tensor:
    """:meth:`RoundingTable.reference_index` with torch ops on ``x64``'s device."""
    thr = torch.as_tensor(t.thresholds, device=x64.device)
    cum_up = torch.as_tensor(np.concatenate([[0], np.cumsum(t.tie == UP)]), device=x64.device)
    below = torch.searchsorted(thr, x64, right=False)
    upto = torch.searchsorted(thr, x64, right=True)
    idx = below + cum_up[upto] - cum_up[below]
    for j in np.flatnonzero(t.tie == BY_SIGN):
        idx += ((x64 == float(t.thresholds[j])) & ~torch.signbit(x64)).long()
    idx = torch.where(torch.isnan(x64), t.nan_index, idx)
    idx = torch.where(x64 == float("inf"), t.pinf_index, idx)
    return torch.where(x64 == float("-inf"), t.ninf_index, idx)


_MODULES = {"cpu": "dtypelab.kernels.cpu"}  # device type -> module defining BACKEND (imported on first use)
_LOADED: dict[str, Backend] = {}
REFERENCE = TorchBackend()


def register_backend(device_type: str, backend: Backend) -> None:
    """Serve tensors on ``device_type`` (``cpu``, ``cuda``, ``mps`` ...) with ``backend``."""
    _LOADED[device_type] = backend


def backend_for(device: torch.device) -> Backend:
    """The backend of ``device``'s type: a registered one, else the torch reference."""
    found = _LOADED.get(device.type)
    if found is None:
        module = _MODULES.get(device.type)
        found = _LOADED[device.type] = import_module(module).BACKEND if module else REFERENCE
    return found


__all__ = ["Backend", "BlockRule", "TorchBackend", "REFERENCE", "backend_for", "register_backend"]

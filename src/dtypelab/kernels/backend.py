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

import weakref
from importlib import import_module
from typing import Protocol

import numpy as np
import torch

from dtypelab.kernels import blockwise, lut, posit_closed
from dtypelab.kernels.blockwise import BlockRule
from dtypelab.kernels.log2hist import torch_log2_hist_centres
from dtypelab.kernels.random import torch_words
from dtypelab.kernels.stochastic import torch_goes_away
from dtypelab.kernels.table import BY_SIGN, UP, RoundingTable


class TableEngineLike(Protocol):
    """What a backend reads of :class:`dtypelab.kernels.engine.TableEngine` (named here, not imported: the
    engines import the backends)."""

    table: RoundingTable
    bits: int
    codes: np.ndarray

    def lut(self, dtype: np.dtype) -> lut.Lut: ...

    def lookup_arrays(self, dtype: np.dtype, table: np.ndarray, name: str) -> tuple[np.ndarray, ...]: ...


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
    inverse: np.ndarray
    random_bits: int
    flush_below: float


class Backend:
    """Applies engines to tensors of one device kind. ``out`` is a contiguous tensor of ``x``'s shape on its
    device (values in ``x``'s dtype, or codes); each method returns the number of NaN inputs it saw when writing
    codes (an int, or a 0-d tensor on the device so that nothing waits for it), and may return 0 for values."""

    def table(self, engine: TableEngineLike, x: torch.Tensor, out: torch.Tensor, what: str) -> int | torch.Tensor:
        """Round ``x`` through ``engine``'s table into ``out`` (``what``: ``value`` or ``code``)."""
        raise NotImplementedError

    def posit(self, engine: PositEngineLike, x: torch.Tensor, out: torch.Tensor, what: str) -> int | torch.Tensor:
        """The closed-form posit rounding of ``x`` into ``out``."""
        raise NotImplementedError

    def stochastic(self, engine: StochasticEngineLike, x: torch.Tensor, out: torch.Tensor, what: str, seed: int
                   ) -> int | torch.Tensor:
        """Stochastic rounding of ``x`` into ``out`` with the random words of ``seed``
        (:mod:`dtypelab.kernels.random`; element ``i`` of the flat tensor uses counter ``i``)."""
        raise NotImplementedError

    def block(self, engine: TableEngineLike, x: torch.Tensor, size: int, rule: BlockRule, want_codes: bool,
              given: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int | torch.Tensor] | None:
        """Fused block scaling of flat ``x`` in blocks of ``size``: ``(codes or fake-quantized values, float32
        scales per block, blocks holding NaN: an int, or a 0-d tensor on the device)``, or None where this backend
        has no fused kernel for it (the caller then takes the generic path, which gives the same bits). Under the
        rule ``given``, ``given`` holds the float32 scale of every block (static scales)."""
        return None

    def log2_hist_centres(self, rows: torch.Tensor, bins: int) -> torch.Tensor:
        """PositTune's histogram rule per row (see :mod:`dtypelab.kernels.log2hist`), float64 ``[rows]``."""
        cpu = rows.detach().cpu()
        cpu = cpu if cpu.dtype in (torch.float32, torch.float64) else cpu.float()  # exact for half precision
        return backend_for(cpu.device).log2_hist_centres(cpu, bins).to(rows.device)


class TorchBackend(Backend):
    """The exact path on any device, in tensor ops: the numba kernels' two-level lookup on the input's bit pattern,
    as gathers from the same tables (kept on the device), with no host synchronisation (NaN counts come back as
    0-d tensors, read only where a format without a NaN code must refuse one)."""

    def __init__(self) -> None:
        self._tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> {key: device tensors}

    def table(self, engine: TableEngineLike, x: torch.Tensor, out: torch.Tensor, what: str) -> int | torch.Tensor:
        work = torch.float64 if x.dtype == torch.float64 else torch.float32  # half precision: exact in float32
        flat = x.reshape(-1).to(work)
        if what == "code":
            source, name = engine.codes, "code"
        elif out.dtype == torch.float64:
            source, name = engine.table.values, "float64"
        else:  # float32 values, cast once more for half-precision outputs (as the CPU kernels do)
            source, name = engine.table.float32_values, "float32"
        target = out.view(-1)
        result = self._round(engine, flat, source, name, target)
        if result is not target:  # (half-precision outputs: the float32 values, cast)
            target.copy_(result)
        return torch.isnan(flat).count_nonzero() if what == "code" else 0  # (a sum would cast to int64)

    def _round(self, engine: TableEngineLike, flat: torch.Tensor, source: np.ndarray, name: str,
               out: torch.Tensor | None = None, scratch: bool = False) -> torch.Tensor:
        """``source[interval(flat)]`` for flat float32 or float64 ``flat``, by the engine's lookup, written into
        ``out`` where it is given with the result's dtype (else into a new tensor, returned). ``out`` may be
        ``flat``; with ``scratch`` (``out`` then is not ``flat``) the lookup may overwrite ``flat``.

        Memory: one int32 buffer of ``flat``'s length (none with ``scratch``), modified in place, and a bool flag
        or two; the steps that need more (the flags, the two-level form, float64 inputs) run in chunks of
        ``LOOKUP_CHUNK`` elements."""
        dtype = np.dtype(np.float64 if flat.dtype == torch.float64 else np.float32)
        m = engine.lut(dtype)
        arrays, searched = self._device_arrays(engine, dtype, source, name, flat.device)
        cut, table, first_out = arrays[1], arrays[7], arrays[8]
        source_of = table if m.form == lut.TWO_LEVEL else first_out  # what the final indices select from
        n = flat.numel()
        if out is None or out.dtype != source_of.dtype:
            out = torch.empty(n, dtype=source_of.dtype, device=flat.device)
        bits = flat.view(torch.int64 if flat.dtype == torch.float64 else torch.int32)
        if flat.dtype == torch.float64 or m.form == lut.TWO_LEVEL:
            for c in range(0, n, LOOKUP_CHUNK):
                part = slice(c, min(n, c + LOOKUP_CHUNK))
                idx = _lookup(m.form, m.low_bits, 8 * dtype.itemsize, bits[part], *arrays)
                if m.form == lut.TWO_LEVEL and searched:  # sub-buckets that still straddle a threshold
                    idx = torch.where(idx < 0, _intervals(engine.table, flat[part].to(torch.float64)), idx)
                torch.index_select(source_of, 0, idx, out=out[part])
            return out
        # float32, direct or cut: the flags per chunk, then the index 2 key + rest (3 key + rest + past) in one
        # int32 buffer (``flat``'s own where it is scratch), modified in place
        low_mask = (1 << m.low_bits) - 1
        rest = torch.empty(n, dtype=torch.bool, device=flat.device)
        past = torch.empty(n, dtype=torch.bool, device=flat.device) if m.form == lut.CUT else None
        for c in range(0, n, LOOKUP_CHUNK):
            part = slice(c, min(n, c + LOOKUP_CHUNK))
            low = bits[part] & low_mask
            torch.ne(low, 0, out=rest[part])
            if past is not None:  # past the bucket's cut
                key = (bits[part] >> m.low_bits) & ((1 << (32 - m.low_bits)) - 1)
                torch.ge(low, cut.index_select(0, key), out=past[part])
        idx = bits if scratch else torch.empty_like(bits)
        torch.bitwise_right_shift(bits, m.low_bits, out=idx)
        idx.bitwise_and_((1 << (32 - m.low_bits)) - 1).mul_(2 if past is None else 3)
        for c in range(0, n, LOOKUP_CHUNK):  # (adding a bool casts it to int32 first, in a copy, on the CPU)
            part = slice(c, min(n, c + LOOKUP_CHUNK))
            idx[part].add_(rest[part])
            if past is not None:
                idx[part].add_(past[part])
        return torch.index_select(first_out, 0, idx, out=out)

    def block(self, engine: TableEngineLike, x: torch.Tensor, size: int, rule: BlockRule, want_codes: bool,
              given: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if x.dtype != torch.float32 or size <= 0 or rule.name not in blockwise.RULES:
            return None
        flat = x.detach().contiguous().view(-1)
        scales, nan = blockwise.torch_block_scales(flat, size, rule, given)
        if scales.dtype != torch.float32:  # (as the generic path would divide: in the wider dtype)
            each = scales.repeat_interleave(size)[: flat.numel()]
            v = flat / each
        else:  # x / s per block, broadcast: no per-element copy of the scales
            v = torch.empty_like(flat)
            _per_block(torch.div, flat, scales, size, v)
        if rule.clip:
            v.clamp_(-np.float32(rule.qmax), np.float32(rule.qmax))
        if rule.zero_point != 0:
            v.add_(np.float32(rule.zero_point))
        if want_codes:
            out = self._round(engine, v, engine.codes, "code", scratch=True)
        else:  # values less the zero point, as the CPU kernel subtracts it in float32, then times the scale
            zp = np.float32(rule.zero_point)
            out = self._round(engine, v, engine.table.float32_values - zp, f"float32 - {zp}", v)
            if scales.dtype != torch.float32:
                out = out.mul_(each)
            else:
                _per_block(torch.mul, out, scales, size, out)
        return out, scales, nan.sum()

    def log2_hist_centres(self, rows: torch.Tensor, bins: int) -> torch.Tensor:
        return torch_log2_hist_centres(rows, bins)

    def _device_arrays(self, engine: TableEngineLike, dtype: np.dtype, source: np.ndarray, name: str,
                       device: torch.device) -> tuple[tuple[torch.Tensor, ...], bool]:
        """The engine's lookup arrays (:meth:`TableEngine.lookup_arrays`) on ``device``, made once, and whether
        any sub-bucket of its two-level form needs the search."""
        cache = self._tables.setdefault(engine, {})
        key = (dtype, name, str(device))
        if key not in cache:
            arrays = engine.lookup_arrays(dtype, source, name)
            searched = engine.lut(dtype).form == lut.TWO_LEVEL and bool((arrays[2] < 0).any())
            cache[key] = tuple(torch.as_tensor(a, device=device) for a in arrays), searched
        return cache[key]

    def stochastic(self, engine: StochasticEngineLike, x: torch.Tensor, out: torch.Tensor, what: str, seed: int
                   ) -> int | torch.Tensor:
        x64 = x.reshape(-1).to(torch.float64)
        x64 = torch.where((x64 != 0) & (x64.abs() < engine.flush_below), x64 * 0, x64)
        j = _intervals(engine.index.table, x64)
        up = (x64 > 0).long()
        base, inverse = (torch.as_tensor(a, device=x.device) for a in (engine.base, engine.inverse))
        d = (x64.abs() - base[j]) * inverse[2 * j + up]
        d = torch.where(d > 0, d, torch.zeros_like(d))
        away = torch_goes_away(d, torch_words(seed, x64.numel(), x.device), engine.random_bits)
        j = torch.where(away, j + 2 * up - 1, j)
        source = engine.results.codes if what == "code" else engine.results.values
        out.copy_(torch.as_tensor(source, device=x.device)[j].reshape(out.shape))
        return torch.isnan(x64).count_nonzero() if what == "code" else 0

    def posit(self, engine: PositEngineLike, x: torch.Tensor, out: torch.Tensor, what: str) -> torch.Tensor:
        codes = posit_closed.torch_encode(x.reshape(-1), engine.bits, engine.es)
        result = codes if what == "code" else posit_closed.torch_decode(codes, engine.bits, engine.es)
        if out.dtype in (torch.float16, torch.bfloat16):  # through float32, as the CPU kernels round
            result = result.float()
        out.view(-1).copy_(result)
        return torch.isnan(x).count_nonzero()


def _lookup(form: int, low_bits: int, total_bits: int, bits: torch.Tensor, first: torch.Tensor, cut: torch.Tensor,
            entries: torch.Tensor, fb_first: torch.Tensor, fb_span: torch.Tensor, thresholds: torch.Tensor,
            tie: torch.Tensor, table: torch.Tensor, first_out: torch.Tensor) -> torch.Tensor:
    """:func:`dtypelab.kernels.lut.lookup` on a tensor of bit patterns: the indices into ``first_out`` (direct and
    cut forms), or for the two-level form the interval indices, negative where a sub-bucket still straddles a
    threshold."""
    key = ((bits >> low_bits) & ((1 << (total_bits - low_bits)) - 1)).long()
    low = (bits & ((1 << low_bits) - 1)).long()
    rest = (low != 0).long()
    if form == lut.DIRECT:
        return 2 * key + rest
    if form == lut.CUT:
        return 3 * key + rest + (low >= cut[key]).long()
    j = first[2 * key + rest].long()
    h = torch.where(j < 0, -1 - j, 0)
    shift = h & 63
    sub = (h >> 6) + 2 * (low >> shift) + ((low & ((1 << shift) - 1)) != 0).long()
    return torch.where(j < 0, entries[torch.where(j < 0, sub, 0)].long(), j)


def _per_block(op, a: torch.Tensor, scales: torch.Tensor, size: int, out: torch.Tensor) -> None:
    """``out = op(a, s)`` with ``s`` the scale of each element's block of ``size`` (flat ``a``, the last block may
    be short), broadcast over the blocks; ``out`` may be ``a``."""
    full = a.numel() // size * size
    op(a[:full].view(-1, size), scales[: full // size, None], out=out[:full].view(-1, size))
    if full < a.numel():
        op(a[full:], scales[-1], out=out[full:])


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


LOOKUP_CHUNK = 1 << 18  # elements per step of the torch lookup's chunked parts

_MODULES = {"cpu": "dtypelab.kernels.cpu", "cuda": "dtypelab.kernels.gpu"}  # device type -> module defining
# BACKEND, imported on the first tensor of that device type
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

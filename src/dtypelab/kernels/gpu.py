"""The CUDA backend: Triton kernels for the element lookups, the torch reference for the rest.

Loaded by :func:`dtypelab.kernels.backend.backend_for` on the first CUDA tensor only, so a CPU-only machine never
imports Triton (an optional extra: ``pip install 'dtypelab[triton]'``). Without Triton, CUDA tensors take the
torch reference (:class:`~dtypelab.kernels.backend.TorchBackend`), which gives the same bits.

:class:`TritonBackend` is the torch backend with its one lookup (``_round``: float32 inputs through the direct, cut
or two-level form of :mod:`dtypelab.kernels.lut`) done by one Triton kernel per form, reading the same device
tables. Every path built on that lookup uses it: quantize and encode, and the fused block kernels (whose scales,
absmax / MX / DT, are torch reductions on the device). Closed-form posits, log2-hist and stochastic rounding are
the torch reference's. Two-level sub-buckets that still straddle a threshold (irrational LP thresholds) come back
as negative indices and are settled by the reference's search, as on the torch path.

The kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (set before this module is imported), which is how the
tests check them against the numba kernels on a machine without a GPU.
"""

from __future__ import annotations

import numpy as np
import torch

from dtypelab.kernels import lut
from dtypelab.kernels.backend import REFERENCE, Backend, TableEngineLike, TorchBackend, _intervals

BLOCK = 1024  # elements per Triton program

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None


if triton is not None:

    @triton.jit
    def _direct(x_ptr, out_ptr, first_out_ptr, n, LOW_BITS: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        b = tl.load(x_ptr + i, mask=m, other=0).to(tl.int32, bitcast=True)
        key = ((b >> LOW_BITS) & ((1 << (32 - LOW_BITS)) - 1)).to(tl.int64)
        low = b & ((1 << LOW_BITS) - 1)
        tl.store(out_ptr + i, tl.load(first_out_ptr + 2 * key + (low != 0).to(tl.int64), mask=m), mask=m)

    @triton.jit
    def _cut(x_ptr, out_ptr, first_out_ptr, cut_ptr, n, LOW_BITS: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        b = tl.load(x_ptr + i, mask=m, other=0).to(tl.int32, bitcast=True)
        key = ((b >> LOW_BITS) & ((1 << (32 - LOW_BITS)) - 1)).to(tl.int64)
        low = b & ((1 << LOW_BITS) - 1)
        past = (low >= tl.load(cut_ptr + key, mask=m, other=0)).to(tl.int64)
        tl.store(out_ptr + i, tl.load(first_out_ptr + 3 * key + (low != 0).to(tl.int64) + past, mask=m), mask=m)

    @triton.jit
    def _two_level(x_ptr, out_ptr, table_ptr, first_ptr, entries_ptr, n, LOW_BITS: tl.constexpr,
                   WRITE_INDEX: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        b = tl.load(x_ptr + i, mask=m, other=0).to(tl.int32, bitcast=True)
        key = ((b >> LOW_BITS) & ((1 << (32 - LOW_BITS)) - 1)).to(tl.int64)
        low = (b & ((1 << LOW_BITS) - 1)).to(tl.int64)
        j = tl.load(first_ptr + 2 * key + (low != 0).to(tl.int64), mask=m, other=0).to(tl.int64)
        h = tl.where(j < 0, -1 - j, 0)
        shift = h & 63
        sub = (h >> 6) + 2 * (low >> shift) + ((low & ((tl.full([BLOCK], 1, tl.int64) << shift) - 1)) != 0)
        j = tl.where(j < 0, tl.load(entries_ptr + sub, mask=m & (j < 0), other=0).to(tl.int64), j)
        if WRITE_INDEX:  # some sub-buckets straddle a threshold (negative): the caller settles them
            tl.store(out_ptr + i, j, mask=m)
        else:
            tl.store(out_ptr + i, tl.load(table_ptr + j, mask=m), mask=m)


class TritonBackend(TorchBackend):
    """The torch backend with its float32 lookups done by Triton kernels (see the module docstring)."""

    def _round(self, engine: TableEngineLike, flat: torch.Tensor, source: np.ndarray, name: str) -> torch.Tensor:
        if flat.dtype != torch.float32:
            return super()._round(engine, flat, source, name)
        m = engine.lut(np.float32)
        (first, cut, entries, _, _, _, _, table, first_out), searched = self._device_arrays(
            engine, np.dtype(np.float32), source, name, flat.device)
        flat = flat.contiguous()
        n = flat.numel()
        grid = (triton.cdiv(n, BLOCK),)
        if m.form == lut.DIRECT:
            out = torch.empty(n, dtype=first_out.dtype, device=flat.device)
            _direct[grid](flat, out, first_out, n, LOW_BITS=m.low_bits, BLOCK=BLOCK)
        elif m.form == lut.CUT:
            out = torch.empty(n, dtype=first_out.dtype, device=flat.device)
            _cut[grid](flat, out, first_out, cut, n, LOW_BITS=m.low_bits, BLOCK=BLOCK)
        else:
            out = torch.empty(n, dtype=torch.int64 if searched else table.dtype, device=flat.device)
            _two_level[grid](flat, out, table, first, entries, n, LOW_BITS=m.low_bits, WRITE_INDEX=searched,
                             BLOCK=BLOCK)
            if searched:
                out = table[torch.where(out < 0, _intervals(engine.table, flat.to(torch.float64)), out)]
        return out


BACKEND: Backend = TritonBackend() if triton is not None else REFERENCE

__all__ = ["BACKEND", "TritonBackend"]

"""The CPU backend: numba kernels writing straight into the output (:mod:`~dtypelab.kernels.lut` for tables,
:mod:`~dtypelab.kernels.posit_closed` for wide posits, :mod:`~dtypelab.kernels.blockwise` for fused block
scaling, :mod:`~dtypelab.kernels.log2hist` for PositTune's histogram rule).

numba reads float32 and float64; half-precision inputs are converted chunk by chunk, keeping temporaries small.

Example:
    >>> import torch
    >>> from dtypelab import fmt
    >>> out = torch.empty(2)
    >>> BACKEND.table(fmt("int4").engine, torch.tensor([2.5, 9.0]), out, "value"), out.tolist()
    (0, [2.0, 7.0])
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from dtypelab.kernels import blockwise, lut, posit_closed, stochastic
from dtypelab.kernels.backend import Backend, BlockRule
from dtypelab.kernels.log2hist import log2_hist_centres

if TYPE_CHECKING:
    from dtypelab.kernels.engine import PositEngine, StochasticEngine, TableEngine

CHUNK = 1 << 20  # elements converted at a time for half-precision inputs
MAX_BLOCK = 1 << 16  # larger groups gain nothing from fusing (one group is one work item)

Kernel = Callable[[np.ndarray, torch.Tensor, int], int]  # (flat float32/64 input, flat output, offset) -> NaNs


def _run(x: torch.Tensor, out: torch.Tensor, what: str, kernel: Kernel) -> int:
    """``kernel`` over flat ``x`` (half precision in float32 chunks; ``offset``: the chunk's first element)."""
    x = x.detach().contiguous()
    flat_out = out.view(-1)
    if x.dtype in (torch.float32, torch.float64):
        return kernel(x.view(-1).numpy(), flat_out, 0)
    nans = 0
    flat = x.view(-1)
    for start in range(0, flat.numel(), CHUNK):
        chunk = flat[start:start + CHUNK].float()
        dst = flat_out[start:start + CHUNK]
        if what == "value":
            tmp = torch.empty_like(chunk)
            nans += kernel(chunk.numpy(), tmp, start)
            dst.copy_(tmp)
        else:
            nans += kernel(chunk.numpy(), dst, start)
    return nans


def _bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.int32 if x.dtype == np.float32 else np.int64)


def _wide(codes: np.ndarray) -> np.ndarray:
    """Codes of at most 8 bits as int32 for the fused block kernels' lookups (reading 32-bit words was about 1.3x
    faster than bytes on encode); the kernels narrow them again as they store."""
    return codes.astype(np.int32) if codes.itemsize < 4 else codes


def _words(out: np.ndarray) -> np.ndarray | None:
    """The leading whole 32-bit words of a byte output, which the ``encode_*`` kernels fill four codes at a time
    (on a big-endian machine: none, every code stored on its own); None for a wider output."""
    if out.itemsize != 1:
        return None
    if sys.byteorder != "little":
        return np.empty(0, np.uint32)
    return out[: out.size - out.size % 4].view(np.uint32)


def _table_kernel(engine: TableEngine, what: str) -> Kernel:
    def kernel(x: np.ndarray, out: torch.Tensor, offset: int) -> int:
        m = engine.lut(x.dtype)
        bits = _bits(x)
        t = engine.table
        total = 8 * x.itemsize
        dst = out.numpy()
        if what == "code":
            o = engine.outputs(x.dtype, engine.flagged_codes, "flagged code")
        elif out.dtype == torch.float32:
            o = engine.outputs(x.dtype, t.float32_values, "float32")
        else:
            o = engine.outputs(x.dtype, t.values, "float64")
        words = _words(dst)
        if m.form == lut.DIRECT:
            if words is not None:
                return int(lut.encode_direct(bits, dst, words, total, m.low_bits, o.first))
            return int(lut.apply_direct(bits, dst, total, m.low_bits, o.first))
        if m.form == lut.CUT:
            if words is not None:
                return int(lut.encode_cut(bits, dst, words, total, m.low_bits, o.first, m.cut))
            return int(lut.apply_cut(bits, dst, total, m.low_bits, o.first, m.cut))
        arrays = (total, m.low_bits, m.first, m.entries, m.fallback_first, m.fallback_span, t.thresholds, t.tie)
        if words is not None:
            return int(lut.encode_two_level(x, bits, dst, words, o.table, *arrays))
        return int(lut.apply_two_level(x, bits, dst, o.table, *arrays))

    return kernel


class NumbaBackend(Backend):
    """numba kernels on CPU tensors."""

    def table(self, engine: TableEngine, x: torch.Tensor, out: torch.Tensor, what: str) -> int:
        return _run(x, out, what, _table_kernel(engine, what))

    def posit(self, engine: PositEngine, x: torch.Tensor, out: torch.Tensor, what: str) -> int:
        kernel = posit_closed.quantize if what == "value" else posit_closed.encode
        return _run(x, out, what, lambda a, o, offset: int(kernel(a, o.numpy(), engine.bits, engine.es)))

    def stochastic(self, engine: StochasticEngine, x: torch.Tensor, out: torch.Tensor, what: str, seed: int
                   ) -> int:
        constants = stochastic.decision_constants(engine.random_bits)

        def kernel(a: np.ndarray, o: torch.Tensor, offset: int) -> int:
            m = engine.index.lut(a.dtype)
            r = engine.results
            if what == "code":
                results, name = engine.codes, "code"
            elif o.dtype == torch.float32:
                results, name = r.float32_values, "float32"
            else:
                results, name = r.values, "float64"
            total = 8 * a.itemsize
            bits = _bits(a)
            rest = (np.uint64(seed), offset, engine.flush_below, bits.dtype.type(-(1 << (total - 1))), *constants)
            head = (a, bits, o.numpy(), total, m.low_bits)
            if a.dtype == np.float32 and engine.pow2_words is not None:  # integers only, two loads per input
                return int(stochastic.apply_stochastic_pow2(bits, o.numpy(), m.low_bits, engine.pow2_words, results,
                                                            np.uint64(seed), offset, engine.flush_bits))
            narrow = total - m.low_bits == lut.KEY_BITS[0]  # per-entry tables of at most 3 * 2^16 entries
            if narrow and m.form == lut.DIRECT:  # the branch-free kernels of the per-entry tables
                return int(stochastic.apply_stochastic_direct(*head, *engine.entry_arrays(a.dtype, results, name),
                                                              *rest))
            if narrow and m.form == lut.CUT:
                return int(stochastic.apply_stochastic_cut(*head, m.cut, *engine.entry_arrays(a.dtype, results, name),
                                                           *rest))
            return int(stochastic.apply_stochastic(a, bits, o.numpy(), m.form, total, m.low_bits,
                                                   *engine.index_arrays(a.dtype), engine.base, engine.inverse, results,
                                                   *rest))

        return _run(x, out, what, kernel)

    def block(self, engine: TableEngine, x: torch.Tensor, size: int, rule: BlockRule, want_codes: bool,
              given: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        if x.dtype != torch.float32 or not 0 < size <= MAX_BLOCK or rule.name not in blockwise.RULES:
            return None
        scales = torch.empty((x.numel() + size - 1) // size) if given is None else given.float().contiguous()
        if given is not None and not bool(((scales > 0) & (scales < math.inf)).all()):
            return None  # (numba's division refuses a zero; the generic path gives IEEE's answer)
        flat = x.detach().contiguous().view(-1)
        out = torch.empty(flat.numel(), dtype=engine.code_dtype if want_codes else torch.float32)
        if want_codes:
            arrays = engine.lookup_arrays(np.float32, _wide(engine.codes), "code as int32")
        else:  # values less the zero point, as the kernel would subtract it in float32
            zp = np.float32(rule.zero_point)
            arrays = engine.lookup_arrays(np.float32, engine.table.float32_values - zp, f"float32 - {zp}")
        m = engine.lut(np.float32)
        nan_blocks = blockwise.KERNELS[m.form](flat.numpy(), size, blockwise.RULES[rule.name], float(rule.qmax),
                                               rule.emax, float(rule.unit), float(rule.zero_point), rule.clip,
                                               not want_codes, out.numpy(), scales.numpy(), m.low_bits, arrays,
                                               rule.mbits)
        return out, scales, int(nan_blocks)

    def log2_hist_centres(self, rows: torch.Tensor, bins: int) -> torch.Tensor:
        rows = rows.detach()
        rows = rows if rows.dtype in (torch.float32, torch.float64) else rows.float()  # exact for half precision
        return torch.from_numpy(log2_hist_centres(rows.numpy(), bins))


BACKEND = NumbaBackend()

__all__ = ["NumbaBackend", "BACKEND", "MAX_BLOCK"]

"""The CUDA backend: Triton kernels for the element lookups, the fused block kernels and log2-hist's bins, the torch
reference for the rest.

Loaded by :func:`dtypelab.kernels.backend.backend_for` on the first CUDA tensor only, so a CPU-only machine never
imports Triton (an optional extra: ``pip install 'dtypelab[triton]'``). Without Triton, CUDA tensors take the
torch reference (:class:`~dtypelab.kernels.backend.TorchBackend`), which gives the same bits.

:class:`TritonBackend` is the torch backend with three kinds of Triton kernel (the first two read the same device
tables):

* the element lookup (``_round``: float32 inputs through the direct, cut or two-level form of
  :mod:`dtypelab.kernels.lut`), one kernel compiled per form: quantize and encode, and whatever else the torch
  reference builds on ``_round``;
* the fused block kernel (``block``, float32 inputs, blocks of up to ``MAX_BLOCK`` elements): each program takes
  whole blocks, reduces each block's absmax on the bit patterns (NaN and infinities found as bit patterns above
  +inf's, since a float max drops NaN on CUDA), computes its scale as :mod:`dtypelab.kernels.blockwise` does
  (``none``, ``absmax`` in float64, the MX variants' exponents in integers from the absmax's float64 bits,
  ``given``), divides with ``tl.math.div_rn`` (``/`` is approximate on CUDA), clips keeping NaN, adds the zero
  point, looks every element up and writes codes or values times the scale, the scales, and per program the count
  of blocks holding a NaN (summed on the device: no host synchronisation);
* log2-hist's bins (``log2_hist_centres``): one program per (row, chunk of ``HIST_CHUNK``) takes the shared log2
  of :mod:`dtypelab.kernels.log2hist` (launched with ``enable_fp_fusion=False``, so that no multiply-add is fused
  and the bits are numba's and torch's), bins the elements and adds its histogram to the row's counts; each row's
  range before it and the fullest bin after it are the torch reference's (small tensor ops).

The torch reference's: closed-form posits, stochastic rounding, float64 inputs, and blocks that the
block kernel does not take (larger than ``MAX_BLOCK``, or a two-level form with sub-buckets that straddle a
threshold). Such sub-buckets (irrational LP thresholds) come back from the lookup kernel as negative indices and
are settled by the reference's search, as on the torch path.

The kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (set before this module is imported), which is how the
tests check them against the numba kernels on a machine without a GPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dtypelab.kernels import blockwise, log2hist, lut
from dtypelab.kernels.backend import REFERENCE, Backend, TableEngineLike, TorchBackend, _intervals
from dtypelab.kernels.blockwise import BlockRule

BLOCK = 1024  # elements per program of the lookup kernel
TILE = 2048  # elements per program of the block kernel (whole blocks: one if a block is larger)
MAX_BLOCK = 1 << 14  # larger blocks take the torch path (one program holds a whole block)
HIST_CHUNK = 1024  # elements of a row per program of the log2-hist kernel

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None


if triton is not None:

    @triton.jit
    def _find(b, m, first_ptr, cut_ptr, entries_ptr, table_ptr, first_out_ptr, FORM: tl.constexpr,
              LOW_BITS: tl.constexpr, WRITE_INDEX: tl.constexpr):
        """The lookup of float32 bit patterns ``b`` (int32, any shape; ``m`` masks the loads) in the form ``FORM``:
        the results, or under ``WRITE_INDEX`` the two-level form's interval indices (negative where a sub-bucket
        straddles a threshold)."""
        key = ((b >> LOW_BITS) & ((1 << (32 - LOW_BITS)) - 1)).to(tl.int64)
        low = (b & ((1 << LOW_BITS) - 1)).to(tl.int64)
        rest = (low != 0).to(tl.int64)
        if FORM == 0:  # lut.DIRECT
            result = tl.load(first_out_ptr + 2 * key + rest, mask=m)
        elif FORM == 1:  # lut.CUT
            past = (low >= tl.load(cut_ptr + key, mask=m, other=0)).to(tl.int64)
            result = tl.load(first_out_ptr + 3 * key + rest + past, mask=m)
        else:
            j = tl.load(first_ptr + 2 * key + rest, mask=m, other=0).to(tl.int64)
            h = tl.where(j < 0, -1 - j, 0)
            shift = h & 63
            sub = (h >> 6) + 2 * (low >> shift) + (((low >> shift) << shift) != low).to(tl.int64)
            j = tl.where(j < 0, tl.load(entries_ptr + sub, mask=m & (j < 0), other=0).to(tl.int64), j)
            if WRITE_INDEX:
                result = j
            else:
                result = tl.load(table_ptr + j, mask=m)
        return result

    @triton.jit
    def _lookup_kernel(x_ptr, out_ptr, first_ptr, cut_ptr, entries_ptr, table_ptr, first_out_ptr, n,
                       FORM: tl.constexpr, LOW_BITS: tl.constexpr, WRITE_INDEX: tl.constexpr, BLOCK: tl.constexpr):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        b = tl.load(x_ptr + i, mask=m, other=0).to(tl.int32, bitcast=True)
        r = _find(b, m, first_ptr, cut_ptr, entries_ptr, table_ptr, first_out_ptr, FORM, LOW_BITS, WRITE_INDEX)
        tl.store(out_ptr + i, r, mask=m)

    @triton.jit
    def _block_kernel(x_ptr, out_ptr, scales_ptr, nan_ptr, params_ptr, first_ptr, cut_ptr, entries_ptr, table_ptr,
                      first_out_ptr, n, nblocks, size, emax, top_exp, RULE: tl.constexpr, FORM: tl.constexpr,
                      LOW_BITS: tl.constexpr, CLIP: tl.constexpr, ZERO_POINT: tl.constexpr,
                      SCALE_OUT: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
        """``ROWS`` blocks of ``size`` (<= ``COLS``) per program: :func:`blockwise._blocks` for one chunk. The
        reductions are ``tl.reduce`` with ``tl.max`` / ``tl.sum``'s own combiners: the same code compiled, and the
        interpreter's numpy path even where Triton was imported before ``TRITON_INTERPRET`` was set (the
        reductions of ``tl.standard`` are then compiled-only functions)."""
        r = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)  # the program's blocks
        c = tl.arange(0, COLS)
        i = r[:, None] * size + c[None, :]
        m = (c[None, :] < size) & (i < n)  # (a block past the last one has no element: r * size >= n)
        x = tl.load(x_ptr + i, mask=m, other=0)
        mag = x.to(tl.int32, bitcast=True) & 0x7FFFFFFF  # integer order is magnitude order, inf then NaN on top
        top = tl.reduce(mag, 1, tl.standard._elementwise_max)  # (on the bits: a float max would drop a NaN)
        nan = top > 0x7F800000
        nonfinite = top >= 0x7F800000
        amax = tl.reduce(tl.where(mag < 0x7F800000, mag, 0), 1, tl.standard._elementwise_max)  # largest finite
        in_range = r < nblocks
        if RULE == 6:  # given: the caller's scales
            s = tl.load(scales_ptr + r, mask=in_range, other=1.0)
        elif RULE == 0:  # none
            s = tl.full([ROWS], 1.0, tl.float32)
        elif RULE == 1:  # absmax: float32(amax / qmax) in float64 (correctly rounded), in float32's positive range
            qmax = tl.load(params_ptr)
            s = amax.to(tl.float32, bitcast=True).to(tl.float64) / qmax  # (float64 `/` is div.rn on CUDA)
            # clamped before rounding to float32 (the same float32: the bounds are float32s)
            s = tl.minimum(tl.maximum(s, 1.401298464324817e-45), 3.4028234663852886e38).to(tl.float32)
            s = tl.where(amax == 0, 1.0, s)
        else:  # MX: the exponent in integers from the float64 bits of the absmax (frexp), as the numba kernel
            a64 = tl.where(amax > 0, amax.to(tl.float32, bitcast=True).to(tl.float64), 1.1754943508222875e-38)
            b64 = a64.to(tl.int64, bitcast=True)
            exp = ((b64 >> 52) & 0x7FF) - 1022  # frexp's exponent (a float32 is a normal float64)
            frac = b64 & 0xFFFFFFFFFFFFF
            mantissa = (frac | (1022 << 52)).to(tl.float64, bitcast=True)  # frexp's mantissa, in [0.5, 1)
            if RULE == 3:  # mx-ceil
                e = exp - (frac == 0).to(tl.int64) - emax
            elif RULE == 4:  # mx-even: params[2] = 1 - 2^-(mbits + 2)
                e = exp - 1 + (mantissa >= tl.load(params_ptr + 2)).to(tl.int64) - emax
            elif RULE == 5:  # mx-rceil: params[3] = frexp(qmax * unit)'s mantissa, top_exp its exponent
                e = exp - top_exp + (mantissa > tl.load(params_ptr + 3)).to(tl.int64)
            else:
                e = exp - 1 - emax
            two = ((tl.minimum(tl.maximum(e, -127), 127) + 1023) << 52).to(tl.float64, bitcast=True)
            s = (tl.load(params_ptr + 1) * two).to(tl.float32)  # unit * 2^e, exact in float64, rounded once
            s = tl.where(nonfinite | (e > 127), float("nan"), s)
        if RULE != 6:
            tl.store(scales_ptr + r, s, mask=in_range)
        tl.store(nan_ptr + tl.program_id(0), tl.reduce((nan & in_range).to(tl.int32), 0, tl.standard._sum_combine))
        v = tl.math.div_rn(x, s[:, None])  # (`/` is approximate on CUDA)
        if CLIP:  # to ±float32(qmax), keeping a NaN
            lim = tl.load(params_ptr + 4).to(tl.float32)
            v = tl.where(v != v, v, tl.minimum(tl.maximum(v, -lim), lim))
        if ZERO_POINT:
            v = v + tl.load(params_ptr + 5).to(tl.float32)
        out = _find(v.to(tl.int32, bitcast=True), m, first_ptr, cut_ptr, entries_ptr, table_ptr, first_out_ptr, FORM,
                    LOW_BITS, False)
        if SCALE_OUT:
            out = out * s[:, None]
        tl.store(out_ptr + i, out, mask=m)


if triton is not None:

    @triton.jit
    def _log2(a, consts_ptr):
        """:func:`dtypelab.kernels.log2hist.log2` of float64 ``a`` (finite, > 0): ``frexp`` from the bits, then
        the same IEEE operations (launched with ``enable_fp_fusion=False``: no fused multiply-add); the constants
        are loaded as float64 (``LOG2_CONSTANTS``: float literals would be float32)."""
        sub = ((a.to(tl.int64, bitcast=True) >> 52) & 0x7FF) == 0  # subnormal: times 2^54 (exact) first
        a = a * tl.where(sub, 18014398509481984.0, 1.0)
        b = a.to(tl.int64, bitcast=True)
        e = ((b >> 52) & 0x7FF) - 1022 - tl.where(sub, 54, 0)
        m = ((b & 0xFFFFFFFFFFFFF) | (1022 << 52)).to(tl.float64, bitcast=True)  # frexp's mantissa, in [0.5, 1)
        small = m < tl.load(consts_ptr)
        m = tl.where(small, m * 2.0, m)
        e = e - small.to(tl.int64)
        f = m - 1.0
        s = f / (f + 2.0)  # (float64 `/` is correctly rounded on CUDA)
        z = s * s
        p = tl.load(consts_ptr + 11) + z * 0.0
        for k in tl.static_range(10):
            p = p * z + tl.load(consts_ptr + 10 - k)
        return e.to(tl.float64) + s * p

    @triton.jit
    def _log2_kernel(x_ptr, out_ptr, consts_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        tl.store(out_ptr + i, _log2(tl.load(x_ptr + i, mask=m, other=1.0), consts_ptr), mask=m)

    @triton.jit
    def _log2_hist_kernel(x_ptr, lo_ptr, width_ptr, counts_ptr, consts_ptr, cols, BINS: tl.constexpr,
                          SLOTS: tl.constexpr, CHUNK: tl.constexpr):
        """The bins of ``CHUNK`` elements of one row (program ``(row, chunk)``), added to the row's ``SLOTS``
        counts (slot ``BINS``: the elements left out)."""
        row = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1).to(tl.int64) * CHUNK + tl.arange(0, CHUNK)
        m = c < cols
        a = tl.abs(tl.load(x_ptr + row * cols + c, mask=m, other=0))
        valid = m & (a != 0) & (a < float("inf"))  # NaN fails `a < inf`
        lo = tl.load(lo_ptr + row)
        width = tl.load(width_ptr + row)
        logs = _log2(tl.where(valid, a, 1.0).to(tl.float64), consts_ptr)
        q = tl.floor((logs - lo) / tl.where(width > 0, width, 1.0))
        b = tl.where(width > 0, tl.minimum(tl.maximum(q, 0.0), BINS - 1.0), 0.0).to(tl.int32)
        b = tl.where(valid, b, BINS)
        tl.atomic_add(counts_ptr + row * SLOTS + tl.arange(0, SLOTS), tl.histogram(b, SLOTS))


class TritonBackend(TorchBackend):
    """The torch backend with its float32 lookups and fused block kernels done by Triton kernels (see the module
    docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._params: dict[tuple[BlockRule, str], torch.Tensor] = {}  # the block rules' float64 constants
        self._constants: dict[str, torch.Tensor] = {}  # log2's, per device

    def _round(self, engine: TableEngineLike, flat: torch.Tensor, source: np.ndarray, name: str,
               out: torch.Tensor | None = None, scratch: bool = False) -> torch.Tensor:
        if flat.dtype != torch.float32 or flat.numel() == 0:
            return super()._round(engine, flat, source, name, out, scratch)
        m = engine.lut(np.float32)
        (first, cut, entries, table, first_out), searched = self._arrays(engine, source, name, flat.device)
        flat = flat.contiguous()
        n = flat.numel()
        dtype = torch.int64 if searched else (table if m.form == lut.TWO_LEVEL else first_out).dtype
        if searched or out is None or out.dtype != dtype:
            result = torch.empty(n, dtype=dtype, device=flat.device)
        else:
            result = out
        _lookup_kernel[(triton.cdiv(n, BLOCK),)](flat, result, first, cut, entries, table, first_out, n,
                                                FORM=m.form, LOW_BITS=m.low_bits, WRITE_INDEX=searched, BLOCK=BLOCK)
        if searched:  # some sub-buckets straddle a threshold (negative indices): the reference's search settles them
            idx = torch.where(result < 0, _intervals(engine.table, flat.to(torch.float64)), result)
            result = torch.index_select(table, 0, idx, out=out if out is not None and out.dtype == table.dtype
                                        else None)
        return result

    def block(self, engine: TableEngineLike, x: torch.Tensor, size: int, rule: BlockRule, want_codes: bool,
              given: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if x.dtype != torch.float32 or size <= 0 or rule.name not in blockwise.RULES:
            return None
        m = engine.lut(np.float32)
        if want_codes:
            source, name = engine.codes, "code"
        else:  # values less the zero point, as the kernel subtracts it in float32, then times the scale
            zp = np.float32(rule.zero_point)
            source, name = engine.table.float32_values - zp, f"float32 - {zp}"
        (first, cut, entries, table, first_out), searched = self._arrays(engine, source, name, x.device)
        if size > MAX_BLOCK or searched or x.numel() == 0:  # (a search per element has no place in a block kernel)
            return super().block(engine, x, size, rule, want_codes, given)
        flat = x.detach().contiguous().view(-1)
        n = flat.numel()
        nblocks = triton.cdiv(n, size)
        cols = triton.next_power_of_2(size)
        rows = max(1, TILE // cols)
        grid = (triton.cdiv(nblocks, rows),)
        scales = given.float().contiguous() if rule.name == "given" else torch.empty(nblocks, device=x.device)
        out = torch.empty(n, dtype=(first_out if m.form != lut.TWO_LEVEL else table).dtype, device=x.device)
        nan = torch.empty(grid[0], dtype=torch.int32, device=x.device)
        top_exp = math.frexp(rule.qmax * rule.unit)[1]
        _block_kernel[grid](flat, out, scales, nan, self._rule_params(rule, x.device), first, cut, entries, table,
                            first_out, n, nblocks, size, rule.emax, top_exp, RULE=blockwise.RULES[rule.name],
                            FORM=m.form, LOW_BITS=m.low_bits, CLIP=rule.clip, ZERO_POINT=rule.zero_point != 0,
                            SCALE_OUT=not want_codes, ROWS=rows, COLS=cols)
        return out, scales, nan.sum()

    def _arrays(self, engine: TableEngineLike, source: np.ndarray, name: str, device: torch.device
                ) -> tuple[tuple[torch.Tensor, ...], bool]:
        """The float32 lookup arrays the kernels read (first, cut, entries, table, first_out), those the engine's
        form does not read replaced by one it does (the interpreter copies arguments by storage address, which
        unused arrays, empty or views of one buffer, may share), and whether any two-level sub-bucket needs the
        search."""
        arrays, searched = self._device_arrays(engine, np.dtype(np.float32), source, name, device)
        first, cut, entries, _, _, _, _, table, first_out = arrays
        form = engine.lut(np.float32).form
        if form == lut.DIRECT:
            return (first_out,) * 5, searched
        if form == lut.CUT:
            return (first_out, cut, first_out, first_out, first_out), searched
        return (first, first, entries, table, first), searched

    def log2_hist_centres(self, rows: torch.Tensor, bins: int) -> torch.Tensor:
        rows = rows.detach()
        rows = (rows if rows.dtype in (torch.float32, torch.float64) else rows.float()).contiguous()
        lo, width, empty = log2hist.torch_log2_hist_range(rows, bins)
        slots = triton.next_power_of_2(bins + 1)
        counts = torch.zeros(rows.shape[0], slots, dtype=torch.int32, device=rows.device)
        if rows.numel():
            chunk = HIST_CHUNK
            while triton.cdiv(rows.shape[1], chunk) > 65535:  # (CUDA's limit on the grid's second dimension)
                chunk *= 2
            grid = (rows.shape[0], triton.cdiv(rows.shape[1], chunk))
            _log2_hist_kernel[grid](rows, lo, width, counts, self._log2_constants(rows.device), rows.shape[1],
                                    BINS=bins, SLOTS=slots, CHUNK=chunk, enable_fp_fusion=False)
        return log2hist.torch_log2_hist_pick(counts[:, :bins], lo, width, empty)

    def log2(self, a: torch.Tensor) -> torch.Tensor:
        """:func:`dtypelab.kernels.log2hist.log2` of every element of float64 ``a`` (finite, > 0), by Triton."""
        a = a.contiguous()
        out = torch.empty_like(a)
        _log2_kernel[(triton.cdiv(a.numel(), BLOCK),)](a, out, self._log2_constants(a.device), a.numel(),
                                                       BLOCK=BLOCK, enable_fp_fusion=False)
        return out

    def _log2_constants(self, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in self._constants:
            self._constants[key] = torch.tensor(log2hist.LOG2_CONSTANTS, dtype=torch.float64, device=device)
        return self._constants[key]

    def _rule_params(self, rule: BlockRule, device: torch.device) -> torch.Tensor:
        """The float64 constants of ``rule`` on ``device`` (kernel arguments would be float32): max, unit,
        MX-EVEN's mantissa limit, MX-RCEIL's mantissa of ``max * unit``, and float32 max and zero point."""
        key = (rule, str(device))
        if key not in self._params:
            values = [rule.qmax, rule.unit, 1.0 - 2.0 ** -(rule.mbits + 2), math.frexp(rule.qmax * rule.unit)[0],
                      np.float32(rule.qmax), np.float32(rule.zero_point)]
            self._params[key] = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        return self._params[key]


BACKEND: Backend = TritonBackend() if triton is not None else REFERENCE

__all__ = ["BACKEND", "TritonBackend"]

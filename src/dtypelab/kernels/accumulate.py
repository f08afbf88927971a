"""A matrix product summed a chunk of products at a time into a running sum rounded onto a float grid after each
add, in one numba kernel over tiles of the output (the simulated format accumulators of
:mod:`dtypelab.arith.compute`).

Each tile's running sum and chunk sum stay in a core's cache: BLAS (``dgemm``/``sgemm`` of the MKL torch carries,
or SciPy's; called from the kernel's threads, each held to one BLAS thread) writes a chunk's sums into the tile's
buffer and the kernel adds them to the running sum and rounds, chunk after chunk; no chunk sum goes through
memory. The first operand is read where it lies, float32 or float64, any strides: each thread copies a block of
its rows into the sums' dtype and works through that block's tiles (no float64 copy of a layer's activations).
The rounding is to a :class:`FloatGrid`: round to nearest, ties to even, onto ``precision`` significant bits with
a smallest step of ``2^min_exp`` (subnormals); past ``max`` a saturating format returns ``±max``, IEEE fp32
returns ``±inf`` (a float32 cast). NaN and infinities pass through.

Example:
    >>> import torch
    >>> bf16 = FloatGrid(8, -133, 3.3895313892515355e+38, True)
    >>> a = torch.tensor([[1.0, 2.0**-8, 2.0**-8, 2.0**-8]], dtype=torch.float64)
    >>> accumulate_matmul(a[None], torch.ones(1, 4, 1, dtype=torch.float64), 1, bf16).item()  # each add lost
    1.0
    >>> accumulate_matmul(a[None], torch.ones(1, 4, 1, dtype=torch.float64), 4, bf16).item()  # one add of 4
    1.015625
"""

from __future__ import annotations

import ctypes
import math
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import get_cython_function_address, intrinsic
from threadpoolctl import ThreadpoolController

_MAG = np.int64(0x7FFFFFFFFFFFFFFF)
_INF = np.int64(0x7FF0000000000000)
GEMM_WORK = 1 << 20  # multiply-adds per BLAS call at most, where the tiles allow
MAX_TILE = 1 << 15  # outputs a tile has at most (its running sum and chunk sum stay in a core's L2 cache)
MIN_TILE = 16  # rows and columns a tile has at least (long chunks make the tiles smaller)
_ONE_CALL = threading.Lock()  # one kernel at a time sets BLAS's thread count and puts it back


@dataclass(frozen=True)
class FloatGrid:
    """A float format's grid for round to nearest even: ``precision`` (>= 2) bits, steps down to ``2^min_exp``,
    largest finite ``max``; ``saturate``: overflow gives ``±max`` (else ``±inf``)."""

    precision: int
    min_exp: int
    max: float
    saturate: bool

    def kernel_args(self) -> tuple[int, int, np.int64, np.int64]:
        """``precision``, ``min_exp`` and the bits of ``max`` and of the overflow result, as the kernels take them."""
        over = self.max if self.saturate else np.inf
        return self.precision, self.min_exp, np.float64(self.max).view(np.int64), np.float64(over).view(np.int64)


FP32 = FloatGrid(24, -149, float(np.finfo(np.float32).max), saturate=False)  # IEEE single: a float32 cast


@njit(cache=True, nogil=True)
def grid_constants(precision: int, min_exp: int) -> tuple[int, np.int64, np.int64, np.int64, float]:
    """What rounding onto the grid needs: the bits cut from a float64 significand, the mask that keeps the rest,
    half a step less one, the smallest normal's bits, and ``2^(min_exp+52)`` (``|x| + magic - magic`` rounds
    ``|x|`` below it onto steps of ``2^min_exp``)."""
    shift = 53 - precision
    return (shift, ~((np.int64(1) << shift) - 1), (np.int64(1) << (shift - 1)) - 1,
            np.int64(min_exp + precision - 1 + 1023) << 52, np.ldexp(1.0, min_exp + 52))


@njit(cache=True, nogil=True, inline="always")
def round_to_grid(x: float, fp32: bool, grid: bool, constants: tuple, max_bits: np.int64,
                  over_bits: np.int64) -> float:
    """``x`` rounded to float32 if ``fp32``, then onto the grid if ``grid`` (and back to float32 if ``fp32``),
    without branches (the compiler vectorises loops of it)."""
    if fp32:
        x = np.float64(np.float32(x))
    if grid:
        shift, keep, half_m1, normal, magic = constants
        bits = np.float64(x).view(np.int64)
        mag = bits & _MAG
        near = (mag + half_m1 + ((mag >> shift) & 1)) & keep  # ties to even: add half - 1 and the last bit, cut
        sub = np.float64((abs(x) + magic) - magic).view(np.int64)  # below the smallest normal
        r = near if mag >= normal else sub
        r = over_bits if r > max_bits else r
        r = mag if mag >= _INF else r  # inf, NaN
        y = np.int64((bits & ~_MAG) | r).view(np.float64)
        x = np.float64(np.float32(y)) if fp32 else y
    return x


@intrinsic
def _call_gemm(typingctx, fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Call the Fortran-style ``?gemm`` at address ``fn`` with 13 pointer arguments (given as integers)."""
    sig = types.void(fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        ptr = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [ptr] * 13)
        callee = builder.inttoptr(args[0], fnty.as_pointer())
        builder.call(callee, [builder.inttoptr(x, ptr) for x in args[1:]])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _call_int(typingctx, fn, value):
    """``int f(int)`` at address ``fn`` (a BLAS's per-thread thread count setter): its result."""
    sig = types.int32(fn, types.int32)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32)])
        return builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [args[1]])

    return sig, codegen


@njit(cache=True, nogil=True, boundscheck=False)
def _tile(gemm: int, s: np.ndarray, rows_a: np.ndarray, b: np.ndarray, bias: np.ndarray, has_bias: bool, i: int,
          r0: int, c0: int, tr: int, tc: int, chunk: int, piece: int, precision: int, min_exp: int,
          max_bits: np.int64, over_bits: np.int64, fp32: bool, grid: bool, bias_fp32: bool) -> None:
    """``s[i, r0:r0+tr, c0:c0+tc]``: the running sum chunk by chunk (each chunk's sum by BLAS, a piece at a
    time, of ``rows_a``, the rows ``r0:r0+tr`` of ``a[i]`` row-major, and ``b[i]``; chunks of one product: the
    product in the loop), rounded after every add, then the bias."""
    k, n = b.shape[1], b.shape[2]
    size = b.itemsize
    acc = np.zeros(tr * tc, dtype=b.dtype)  # the running sum, row-major [tr, tc]; float32 adds in float32
    part = np.empty(tr * tc, dtype=b.dtype)  # a chunk's sum: column-major [tc, tr] to BLAS
    flags = np.full(2, ord("N"), dtype=np.uint8)
    dims = np.empty(6, dtype=np.int32)  # m, n, k, lda, ldb, ldc (column-major)
    dims[0], dims[1], dims[3], dims[4], dims[5] = tc, tr, n, k, tc
    alpha_beta = np.ones(3, dtype=b.dtype)  # alpha; beta of a chunk's first piece (0), of the others (1)
    alpha_beta[1] = 0
    constants = grid_constants(precision, min_exp)
    b_col = b.ctypes.data + (i * k * n + c0) * size
    if chunk == 1:  # a rounding after every product: the products in the loop, one pass each, no BLAS
        for g in range(k):
            b_row = b[i, g, c0:c0 + tc]
            for r in range(tr):
                av, row = rows_a[r * k + g], r * tc
                for c in range(tc):
                    acc[row + c] = round_to_grid(np.float64(acc[row + c] + av * b_row[c]), fp32, grid, constants,
                                                 max_bits, over_bits)
    else:
        for k0 in range(0, k, chunk):
            for p0 in range(k0, min(k0 + chunk, k), piece):
                dims[2] = min(piece, k0 + chunk - p0, k - p0)
                beta = alpha_beta.ctypes.data + (size if p0 == k0 else 2 * size)
                # part^T (+)= b[p0:, c0:]^T a[r0:, p0:]^T, all three column-major to BLAS
                _call_gemm(gemm, flags.ctypes.data, flags.ctypes.data + 1, dims.ctypes.data, dims.ctypes.data + 4,
                           dims.ctypes.data + 8, alpha_beta.ctypes.data, b_col + p0 * n * size, dims.ctypes.data + 12,
                           rows_a.ctypes.data + p0 * size, dims.ctypes.data + 16, beta, part.ctypes.data,
                           dims.ctypes.data + 20)
            for j in range(tr * tc):
                acc[j] = round_to_grid(np.float64(acc[j] + part[j]), fp32, grid, constants, max_bits, over_bits)
    for r in range(tr):
        for c in range(tc):
            x = acc[r * tc + c]
            if has_bias:
                x = round_to_grid(x + bias[i, r0 + r, c0 + c], bias_fp32, not bias_fp32, constants, max_bits,
                                  over_bits)
            s[i, r0 + r, c0 + c] = x


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _accumulate_matmul(gemm: int, one_thread: int, s: np.ndarray, a: np.ndarray, b: np.ndarray, bias: np.ndarray,
                       has_bias: bool, chunk: int, piece: int, rows: int, cols: int, precision: int, min_exp: int,
                       max_bits: np.int64, over_bits: np.int64, fp32: bool, grid: bool, bias_fp32: bool) -> None:
    """Each task: ``rows`` rows of ``a[i]`` copied into ``b``'s dtype (row-major, so ``a`` may have any strides
    and be float32), then their tiles, ``cols`` columns at a time. ``one_thread``: the BLAS's per-thread
    thread count setter, or 0."""
    bt, m, k = a.shape
    n = b.shape[2]
    n_rows = (m + rows - 1) // rows
    for t in prange(bt * n_rows):
        i, r0 = t // n_rows, (t % n_rows) * rows
        tr = min(rows, m - r0)
        rows_a = np.empty(tr * k, dtype=b.dtype)
        for r in range(tr):
            for j in range(k):
                rows_a[r * k + j] = a[i, r0 + r, j]
        before = _call_int(one_thread, np.int32(1)) if one_thread else np.int32(0)
        for c0 in range(0, n, cols):
            _tile(gemm, s, rows_a, b, bias, has_bias, i, r0, c0, tr, min(cols, n - c0), chunk, piece, precision,
                  min_exp, max_bits, over_bits, fp32, grid, bias_fp32)
        if one_thread:
            _call_int(one_thread, before)


@dataclass(frozen=True)
class Blas:
    """Where the kernel's BLAS calls go: the addresses of ``dgemm`` and ``sgemm`` (Fortran interface), and of
    ``int set(int)`` that sets the calling thread's BLAS threads (0 where there is none: the library is held to
    one thread around the kernel instead, through threadpoolctl)."""

    name: str
    dgemm: int
    sgemm: int
    one_thread: int = 0

    def gemm(self, dtype: torch.dtype) -> int:
        return {torch.float64: self.dgemm, torch.float32: self.sgemm}[dtype]


@cache
def torch_blas() -> Blas | None:
    """The BLAS torch's own library carries and exports (MKL in the x86-64 Linux wheels), or None."""
    for path in sorted((Path(torch.__file__).parent / "lib").glob("*torch_cpu.*")):
        try:
            lib = ctypes.CDLL(str(path))
            return Blas("torch's MKL", *(ctypes.cast(getattr(lib, f), ctypes.c_void_p).value
                                        for f in ("dgemm_", "sgemm_", "MKL_Set_Num_Threads_Local")))
        except (OSError, AttributeError):
            continue
    return None


@cache
def scipy_blas() -> Blas:
    """SciPy's BLAS (``scipy.linalg.cython_blas``)."""
    return Blas("SciPy", *(get_cython_function_address("scipy.linalg.cython_blas", f) for f in ("dgemm", "sgemm")))


def blas() -> Blas:
    """Torch's MKL where it is exported (about 5-8 % faster on the MiniLM benchmark here), else SciPy's."""
    return torch_blas() or scipy_blas()


@cache
def _blas_threads() -> ThreadpoolController:
    """The BLAS libraries loaded (SciPy's among them), to run on one thread while the kernel's own threads call them."""
    scipy_blas()  # loads SciPy's BLAS
    return ThreadpoolController().select(user_api="blas")


def tiles(chunk: int, m: int, n: int) -> tuple[int, int, int]:
    """Rows and columns of the output tiles, and the products per BLAS call (a chunk, or a piece of a long one),
    for chunks ``chunk`` long: at most :data:`GEMM_WORK` multiply-adds per call and :data:`MAX_TILE` outputs per
    tile, tiles wide rather than tall, at least ``MIN_TILE`` rows and columns (less where the output has less).

    >>> tiles(32, 2592, 1536), tiles(1, 2592, 1536), tiles(1536, 2592, 384)
    ((128, 256, 32), (128, 256, 1), (21, 32, 1536))
    """
    area = max(MIN_TILE * MIN_TILE, min(MAX_TILE, GEMM_WORK // chunk))
    cols = min(n, max(MIN_TILE, 1 << (int(area**0.5) * 2).bit_length() - 1))
    rows = min(m, max(MIN_TILE, area // cols))
    return rows, cols, max(1, min(chunk, GEMM_WORK // (rows * cols)))


def accumulate_matmul(a: torch.Tensor, b: torch.Tensor, chunk: int, grid: FloatGrid,
                      bias: torch.Tensor | None = None, dtype: torch.dtype = torch.float64,
                      sums: torch.dtype = torch.float64) -> torch.Tensor:
    """``a @ b`` (``[Bt, M, K] @ [Bt, K, N]`` on the CPU, any strides) summed ``chunk`` products at a time into a
    running sum rounded onto ``grid`` after every add, then ``round(s + bias)`` in float64 (``bias`` broadcastable
    to ``[Bt, M, N]``); ``[Bt, M, N]`` in ``dtype`` (float64, or float32: the sums cast as they are written).
    ``sums``: float64, or float32 (chunk sums and adds in float32, as a float32 register would). Float32 and
    float64 ``a`` is read where it lies (the kernel copies its rows); ``b`` is copied row-major in ``sums``."""
    if sums not in (torch.float32, torch.float64):
        raise ValueError(f"accumulate_matmul: sums must be torch.float32 or torch.float64, got {sums}")
    bt, m, k = a.shape
    n = b.shape[-1]
    a = a if a.dtype in (torch.float32, torch.float64) else a.to(sums)
    b = b.to(sums, memory_format=torch.contiguous_format).contiguous()  # .to keeps a view of the same dtype
    s = torch.empty(bt, m, n, dtype=dtype)
    if s.numel() == 0:
        return s
    chunk = min(chunk, k)
    rows, cols, piece = tiles(chunk, m, n)
    if bt == 1:  # a layer's rows: cut into a multiple of the thread count of blocks, so each thread gets as many
        blocks = numba.get_num_threads() * math.ceil(m / (rows * numba.get_num_threads()))
        rows = math.ceil(m / blocks)
    fp32 = sums == torch.float64 and grid == FP32  # a float32 running sum rounds itself
    bias3 = torch.zeros(1, 1, 1, dtype=torch.float64) if bias is None else \
        bias.to(torch.float64).expand(bt, m, n)
    lib = blas()
    with _ONE_CALL, nullcontext() if lib.one_thread else _blas_threads().limit(limits=1):
        _accumulate_matmul(lib.gemm(sums), lib.one_thread, s.numpy(), a.numpy(), b.numpy(), bias3.numpy(),
                           bias is not None, chunk, piece, rows, cols, *grid.kernel_args(), fp32, grid != FP32,
                           grid == FP32)
    return s


__all__ = ["FP32", "Blas", "FloatGrid", "accumulate_matmul", "blas", "grid_constants", "round_to_grid", "tiles"]

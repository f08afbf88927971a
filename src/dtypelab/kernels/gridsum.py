"""Dot products whose every product is cut onto a grid before an exact sum, in numba loops over tiles of outputs
that never materialise the products (the ``align:k`` tensor-core model and the fixed-point register of
:mod:`dtypelab.arith.compute`, for exact products on the CPU).

* :func:`align_matmul`: the products of a group (and the running tensor-core sum) aligned to the largest exponent
  among them and cut to ``k`` bits below it, summed exactly; every chunk the tensor-core sum is added into the
  promotion format's running sum and rounded onto its grid.
* :func:`fixed_matmul`: each product cut onto the grid ``2^-frac`` and summed exactly in a fixed-point register;
  the overflow policy applies to the running sum after every chunk and after the bias.

``cut``: truncation (``rz``) or rounding to nearest even (``rne``). Both are the torch loops of
:mod:`dtypelab.arith.compute` bit for bit, one tile of outputs at a time.

Example:
    >>> import torch
    >>> from dtypelab.kernels.accumulate import FP32
    >>> a = torch.tensor([[[1.0, 2.0**-14, 2.0**-14]]], dtype=torch.float64)
    >>> b = torch.ones(1, 3, 1, dtype=torch.float64)
    >>> align_matmul(a, b, k=13, rne=False, chunk=3, group=3, promote=FP32).item()  # 2^-14 is below 13 bits
    1.0
    >>> n, low, high = fixed_matmul(a, b, (-2.0**31, 2.0**31 - 1), frac=14, rne=False, chunk=3, overflow="error")
    >>> n.item(), low, high  # units of 2^-14
    (16386.0, 16386.0, 16386.0)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange

from dtypelab.kernels.accumulate import FP32, FloatGrid, grid_constants, round_to_grid

TILE_ROWS, TILE_COLUMNS = 8, 128  # a tile's outputs: its rows share each row of b, read from L1 (sizes measured)
OVERFLOW_CODES = {"saturate": 1, "wrap": 2}  # any other policy: none in the kernel


@njit(cache=True, nogil=True, inline="always")
def _cut(x: float, rne: bool) -> float:
    return np.rint(x) if rne else np.trunc(x)


@njit(cache=True, nogil=True, inline="always")
def _nan_max(top: float, x: float) -> float:
    """``max(top, x)``, NaN if either is (as ``torch.maximum`` / ``amax``)."""
    return x if (x > top or x != x) else top


@njit(cache=True, nogil=True, inline="always")
def _tile_count(a: np.ndarray, b: np.ndarray, rows: int, columns: int) -> int:
    """Tiles of ``rows`` x ``columns`` outputs in ``a @ b`` (``[Bt, M, K] @ [Bt, K, N]``)."""
    return a.shape[0] * -(-a.shape[1] // rows) * -(-b.shape[2] // columns)


@njit(cache=True, nogil=True, inline="always")
def _tile_at(t: int, a: np.ndarray, b: np.ndarray, rows: int, columns: int) -> tuple[int, int, int, int, int]:
    """Tile ``t``'s batch, first row, rows, first column and columns (row-major over each batch's tiles)."""
    m, n = a.shape[1], b.shape[2]
    n_rows, n_cols = -(-m // rows), -(-n // columns)
    i, rest = t // (n_rows * n_cols), t % (n_rows * n_cols)
    r0, c0 = (rest // n_cols) * rows, (rest % n_cols) * columns
    return i, r0, min(rows, m - r0), c0, min(columns, n - c0)


@njit(cache=True, nogil=True, inline="always")
def _inverse_step(top: float, k_bits: int) -> float:
    """``2^(k_bits - e)``, ``e`` the exponent of ``frexp(top)`` (1 / the grid's step below ``top``): from the bits
    where ``top`` is normal and the result too, else through ``frexp`` and ``ldexp``."""
    field = (np.float64(top).view(np.int64) >> 52) & 0x7FF
    biased = k_bits - (field - 1022) + 1023
    if 0 < field < 0x7FF and 0 < biased < 0x7FF:
        return np.int64(biased << 52).view(np.float64)
    return math.ldexp(1.0, k_bits - math.frexp(top)[1])


@njit(cache=True, nogil=True, boundscheck=False)
def _align_tile(s: np.ndarray, a: np.ndarray, b: np.ndarray, i: int, r0: int, tr: int, c0: int, tc: int,
                k_bits: int, rne: bool, chunk: int, group: int, fp32: bool, grid: bool, constants: tuple,
                max_bits: np.int64, over_bits: np.int64) -> None:
    """``s[i, r0:r0+tr, c0:c0+tc]``, group by group: the group's largest product per output, then its products
    (computed again: the group's rows of ``b`` stay in L1 for all ``tr`` rows) cut and summed."""
    k = a.shape[2]
    size = tr * tc  # per output, row-major [tr, tc]:
    acc = np.zeros(size)  # the promoted running sum
    carry = np.zeros(size)  # the tensor-core sum of the chunk so far
    top = np.empty(size)
    inv = np.empty(size)
    q = np.empty(size)
    for k0 in range(0, k, chunk):
        for g0 in range(k0, min(k0 + chunk, k), group):
            g1 = min(g0 + group, k0 + chunk, k)
            first = g0 == k0
            for j in range(size):
                top[j] = 0.0 if first else abs(carry[j])
            for g in range(g0, g1):
                b_row = b[i, g, c0:c0 + tc]
                for r in range(tr):
                    av, row = a[i, r0 + r, g], r * tc
                    for c in range(tc):
                        top[row + c] = _nan_max(top[row + c], abs(av * b_row[c]))
            for j in range(size):
                inv[j] = _inverse_step(top[j], k_bits)
                q[j] = 0.0 if first else _cut(carry[j] * inv[j], rne)
            for g in range(g0, g1):
                b_row = b[i, g, c0:c0 + tc]
                for r in range(tr):
                    av, row = a[i, r0 + r, g], r * tc
                    for c in range(tc):  # integers below 2^k each: the sum is exact
                        q[row + c] += _cut(av * b_row[c] * inv[row + c], rne)
            for j in range(size):
                carry[j] = q[j] / inv[j]
        for j in range(size):
            x = carry[j] if k0 == 0 else acc[j] + carry[j]
            acc[j] = round_to_grid(x, fp32, grid, constants, max_bits, over_bits)
    for r in range(tr):
        for c in range(tc):
            s[i, r0 + r, c0 + c] = acc[r * tc + c]


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _align(s: np.ndarray, a: np.ndarray, b: np.ndarray, k_bits: int, rne: bool, chunk: int, group: int,
           rows: int, columns: int, fp32: bool, grid: bool, precision: int, min_exp: int, max_bits: np.int64,
           over_bits: np.int64) -> None:
    constants = grid_constants(precision, min_exp)
    for t in prange(_tile_count(a, b, rows, columns)):
        i, r0, tr, c0, tc = _tile_at(t, a, b, rows, columns)
        _align_tile(s, a, b, i, r0, tr, c0, tc, k_bits, rne, chunk, group, fp32, grid, constants, max_bits,
                    over_bits)


def align_matmul(a: torch.Tensor, b: torch.Tensor, k: int, rne: bool, chunk: int, group: int,
                 promote: FloatGrid) -> torch.Tensor:
    """``a @ b`` (float64 ``[Bt, M, K] @ [Bt, K, N]`` on the CPU) as the ``align:k`` tensor-core model sums it:
    per ``group`` of products (and the running tensor-core sum) aligned to their largest exponent and cut to
    ``k`` bits below it; every ``chunk`` added into a running sum rounded onto ``promote``. Float64 ``[Bt, M,
    N]``."""
    a, b = a.contiguous(), b.contiguous()
    s = torch.empty(a.shape[0], a.shape[1], b.shape[2], dtype=torch.float64)
    if s.numel():
        _align(s.numpy(), a.numpy(), b.numpy(), k, rne, chunk, min(group, chunk), TILE_ROWS, TILE_COLUMNS,
               promote == FP32, promote != FP32, *promote.kernel_args())
    return s


@njit(cache=True, nogil=True, boundscheck=False)
def _fixed_tile(n_out: np.ndarray, reached: np.ndarray, a: np.ndarray, b: np.ndarray, i: int, r0: int, tr: int,
                c0: int, tc: int, scale: float, rne: bool, chunk: int, lo: float, hi: float, policy: int) -> None:
    """The registers of a tile: chunk sums of cut products, the policy after every chunk; ``reached`` gets the
    tile's least and greatest running sums (for the error message)."""
    k = a.shape[2]
    size = tr * tc  # per output, row-major [tr, tc]
    acc = np.zeros(size)
    part = np.empty(size)
    low, high = np.inf, -np.inf
    span = hi - lo + 1
    for k0 in range(0, k, chunk):
        part[:] = 0.0
        for g in range(k0, min(k0 + chunk, k)):
            b_row = b[i, g, c0:c0 + tc]
            for r in range(tr):
                av, row = a[i, r0 + r, g], r * tc
                for c in range(tc):
                    part[row + c] += _cut(av * b_row[c] * scale, rne)
        for j in range(size):
            x = part[j] if k0 == 0 else acc[j] + part[j]
            low, high = min(low, x), max(high, x)
            if policy == 1:
                x = min(max(x, lo), hi)
            elif policy == 2:
                x = (x - lo) % span + lo
            acc[j] = x
    for r in range(tr):
        for c in range(tc):
            n_out[i, r0 + r, c0 + c] = acc[r * tc + c]
    reached[0], reached[1] = low, high


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _fixed(n_out: np.ndarray, reached: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float, rne: bool,
           chunk: int, rows: int, columns: int, lo: float, hi: float, policy: int) -> None:
    for t in prange(_tile_count(a, b, rows, columns)):
        i, r0, tr, c0, tc = _tile_at(t, a, b, rows, columns)
        _fixed_tile(n_out, reached[t], a, b, i, r0, tr, c0, tc, scale, rne, chunk, lo, hi, policy)


def fixed_matmul(a: torch.Tensor, b: torch.Tensor, bounds: tuple[float, float], frac: int, rne: bool, chunk: int,
                 overflow: str) -> tuple[torch.Tensor, float, float]:
    """The running sums (integers, units of ``2^-frac``) of ``a @ b`` (float64 ``[Bt, M, K] @ [Bt, K, N]`` on the
    CPU) in a register holding the integers ``bounds`` (least, greatest), each product cut onto the grid,
    ``overflow`` (``saturate``, ``wrap``; else none) applied after every ``chunk``: float64 ``[Bt, M, N]``, and the
    least and greatest running sums reached before the policy (for ``error``)."""
    a, b = a.contiguous(), b.contiguous()
    bt, m, n = a.shape[0], a.shape[1], b.shape[2]
    out = torch.zeros(bt, m, n, dtype=torch.float64)
    reached = np.zeros((max(1, _tile_count(a.numpy(), b.numpy(), TILE_ROWS, TILE_COLUMNS)), 2))
    if out.numel():
        _fixed(out.numpy(), reached, a.numpy(), b.numpy(), 2.0**frac, rne, chunk, TILE_ROWS, TILE_COLUMNS,
               *bounds, OVERFLOW_CODES.get(overflow, 0))
    return out, float(reached[:, 0].min()), float(reached[:, 1].max())


__all__ = ["align_matmul", "fixed_matmul", "TILE_ROWS", "TILE_COLUMNS"]

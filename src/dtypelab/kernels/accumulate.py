"""A running sum through a series of chunk sums, rounded onto a float grid after each add, in one numba pass (the
simulated format accumulators of :mod:`dtypelab.arith.compute`).

The rounding is to a :class:`FloatGrid`: round to nearest, ties to even, onto ``precision`` significant bits with
a smallest step of ``2^min_exp`` (subnormals); past ``max`` a saturating format returns ``±max``, IEEE fp32
returns ``±inf`` (a float32 cast). NaN and infinities pass through.

Example:
    >>> import torch
    >>> bf16 = FloatGrid(8, -133, 3.3895313892515355e+38, True)
    >>> s = torch.zeros(4, dtype=torch.float64)
    >>> accumulate_(s, torch.tensor([[1 + 2.0**-8, 1 + 3 * 2.0**-8, 2.0**-134, 1e39]], dtype=torch.float64),
    ...             bf16).tolist()
    [1.0, 1.015625, 0.0, 3.3895313892515355e+38]
    >>> s = torch.ones(1, dtype=torch.float64)
    >>> accumulate_(s, torch.full((3, 1), 2.0**-8, dtype=torch.float64), bf16).item()   # each add is lost
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange

_MAG = np.int64(0x7FFFFFFFFFFFFFFF)
_INF = np.int64(0x7FF0000000000000)
_TILE = 1024  # elements of the running sum kept in cache while the chunk sums stream past


@dataclass(frozen=True)
class FloatGrid:
    """A float format's grid for round to nearest even: ``precision`` (>= 2) bits, steps down to ``2^min_exp``,
    largest finite ``max``; ``saturate``: overflow gives ``±max`` (else ``±inf``)."""

    precision: int
    min_exp: int
    max: float
    saturate: bool


FP32 = FloatGrid(24, -149, float(np.finfo(np.float32).max), saturate=False)  # IEEE single: a float32 cast


@njit(cache=True, nogil=True, boundscheck=False)
def _add_round(s: np.ndarray, p: np.ndarray, precision: int, min_exp: int, max_bits: np.int64,
               over_bits: np.int64, fp32: bool, grid: bool) -> None:
    """``s[i] = round(s[i] + p[i])`` without branches (the compiler vectorises it): the add rounded to float32 if
    ``fp32``, then onto the grid if ``grid`` (and back to float32 if ``fp32``)."""
    shift = 53 - precision
    keep = ~((np.int64(1) << shift) - 1)
    half_m1 = (np.int64(1) << (shift - 1)) - 1
    normal = np.int64(min_exp + precision - 1 + 1023) << 52  # the grid's smallest normal
    magic = np.ldexp(1.0, min_exp + 52)  # |x| + magic - magic: |x| below 2^(min_exp+52) on steps of 2^min_exp
    for i in range(s.size):
        x = np.float64(np.float32(s[i] + p[i])) if fp32 else s[i] + p[i]
        if grid:
            bits = np.float64(x).view(np.int64)
            mag = bits & _MAG
            near = (mag + half_m1 + ((mag >> shift) & 1)) & keep  # ties to even: add half - 1 and the last bit, cut
            sub = np.float64((abs(x) + magic) - magic).view(np.int64)  # below the smallest normal
            r = near if mag >= normal else sub
            r = over_bits if r > max_bits else r
            r = mag if mag >= _INF else r  # inf, NaN
            y = np.int64((bits & ~_MAG) | r).view(np.float64)
            x = np.float64(np.float32(y)) if fp32 else y
        s[i] = x


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _accumulate(s: np.ndarray, parts: np.ndarray, precision: int, min_exp: int, max_bits: np.int64,
                over_bits: np.int64, fp32: bool, grid: bool) -> None:
    n = s.size
    for t in prange((n + _TILE - 1) // _TILE):
        lo, hi = t * _TILE, min(t * _TILE + _TILE, n)
        for c in range(parts.shape[0]):
            _add_round(s[lo:hi], parts[c, lo:hi], precision, min_exp, max_bits, over_bits, fp32, grid)


def accumulate_(s: torch.Tensor, parts: torch.Tensor, grid: FloatGrid) -> torch.Tensor:
    """Contiguous float64 ``s`` on the CPU set in place (and returned) to ``s = round(s + parts[c])`` for each
    ``c`` in order, rounded onto ``grid``. Contiguous ``parts`` ``[C, *s.shape]`` is float64, or float32: then
    each add is rounded to float32 first and the running sum kept in float32, as a float32 register would."""
    over = grid.max if grid.saturate else np.inf
    fp32 = parts.dtype == torch.float32 or grid == FP32
    _accumulate(s.view(-1).numpy(), parts.view(parts.shape[0], -1).numpy(), grid.precision, grid.min_exp,
                np.float64(grid.max).view(np.int64), np.float64(over).view(np.int64), fp32, grid != FP32)
    return s


__all__ = ["FP32", "FloatGrid", "accumulate_"]

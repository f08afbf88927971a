"""Rounding a running sum in place onto a float grid, in one numba pass (the simulated format accumulators of
:mod:`dtypelab.arith.compute` round their float64 running sum after every chunk of products).

The rounding is to a :class:`FloatGrid`: round to nearest, ties to even, onto ``precision`` significant bits with
a smallest step of ``2^min_exp`` (subnormals); past ``max`` a saturating format returns ``±max``, IEEE fp32
returns ``±inf`` (a float32 cast). NaN and infinities pass through.

Example:
    >>> import torch
    >>> bf16 = FloatGrid(8, -133, 3.3895313892515355e+38, True)
    >>> round_(torch.tensor([1 + 2.0**-8, 1 + 3 * 2.0**-8, 2.0**-134, 1e39], dtype=torch.float64), bf16).tolist()
    [1.0, 1.015625, 0.0, 3.3895313892515355e+38]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange

_MAG = np.int64(0x7FFFFFFFFFFFFFFF)
_INF = np.int64(0x7FF0000000000000)


@dataclass(frozen=True)
class FloatGrid:
    """A float format's grid for round to nearest even: ``precision`` (>= 2) bits, steps down to ``2^min_exp``,
    largest finite ``max``; ``saturate``: overflow gives ``±max`` (else ``±inf``)."""

    precision: int
    min_exp: int
    max: float
    saturate: bool


@njit(inline="always")
def _subnormal(mag: np.int64, precision: int, min_exp: int) -> np.int64:
    """A magnitude below the grid's smallest normal, rounded (a float64 pattern, float64 normal or zero)."""
    if mag == 0:
        return mag
    e = (mag >> 52) - 1023  # |x| in [2^e, 2^(e+1)) (float64 subnormals lie far below any grid here)
    if e < min_exp:  # below the smallest step: 0, or the step (a tie 2^(min_exp-1) goes to 0)
        return (np.int64(min_exp + 1023) << 52) if mag > (np.int64(min_exp - 1 + 1023) << 52) else np.int64(0)
    shift = min_exp - e + 52
    low = mag & ((np.int64(1) << shift) - 1)
    half = np.int64(1) << (shift - 1)
    mag -= low
    odd = shift == 52 or (mag >> shift) & 1  # the last kept bit (at shift 52: the leading one)
    if low > half or (low == half and odd):
        mag += np.int64(1) << shift  # a carry into the exponent is the next binade: still exact
    return mag


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _round_inplace(bits: np.ndarray, precision: int, min_exp: int, max_bits: np.int64, over_bits: np.int64) -> None:
    shift = 53 - precision
    keep = ~((np.int64(1) << shift) - 1)
    half_m1 = (np.int64(1) << (shift - 1)) - 1
    normal = np.int64(min_exp + precision - 1 + 1023) << 52  # the grid's smallest normal
    for i in prange(bits.size):
        x = bits[i]
        mag = x & _MAG
        if mag >= _INF:  # inf, NaN
            continue
        if mag >= normal:  # ties to even: add half - 1 and the last kept bit, cut
            mag = (mag + half_m1 + ((mag >> shift) & 1)) & keep
        else:
            mag = _subnormal(mag, precision, min_exp)
        if mag > max_bits:
            mag = over_bits
        bits[i] = (x & ~_MAG) | mag


def round_(x: torch.Tensor, grid: FloatGrid) -> torch.Tensor:
    """Contiguous float64 ``x`` on the CPU rounded onto ``grid`` in place (and returned)."""
    over = grid.max if grid.saturate else np.inf
    _round_inplace(x.view(-1).numpy().view(np.int64), grid.precision, grid.min_exp,
                   np.float64(grid.max).view(np.int64), np.float64(over).view(np.int64))
    return x


__all__ = ["FloatGrid", "round_"]

"""Stochastic rounding kernels: the toward-zero neighbour from a table lookup, then one random decision.

For an input ``x`` whose toward-zero neighbour is interval ``j`` (looked up in the truncating table of
:func:`dtypelab.kernels.rounding.table_for`) and whose away neighbour is ``j + 1`` (``x > 0``) or ``j - 1``
(``x < 0``), ``delta = (|x| - |p_j|) * 1 / (|p_away| - |p_j|)`` with ``p`` the positions of the intervals (their
values, and the continued grid's next value for an overflow interval; :func:`remainder_tables`). ``x`` goes away iff
``floor(delta * 2^K) + top_K(word) >= 2^K`` (:func:`goes_away`), ``word`` the 64-bit random word of its counter
(:mod:`dtypelab.kernels.random`). Exact inputs, NaN, ±inf and inputs past the last interval never move. ``delta``
is exact where the gap is a power of two (floats, posits, integers); elsewhere it is a float64 product.

The numba kernel (:func:`apply_stochastic`) and the torch reference (:func:`torch_goes_away`, used by
:class:`dtypelab.kernels.backend.TorchBackend`) compute the same bits.

Example:
    >>> bool(goes_away(0.75, np.uint64(0x4 << 60), *decision_constants(2)))  # floor(0.75*4) = 3, top bits 1: 3+1 >= 4
    True
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from dtypelab.kernels.lut import key_and_low, lookup
from dtypelab.kernels.random import mix

TWO64 = 18446744073709551616.0


def decision_constants(k: int) -> tuple[float, float, int, int, int]:
    """The loop constants of :func:`goes_away` for ``k`` compared bits (1..32, or 64).

    One formula serves both: with ``w = hi * 2^32 + lo`` the word and ``D = floor(d * 2^k)``, ``k <= 32`` compares
    ``D + (hi >> (32 - k)) >= 2^k``; ``k = 64`` compares ``D + w >= 2^64`` in two 32-bit halves
    (``D = D_hi * 2^32 + D_lo``, with the carry of the low halves)."""
    if k == 64:
        return 2.0**32, 2.0**32, 0, 1, 1 << 32
    return float(1 << k), 0.0, 32 - k, 0, 1 << k


@njit(inline="always")
def goes_away(d, word, s_hi, s_lo, shift, keep_low, limit):
    """Whether a remainder ``d >= 0`` rounds away given the random ``word`` (constants from
    :func:`decision_constants`; ``d >= 1``, which float64 rounding can give for a gap that is not a power of two,
    always does). No branch: the outcome is random, so a branch would be mispredicted half the time, and the loop
    vectorizes."""
    scaled = d * s_hi
    d_hi = np.int64(scaled)
    d_lo = np.int64((scaled - d_hi) * s_lo)
    hi = np.int64(word >> np.uint64(32))
    lo = np.int64(word & np.uint64(0xFFFFFFFF)) * keep_low
    return (hi >> shift) + d_hi + ((lo + d_lo) >> 32) >= limit


@njit(inline="always")
def _one(v, j, i, base, inverse, results, seed, offset, s_hi, s_lo, shift, keep_low, limit):
    """The result of ``v`` whose toward-zero interval is ``j``: its own, or the away neighbour's."""
    up = np.int64(v > 0)
    d = (abs(v) - base[j]) * inverse[2 * j + up]
    d = d if d > 0 else 0.0  # exact inputs, zeros, NaN and inf (0 * inf) stay
    away = goes_away(d, mix(seed, np.uint64(offset + i)), s_hi, s_lo, shift, keep_low, limit)
    return results[j + (2 * up - 1) * np.int64(away)]


def remainder_tables(positions: np.ndarray, n_total: int) -> tuple[np.ndarray, np.ndarray]:
    """Per interval (all ``n_total``, specials included): ``base[j] = |p_j|``, and ``inverse[2j + up]`` =
    ``1 / (|p_away| - |p_j|)`` toward the previous interval (``up = 0``, for ``x < 0``) or the next (``up = 1``,
    ``x > 0``); 0 where the input cannot move (the ends, specials). Interleaved, so that the kernel picks one with
    an index, not a branch. The inverse of a power-of-two gap is exact, so ``delta`` is too."""
    n = len(positions)
    mag = np.abs(np.asarray(positions, np.float64))
    base, inv_up, inv_down = np.zeros(n_total), np.zeros(n_total), np.zeros(n_total)
    base[:n] = mag
    with np.errstate(divide="ignore"):
        inv_up[: n - 1] = np.where(mag[1:] > mag[:-1], 1.0 / (mag[1:] - mag[:-1]), 0.0)
        inv_down[1:n] = np.where(mag[:-1] > mag[1:], 1.0 / (mag[:-1] - mag[1:]), 0.0)
    inverse = np.stack([inv_down, inv_up], axis=1).reshape(-1)
    inverse[~np.isfinite(inverse)] = 0.0
    return base, inverse


@njit(inline="always")
def _flushed(v, b, flush_below, sign_bit):
    """daz: a zero of its sign for ``0 < |v| < flush_below`` (the value and its bit pattern)."""
    tiny = (v != 0) & (abs(v) < flush_below)
    return (v * 0 if tiny else v), (b & sign_bit if tiny else b)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def apply_stochastic(x, bits, out, form, total_bits, low_bits, first, cut, entries, fb_first, fb_span, thresholds,
                     tie, index_table, index_first, base, inverse, results, seed, offset, flush_below, sign_bit,
                     s_hi, s_lo, shift, keep_low, limit):
    """``out[i]`` = the stochastically rounded ``x[i]`` (``results`` by interval: values or codes), for any Lut
    form; the Lut arrays as :func:`dtypelab.kernels.lut.lookup` takes them, writing interval indices; ``base``
    and ``inverse`` from :func:`remainder_tables`, the last five from :func:`decision_constants`. Returns the
    number of NaN inputs."""
    nans = 0
    for i in prange(x.size):
        v, b = _flushed(x[i], bits[i], flush_below, sign_bit)
        j = lookup(form, v, b, low_bits, total_bits, first, cut, entries, fb_first, fb_span, thresholds, tie,
                   index_table, index_first)
        out[i] = _one(v, j, i, base, inverse, results, seed, offset, s_hi, s_lo, shift, keep_low, limit)
        nans += v != v
    return nans


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def apply_stochastic_direct(x, bits, out, total_bits, low_bits, index_first, base, inverse, results, seed, offset,
                            flush_below, sign_bit, s_hi, s_lo, shift, keep_low, limit):
    """:func:`apply_stochastic` for the direct form (``index_first``: its ``Outputs.first`` of interval indices),
    with no branch in the loop, so that it vectorizes."""
    nans = 0
    for i in prange(x.size):
        v, b = _flushed(x[i], bits[i], flush_below, sign_bit)
        key, low = key_and_low(b, low_bits, total_bits)
        j = index_first[2 * key + (low != 0)]
        out[i] = _one(v, j, i, base, inverse, results, seed, offset, s_hi, s_lo, shift, keep_low, limit)
        nans += v != v
    return nans


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def apply_stochastic_cut(x, bits, out, total_bits, low_bits, index_first, cut, base, inverse, results, seed, offset,
                         flush_below, sign_bit, s_hi, s_lo, shift, keep_low, limit):
    """:func:`apply_stochastic_direct` for the cut form."""
    nans = 0
    for i in prange(x.size):
        v, b = _flushed(x[i], bits[i], flush_below, sign_bit)
        key, low = key_and_low(b, low_bits, total_bits)
        j = index_first[3 * key + (low != 0) + (low >= cut[key])]
        out[i] = _one(v, j, i, base, inverse, results, seed, offset, s_hi, s_lo, shift, keep_low, limit)
        nans += v != v
    return nans


def torch_goes_away(d: torch.Tensor, words: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`goes_away` on tensors (float64 ``d >= 0``, int64 ``words`` holding the uint64 bits)."""
    s_hi, s_lo, shift, keep_low, limit = decision_constants(k)
    scaled = d * s_hi
    d_hi = scaled.long()
    d_lo = ((scaled - d_hi) * s_lo).long()
    hi = (words >> 32) & 0xFFFFFFFF
    lo = (words & 0xFFFFFFFF) * keep_low
    return (hi >> shift) + d_hi + ((lo + d_lo) >> 32) >= limit


__all__ = ["goes_away", "decision_constants", "apply_stochastic", "apply_stochastic_direct", "apply_stochastic_cut",
           "remainder_tables", "torch_goes_away"]

"""Stochastic rounding kernels: the toward-zero neighbour from a table lookup, then one random decision.

For an input ``x`` whose toward-zero neighbour is interval ``j`` (looked up in the truncating table of
:func:`dtypelab.kernels.rounding.table_for`) and whose away neighbour is ``j + 1`` (``x > 0``) or ``j - 1``
(``x < 0``), ``delta = (|x| - |p_j|) * 1 / (|p_away| - |p_j|)`` with ``p`` the positions of the intervals (their
values, and the continued grid's next value for an overflow interval; :func:`remainder_tables`). ``x`` goes away iff
``floor(delta * 2^K) + top_K(word) >= 2^K`` (:func:`goes_away`), ``word`` the 64-bit random word of its counter
(:mod:`dtypelab.kernels.random`). Exact inputs, NaN, ±inf and inputs past the last interval never move. ``delta``
is exact where the gap is a power of two (floats, posits, integers); elsewhere it is a float64 product.

Where every gap of the grid is a power of two and every position a multiple of its gap (floats, integers,
P3109, MX elements), float32 inputs take :func:`apply_stochastic_pow2`: the remainder is the input's low
significand bits, so the decision needs integers only and two table loads (:func:`pow2_entries`); posits
(whose gaps at the regime's ends are not powers of two), LP, DT and codebooks keep the float kernel, which for
the direct and cut lookups of 16 key bits reads tables gathered per first-level entry (:func:`entry_tables`:
no load waits on another's result but the entry's own, about 1.35x faster than interval first, then its tables).

The numba kernels (:func:`apply_stochastic` and its specialisations) and the torch reference
(:func:`torch_goes_away`, used by :class:`dtypelab.kernels.backend.TorchBackend`) compute the same bits.

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
    always does). No branch: the outcome is random, so a branch would be mispredicted half the time."""
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


def entry_tables(index_first: np.ndarray, key_bits: int, base: np.ndarray, inverse: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per first-level entry ``e`` of a direct- or cut-form lookup of interval indices (``index_first``: 2 or 3
    entries per bucket of ``key_bits``), what :func:`_one` reads through ``j = index_first[e]``, gathered once:
    ``base[j]``, the inverse gap toward the away neighbour (the bucket's sign bit says which side that is: for a
    zero, NaN or inf input the remainder is 0 either way) and the two intervals an input may take, ``j`` and the
    away one, interleaved (``neighbours[2e + away]``). The kernels then index every table by ``e``: no load waits
    for another but the entry's own."""
    j = index_first.astype(np.int64)
    key = np.arange(j.size) // (j.size >> key_bits)
    up = 1 - (key >> (key_bits - 1))
    away = np.clip(j + 2 * up - 1, 0, len(base) - 1)  # (clipped where nothing moves: the ends, specials)
    return base[j], inverse[2 * j + up], np.stack([j, away], axis=1).reshape(-1)


@njit(inline="always")
def _one_entry(v, e, i, base, inverse, results, seed, offset, s_hi, s_lo, shift, keep_low, limit):
    """:func:`_one` from the tables of :func:`entry_tables` (``results`` gathered by its ``neighbours``)."""
    d = (abs(v) - base[e]) * inverse[e]
    d = d if d > 0 else 0.0
    away = goes_away(d, mix(seed, np.uint64(offset + i)), s_hi, s_lo, shift, keep_low, limit)
    return results[2 * e + np.int64(away)]


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def apply_stochastic_direct(x, bits, out, total_bits, low_bits, base, inverse, results, seed, offset, flush_below,
                            sign_bit, s_hi, s_lo, shift, keep_low, limit):
    """:func:`apply_stochastic` for the direct form, from the per-entry tables of :func:`entry_tables`, with no
    branch in the loop."""
    nans = 0
    for i in prange(x.size):
        v, b = _flushed(x[i], bits[i], flush_below, sign_bit)
        key, low = key_and_low(b, low_bits, total_bits)
        out[i] = _one_entry(v, 2 * key + (low != 0), i, base, inverse, results, seed, offset, s_hi, s_lo, shift,
                            keep_low, limit)
        nans += v != v
    return nans


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def apply_stochastic_cut(x, bits, out, total_bits, low_bits, cut, base, inverse, results, seed, offset, flush_below,
                         sign_bit, s_hi, s_lo, shift, keep_low, limit):
    """:func:`apply_stochastic_direct` for the cut form."""
    nans = 0
    for i in prange(x.size):
        v, b = _flushed(x[i], bits[i], flush_below, sign_bit)
        key, low = key_and_low(b, low_bits, total_bits)
        out[i] = _one_entry(v, 3 * key + (low != 0) + (low >= cut[key]), i, base, inverse, results, seed, offset,
                            s_hi, s_lo, shift, keep_low, limit)
        nans += v != v
    return nans


def pow2_entries(index_first: np.ndarray, low_bits: int, base: np.ndarray, inverse: np.ndarray, k: int
                 ) -> np.ndarray | None:
    """The packed words of :func:`apply_stochastic_pow2` for a direct-form float32 lookup, or None where it does
    not apply (a gap that is not a power of two, a base off its gap's grid, a bucket that straddles the away
    neighbour, an infinity that could move).

    Where interval ``j`` has a power-of-two gap ``2^g`` toward its away neighbour and ``|p_j|`` is a multiple of
    it, the remainder of a float32 ``|v|`` in ``[|p_j|, |p_j| + 2^g)`` is ``rem = sig & (2^r - 1)`` in units of
    ``v``'s ulp (``sig`` the significand, implicit bit included; ``r = g - ulp exponent``, constant in a bucket),
    so ``delta = rem / 2^r`` and ``floor(delta * 2^K) + top_K(word) >= 2^K`` becomes, with ``e = min(K, r)``,
    ``(rem >> (r - e)) + top_e(word) >= 2^e``: integers only, and the same decision bit for bit. Each first-level
    entry packs ``j`` (bits 0-31), the mask width ``min(r, 24)`` (32-39), the shift ``r - e`` (40-47), ``e``
    (48-55) and an always-away flag (56: the whole bucket lies at or past the away neighbour's distance, where
    ``delta >= 1``). An entry that cannot move has mask width 0."""
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN patterns and the infinite positions of specials
        return _pow2_entries(index_first, low_bits, base, inverse, k)


def _pow2_entries(index_first: np.ndarray, low_bits: int, base: np.ndarray, inverse: np.ndarray, k: int
                  ) -> np.ndarray | None:
    entry = np.arange(len(index_first), dtype=np.int64)
    key, rest = entry >> 1, entry & 1
    j = index_first.astype(np.int64)
    low = (key << low_bits) & 0x7FFFFFFF
    high = low + rest * ((1 << low_bits) - 1)
    low = low + rest
    exponent = low >> 23
    up = 1 - (key >> (31 - low_bits))  # the sign bit is the key's top bit; +0 (low = 0) cannot move
    inv = np.where(low > 0, inverse[2 * j + up], 0.0)
    special = exponent == 255
    if (special & (inv != 0) & (low == 0x7F800000)).any():  # an infinity that could move
        return None
    moves = (inv != 0) & ~special  # NaN never moves
    gap = np.where(moves, 1.0 / inv, 1.0)
    fraction, g = np.frexp(gap)
    lo, hi = (m.astype(np.uint32).view(np.float32).astype(np.float64) for m in (low, high))
    end = base[j] + gap
    always = moves & (lo >= end)  # delta >= 1 everywhere in the bucket
    if (moves & ((fraction != 0.5) | (base[j] % gap != 0) | (~always & (hi >= end)))).any():
        return None
    r = np.where(moves & ~always, g.astype(np.int64) - 1 - (np.maximum(exponent, 1) - 150), 0)
    e = np.where(r > 0, np.minimum(k, r), 1)  # e = 1 where nothing moves: a shift by 64 would be undefined
    return (j & 0xFFFFFFFF | np.clip(r, 0, 24) << 32 | np.clip(r - e, 0, 31) << 40 | e << 48
            | always.astype(np.int64) << 56)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def apply_stochastic_pow2(bits, out, low_bits, words, results, seed, offset, flush_bits):
    """:func:`apply_stochastic_direct` for float32 inputs (their bit patterns) of a power-of-two-gap grid, from
    the words of :func:`pow2_entries`: one table load and one result load per input, integers only. ``flush_bits``:
    inputs of smaller magnitude bit pattern are zeros (daz; 0 for none). Returns the number of NaN inputs."""
    nans = 0
    for i in prange(bits.size):
        b = np.int64(bits[i])
        mag = b & 0x7FFFFFFF
        b = b & ~np.int64(0x7FFFFFFF) if mag < flush_bits else b
        mag = b & 0x7FFFFFFF
        key, low = b >> low_bits & ((1 << (32 - low_bits)) - 1), b & ((1 << low_bits) - 1)
        w = words[2 * key + (low != 0)]
        sig = (mag & 0x7FFFFF) | np.int64(mag >= 0x800000) << 23
        d = ((sig & ((np.int64(1) << (w >> 32 & 0xFF)) - 1)) >> (w >> 40 & 0xFF)) + ((w >> 56 & 1) << 1)
        e = np.uint64(w >> 48 & 0xFF)
        top = mix(seed, np.uint64(offset + i)) >> (np.uint64(64) - e)
        total = np.uint64(d) + top
        away = (total < np.uint64(d)) | ((total >> (e - np.uint64(1)) >> np.uint64(1)) != np.uint64(0))
        out[i] = results[(w & 0xFFFFFFFF) + (1 - 2 * (b >> 31 & 1)) * np.int64(away)]
        nans += mag > 0x7F800000
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
           "remainder_tables", "entry_tables", "torch_goes_away", "pow2_entries", "apply_stochastic_pow2"]

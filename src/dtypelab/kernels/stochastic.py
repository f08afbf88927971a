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
    >>> goes_away(0.75, np.uint64(0x4 << 60), 2)  # floor(0.75 * 4) = 3, top 2 bits of the word = 1: 3 + 1 >= 4
    True
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from dtypelab.kernels.lut import lookup
from dtypelab.kernels.random import mix

TWO64 = 18446744073709551616.0


@njit(inline="always")
def goes_away(d, word, k):
    """Whether a remainder ``d >= 0`` rounds away given the random ``word`` and ``k`` compared bits (``d >= 1``, which
    float64 rounding can give for a gap that is not a power of two, always does). Branch-free in the data: the
    outcome is random, so a branch would be mispredicted half the time."""
    if k == 64:  # (loop-invariant: predicted)
        capped = d if d < 1.0 else 0.5  # keeps the conversion in range; d >= 1 is decided by the last term
        big = np.uint64(capped * TWO64)
        return ((big != np.uint64(0)) & (word >= np.uint64(0) - big)) | (d >= 1.0)
    dk = np.int64(d * np.float64(np.int64(1) << k))  # floor; d >= 1 gives dk >= 2^k: away
    return np.int64(word >> np.uint64(64 - k)) + dk >= np.int64(1) << k


def remainder_tables(positions: np.ndarray, n_total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per interval (all ``n_total``, specials included): ``|p_j|``, and ``1 / (|p_away| - |p_j|)`` toward the next
    interval (for ``x > 0``) and the previous one (``x < 0``); 0 where the input cannot move (the ends, specials).
    The inverse of a power-of-two gap is exact, so ``delta`` is too."""
    n = len(positions)
    mag = np.abs(np.asarray(positions, np.float64))
    base, inv_up, inv_down = np.zeros(n_total), np.zeros(n_total), np.zeros(n_total)
    base[:n] = mag
    with np.errstate(divide="ignore"):
        inv_up[: n - 1] = np.where(mag[1:] > mag[:-1], 1.0 / (mag[1:] - mag[:-1]), 0.0)
        inv_down[1:n] = np.where(mag[:-1] > mag[1:], 1.0 / (mag[:-1] - mag[1:]), 0.0)
    inv_up[~np.isfinite(inv_up)], inv_down[~np.isfinite(inv_down)] = 0.0, 0.0
    return base, inv_up, inv_down


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def apply_stochastic(x, bits, out, form, total_bits, low_bits, first, cut, entries, fb_first, fb_span, thresholds,
                     tie, index_table, index_first, base, inv_up, inv_down, results, k, seed, offset, flush_below,
                     sign_bit):
    """``out[i]`` = the stochastically rounded ``x[i]`` (``results`` by interval: values or codes); the Lut arrays
    as :func:`dtypelab.kernels.lut.lookup` takes them, writing interval indices; ``base``, ``inv_up``, ``inv_down``
    from :func:`remainder_tables`. Returns the number of NaN inputs."""
    seed = np.uint64(seed)
    nans = 0
    for i in prange(x.size):
        v = x[i]
        b = bits[i]
        if flush_below > 0:  # daz (loop-invariant): a zero of its sign
            tiny = (v != 0) & (abs(v) < flush_below)
            v = v * 0 if tiny else v
            b = b & sign_bit if tiny else b
        j = lookup(form, v, b, low_bits, total_bits, first, cut, entries, fb_first, fb_span, thresholds, tie,
                   index_table, index_first)
        up = v > 0
        d = (abs(v) - base[j]) * (inv_up[j] if up else inv_down[j])
        d = d if d > 0 else 0.0  # exact inputs, zeros and NaN stay
        away = goes_away(d, mix(seed, np.uint64(offset + i)), k)
        out[i] = results[j + (2 * up - 1) * away]  # (arithmetic, not a select: numba would branch on it)
        nans += v != v
    return nans


def torch_goes_away(d: torch.Tensor, words: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`goes_away` on tensors (float64 ``d`` in [0, 1], int64 ``words`` holding the uint64 bits)."""
    one = torch.ones_like(d, dtype=torch.bool)
    if k <= 32:
        dk = torch.floor(d * 2.0**k).long()
        top = (words >> (64 - k)) & ((1 << k) - 1)
        return torch.where(d >= 1, one, top + dk >= 1 << k)
    hi = torch.floor(d * 2.0**32)  # floor(d * 2^64) = hi * 2^32 + lo, both exact
    lo = torch.floor((d * 2.0**32 - hi) * 2.0**32).long()
    low_sum = (words & 0xFFFFFFFF) + lo
    high_sum = ((words >> 32) & 0xFFFFFFFF) + hi.long() + (low_sum >> 32)
    return torch.where(d >= 1, one, high_sum >= 1 << 32)


__all__ = ["goes_away", "apply_stochastic", "remainder_tables", "torch_goes_away"]

"""Stochastic rounding kernels: the toward-zero neighbour from a table lookup, then one random decision.

For an input ``x`` whose toward-zero neighbour is interval ``j`` (looked up in the truncating table of
:func:`dtypelab.kernels.rounding.table_for`) and whose away neighbour is ``j + 1`` (``x > 0``) or ``j - 1``
(``x < 0``), ``delta = (|x| - |p_j|) / (|p_away| - |p_j|)`` with ``p`` the positions of the intervals (their
values, and the continued grid's next value for an overflow interval). ``x`` goes away iff
``floor(delta * 2^K) + top_K(word) >= 2^K`` (:func:`goes_away`), ``word`` the 64-bit random word of its counter
(:mod:`dtypelab.kernels.random`). Exact inputs, NaN, ±inf and inputs past the last interval never move. ``delta``
is exact where the gap is a power of two (floats, posits, integers); elsewhere it is a float64 quotient.

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
    """Whether a remainder ``d`` in (0, 1) rounds away given the random ``word`` and ``k`` compared bits."""
    if d >= 1.0:
        return True
    if k == 64:
        big = np.uint64(d * TWO64)
        return big != np.uint64(0) and word >= np.uint64(0) - big
    dk = np.uint64(d * np.float64(np.uint64(1) << np.uint64(k)))
    return (word >> np.uint64(64 - k)) + dk >= (np.uint64(1) << np.uint64(k))


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def apply_stochastic(x, bits, out, form, total_bits, low_bits, lut_arrays, positions, results, n_sorted, k, seed,
                     offset, flush_below, sign_bit):
    """``out[i]`` = the stochastically rounded ``x[i]`` (``results`` by interval: values or codes); ``lut_arrays``
    as :func:`dtypelab.kernels.lut.lookup` takes them, writing interval indices. Returns the number of NaN inputs."""
    first, cut, entries, fb_first, fb_span, thresholds, tie, index_table, index_first = lut_arrays
    seed = np.uint64(seed)
    nans = 0
    for i in prange(x.size):
        v = x[i]
        b = bits[i]
        if v != 0 and abs(v) < flush_below:  # daz: a zero of its sign
            v = v * 0
            b = b & sign_bit
        j = lookup(form, v, b, low_bits, total_bits, first, cut, entries, fb_first, fb_span, thresholds, tie,
                   index_table, index_first)
        if j < n_sorted and v != 0:
            nb = j + 1 if v > 0 else j - 1
            if 0 <= nb < n_sorted:
                p = abs(positions[j])
                a = abs(v) - p
                if a > 0 and goes_away(a / abs(abs(positions[nb]) - p), mix(seed, np.uint64(offset + i)), k):
                    j = nb
        out[i] = results[j]
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


__all__ = ["goes_away", "apply_stochastic", "torch_goes_away"]

"""Fast path of the rounding engine: a 64K-bucket lookup on the top 16 bits of the input, in numba.

The bucket of a float32 is its top 16 bits (sign, exponent, 7 mantissa bits); of a float64, its top 16
bits too. For each bucket, :func:`bucket_table` stores the interval of the bucket's lowest member and how
many thresholds lie between that and the interval of its highest member (almost always 0). The kernels
read the interval directly, or binary-search those few thresholds, then write ``table[interval]`` — a
value or a code — into a preallocated output. Results equal :meth:`RoundingTable.reference_index`
exactly (tests check all float32 buckets' ends and random inputs).

numba compiles each kernel once per dtype combination and caches it on disk (``cache=True``), so a new
process pays only the load.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from dtypelab.kernels.table import UP, RoundingTable

_KEY_SHIFT = {np.dtype(np.float32): 16, np.dtype(np.float64): 48}
_UINT = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def bucket_table(table: RoundingTable, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(first interval, threshold span) for each of the 65,536 top-16-bit buckets of ``dtype`` inputs."""
    dtype = np.dtype(dtype)
    shift = _KEY_SHIFT[dtype]
    uint = _UINT[dtype]
    keys = np.arange(1 << 16, dtype=uint) << uint(shift)
    low = keys.view(dtype)
    high = (keys | uint((1 << shift) - 1)).view(dtype)
    finite = np.isfinite(low) & np.isfinite(high)
    a = table.reference_index(np.where(finite, low, 0))
    b = table.reference_index(np.where(finite, high, 0))
    first = np.minimum(a, b).astype(np.int32)
    span = np.abs(a - b).astype(np.int32)
    return first, span


@njit(inline="always")
def _passes(x, t, tie):
    if x > t:
        return True
    if x == t:
        if tie == UP:
            return True
        if tie == 2:  # BY_SIGN: +0.0 passes, -0.0 does not
            return np.copysign(1.0, x) > 0
    return False


@njit(inline="always")
def _settle(x, lo, span, thresholds, tie):
    hi = lo + span
    while lo < hi:
        mid = (lo + hi) >> 1
        if _passes(x, thresholds[mid], tie[mid]):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(parallel=True, cache=True, nogil=True)
def apply_f32(x, bits, out, table, first, span, thresholds, tie, nan_index, pinf_index, ninf_index):
    """``out[i] = table[interval(x[i])]`` for float32 ``x`` (``bits`` is ``x`` viewed as uint32).

    Returns the number of NaN inputs.
    """
    nans = 0
    for i in prange(x.size):
        b = bits[i]
        if (b & 0x7F800000) == 0x7F800000:
            if b & 0x007FFFFF:
                out[i] = table[nan_index]
                nans += 1
            elif b >> 31:
                out[i] = table[ninf_index]
            else:
                out[i] = table[pinf_index]
        else:
            key = b >> 16
            j = first[key]
            s = span[key]
            if s:
                j = _settle(x[i], j, s, thresholds, tie)
            out[i] = table[j]
    return nans


@njit(parallel=True, cache=True, nogil=True)
def apply_f64(x, bits, out, table, first, span, thresholds, tie, nan_index, pinf_index, ninf_index):
    """As :func:`apply_f32`, for float64 ``x`` (``bits`` is ``x`` viewed as uint64)."""
    nans = 0
    for i in prange(x.size):
        b = bits[i]
        if (b & 0x7FF0000000000000) == 0x7FF0000000000000:
            if b & 0x000FFFFFFFFFFFFF:
                out[i] = table[nan_index]
                nans += 1
            elif b >> 63:
                out[i] = table[ninf_index]
            else:
                out[i] = table[pinf_index]
        else:
            key = b >> 48
            j = first[key]
            s = span[key]
            if s:
                j = _settle(x[i], j, s, thresholds, tie)
            out[i] = table[j]
    return nans

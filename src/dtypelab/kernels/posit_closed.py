"""Closed-form posit rounding for posits of up to 32 bits (numba), used where a value table is too big.

A positive ``x = m * 2^E`` (``1 <= m < 2``) has regime ``k = E >> es``, exponent ``e = E - k * 2^es`` and the
52 fraction bits of ``m``. Laying out regime, exponent and fraction bits after the sign and rounding that
bit string to ``n - 1`` bits, to nearest with ties to even, is exactly the Posit Standard's rounding;
``|x| >= maxpos`` gives maxpos, ``0 < |x| < minpos`` gives minpos (a posit never rounds a nonzero to zero),
NaN and infinities give NaR. Negative values are the two's complement of the positive pattern.
"""

from __future__ import annotations

import math

from numba import njit, prange


@njit(inline="always", cache=True)
def round_to_pattern(x, n, es):
    """The n-bit posit pattern nearest to the float ``x`` (as a non-negative int)."""
    nar = 1 << (n - 1)
    if x != x or x == math.inf or x == -math.inf:
        return nar
    if x == 0.0:
        return 0
    a = abs(x)
    max_exp = (n - 2) << es
    fr, ex = math.frexp(a)
    big_e = ex - 1
    if big_e >= max_exp:
        p = nar - 1
    elif big_e < -max_exp:
        p = 1
    else:
        frac = int((2.0 * fr - 1.0) * 4503599627370496.0)  # 52 fraction bits, exact
        k = big_e >> es
        e = big_e - (k << es)
        if k >= 0:
            reg_len = k + 2
            reg_bits = ((1 << (k + 1)) - 1) << 1
        else:
            reg_len = 1 - k
            reg_bits = 1
        avail = n - 1 - reg_len
        tail = (e << 52) | frac
        width = es + 52
        p = (reg_bits << avail) | (tail >> (width - avail))
        guard = (tail >> (width - avail - 1)) & 1
        sticky = (tail & ((1 << (width - avail - 1)) - 1)) != 0
        if guard and (sticky or (p & 1)):
            p += 1
    if x < 0:
        p = ((1 << n) - p) & ((1 << n) - 1)
    return p


@njit(inline="always", cache=True)
def pattern_value(p, n, es):
    """Value of the n-bit posit pattern ``p`` (NaR is NaN)."""
    mask = (1 << n) - 1
    p = p & mask
    if p == 0:
        return 0.0
    if p == 1 << (n - 1):
        return math.nan
    negative = (p >> (n - 1)) & 1
    if negative:
        p = (-p) & mask
    i = n - 2
    first = (p >> i) & 1
    m = 0
    while i >= 0 and ((p >> i) & 1) == first:
        m += 1
        i -= 1
    k = m - 1 if first else -m
    rest = i if i > 0 else 0  # bits left after the terminator (bit i is the terminator when i >= 0)
    take = es if es < rest else rest
    e = ((p >> (rest - take)) & ((1 << take) - 1)) << (es - take)
    f_bits = rest - take
    f = p & ((1 << f_bits) - 1)
    value = math.ldexp(1.0 + f / (1 << f_bits), (k << es) + e)
    return -value if negative else value


@njit(parallel=True, cache=True, nogil=True)
def quantize(x, out, n, es):
    """``out[i]`` = the posit(n, es) value nearest ``x[i]``; returns the number of NaN inputs."""
    nans = 0
    for i in prange(x.size):
        v = x[i]
        if v != v:
            nans += 1
        out[i] = pattern_value(round_to_pattern(float(v), n, es), n, es)
    return nans


@njit(parallel=True, cache=True, nogil=True)
def encode(x, out, n, es):
    """``out[i]`` = the posit(n, es) pattern nearest ``x[i]``; returns the number of NaN inputs."""
    nans = 0
    for i in prange(x.size):
        v = x[i]
        if v != v:
            nans += 1
        out[i] = round_to_pattern(float(v), n, es)
    return nans


@njit(parallel=True, cache=True, nogil=True)
def decode(codes, out, n, es):
    """``out[i]`` = the value of pattern ``codes[i]``."""
    for i in prange(codes.size):
        out[i] = pattern_value(int(codes[i]), n, es)

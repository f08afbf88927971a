"""Closed-form posit rounding for posits of up to 32 bits (numba), used where a value table is too big.

A positive ``x = m * 2^E`` (``1 <= m < 2``) has regime ``k = E >> es``, exponent ``e = E - k * 2^es`` and the
52 fraction bits of ``m``. Laying out regime, exponent and fraction bits after the sign and rounding that
bit string to ``n - 1`` bits, to nearest with ties to even, is exactly the Posit Standard's rounding;
``|x| >= maxpos`` gives maxpos, ``0 < |x| < minpos`` gives minpos (a posit never rounds a nonzero to zero),
NaN and infinities give NaR. Negative values are the two's complement of the positive pattern.
"""

from __future__ import annotations

import math

import torch
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


# ---- the same closed form in torch integer ops (any device, no host synchronisation) ---------------------------

_F64_MAGNITUDE, _F64_FRACTION = 0x7FFFFFFFFFFFFFFF, (1 << 52) - 1


def _shl(a: int, by: torch.Tensor) -> torch.Tensor:
    """``a << by`` elementwise (int64)."""
    return torch.bitwise_left_shift(torch.full_like(by, a), by)


def torch_encode(x: torch.Tensor, n: int, es: int) -> torch.Tensor:
    """:func:`round_to_pattern` of every element of ``x`` (any float dtype, any device) as int64 patterns, in
    integer tensor ops on the float64 bit pattern: regime, exponent and the 52 fraction bits laid out and rounded
    to ``n - 1`` bits, to nearest with ties to even.

    Example:
        >>> torch_encode(torch.tensor([1.0, -1.0, 0.0, float("nan"), 1e30, 1e-30]), 16, 1).tolist()
        [16384, 49152, 0, 32768, 32767, 1]
    """
    bits = x.detach().to(torch.float64).view(torch.int64)
    magnitude = bits & _F64_MAGNITUDE
    biased = magnitude >> 52
    max_exp = (n - 2) << es
    big_e = biased - 1023
    inside = (big_e < max_exp) & (big_e >= -max_exp)
    big_e = torch.where(inside, big_e, 0)  # outside: saturated below (this keeps every shift in range)
    k = big_e >> es
    e = big_e - (k << es)
    up = k >= 0
    reg_len = torch.where(up, k + 2, 1 - k)
    reg_bits = torch.where(up, (_shl(1, (k + 1).clamp(min=0)) - 1) << 1, 1)
    avail = n - 1 - reg_len
    tail = (e << 52) | (magnitude & _F64_FRACTION)
    dropped = es + 52 - avail  # >= 1 for every n <= 32
    p = torch.bitwise_left_shift(reg_bits, avail) | torch.bitwise_right_shift(tail, dropped)
    guard = torch.bitwise_right_shift(tail, dropped - 1) & 1
    sticky = (tail & (_shl(1, dropped - 1) - 1)) != 0
    p = p + ((guard == 1) & (sticky | ((p & 1) == 1))).long()
    p = torch.where(inside, p, torch.where(biased - 1023 >= max_exp, (1 << (n - 1)) - 1, 1))
    p = torch.where(magnitude == 0, 0, p)
    p = torch.where(bits < 0, ((1 << n) - p) & ((1 << n) - 1), p)
    return torch.where(biased == 0x7FF, 1 << (n - 1), p)  # NaN and infinities: NaR


def _bit_length(v: torch.Tensor) -> torch.Tensor:
    """Bits needed for each non-negative ``v < 2**53`` (0 for 0): frexp's exponent, exact in float64."""
    return torch.where(v > 0, torch.frexp(v.to(torch.float64)).exponent.long(), 0)


def _pow2(exponent: torch.Tensor) -> torch.Tensor:
    """``2.0 ** exponent`` for integers in float64's normal range, built from the bit pattern (exact)."""
    return ((exponent + 1023) << 52).view(torch.float64)


def torch_decode(p: torch.Tensor, n: int, es: int) -> torch.Tensor:
    """:func:`pattern_value` of every pattern of ``p`` (an integer tensor, any device), float64 (NaR: NaN).

    Example:
        >>> torch_decode(torch.tensor([16384, 49152, 0, 32768, 32767, 1]), 16, 1).tolist()
        [1.0, -1.0, 0.0, nan, 268435456.0, 3.725290298461914e-09]
    """
    mask = (1 << n) - 1
    p = p.long() & mask
    negative = (p >> (n - 1)) & 1 == 1
    q = torch.where(negative, (-p) & mask, p)
    body = q & ((1 << (n - 1)) - 1)
    first = (body >> (n - 2)) & 1 == 1
    run = (n - 1) - _bit_length(torch.where(first, ~body & ((1 << (n - 1)) - 1), body))
    k = torch.where(first, run - 1, -run)
    rest = (n - 2 - run).clamp(min=0)  # bits after the terminator
    take = rest.clamp(max=es)
    e = ((q >> (rest - take)) & (_shl(1, take) - 1)) << (es - take)
    f_bits = rest - take
    f = q & (_shl(1, f_bits) - 1)
    exponent = (k << es) + e
    mantissa = 1.0 + f.to(torch.float64) / _pow2(f_bits)
    half = exponent >> 1  # two exact steps: each power of two stays in float64's normal range
    value = mantissa * _pow2(half) * _pow2(exponent - half)
    value = torch.where(negative, -value, value)
    value = torch.where(p == 0, 0.0, value)
    return torch.where(p == 1 << (n - 1), float("nan"), value)

"""The exact sum of a few float64 terms per output, rounded once to odd at float64's 53 bits, in one numba pass
(the quire's last step on the CPU: :func:`dtypelab.arith.exact.sum_to_odd`).

Each output's nonzero terms are added, as 53-bit integers, into 26-bit limbs of an integer whose last bit is
worth the smallest term's last bit (two limbs below it, so that the top three limbs always hold 53 bits); the
limbs are carried once, the top 53 bits kept and the last of them set when any bit below was nonzero (round to
odd). Rounding that once more to any format of at most 51 significant bits gives the correctly rounded exact
sum. Terms with an infinity or NaN give their float64 sum.

Example:
    >>> import numpy as np
    >>> terms = np.array([[2.0**60, 1.0], [1.0, 2.0**-60], [-2.0**60, 0.0]])  # two outputs, three terms each
    >>> terms.sum(0).tolist(), odd_sum(terms).tolist()  # float64 loses the 1.0; 1 + 2^-60 rounds to odd
    ([0.0, 1.0], [1.0, 1.0000000000000002])
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

LIMB = 26  # bits per limb: a limb's sum over up to 2^36 terms stays in an int64
MASK = (1 << LIMB) - 1
LIMBS = (2 * 1100 + 64) // LIMB + 6  # float64's exponents, a term count's bits, the two limbs below
BLOCK = 512  # outputs a thread takes at a time


@njit(cache=True, nogil=True, inline="always")
def _parts(x: float) -> tuple[np.int64, int, np.int64]:
    """``x == s * m * 2^e`` (finite ``x``): the 53-bit integer significand ``m``, ``e`` and the sign ``s``."""
    bits = np.float64(x).view(np.int64)
    field = (bits >> 52) & 0x7FF
    m = bits & ((np.int64(1) << 52) - 1)
    e = -1074
    if field:
        m |= np.int64(1) << 52
        e = field - 1075
    return m, e, np.int64(-1 if bits < 0 else 1)


@njit(cache=True, nogil=True)
def _carry(limbs: np.ndarray, n: int) -> None:
    """Every limb below the top in [0, 2^26), the top one signed."""
    for i in range(n - 1):
        c = limbs[i] >> LIMB
        limbs[i] -= c << LIMB
        limbs[i + 1] += c


@njit(cache=True, nogil=True)
def _one(terms: np.ndarray, j: int, limbs: np.ndarray) -> float:
    """Output ``j``: its terms' exact sum rounded to odd (``limbs``: scratch, :data:`LIMBS` long)."""
    t_count = terms.shape[0]
    lo, hi = 1 << 20, -(1 << 20)
    special, any_special = 0.0, False  # the float64 sum of the infinite and NaN terms
    for i in range(t_count):
        x = terms[i, j]
        if not math.isfinite(x):
            special, any_special = special + x, True
        elif x != 0:
            _, e, _ = _parts(x)
            lo, hi = min(lo, e), max(hi, e + 53)
    if any_special:
        return special
    if hi < lo:
        return 0.0
    base = lo - 2 * LIMB
    n = (hi - base + 40) // LIMB + 2  # the terms' bits, the count's carries, a signed top limb
    limbs[:n] = 0
    for i in range(t_count):
        x = terms[i, j]
        if x != 0:
            m, e, sign = _parts(x)
            q, r = divmod(e - base, LIMB)
            low, high = (m & MASK) << r, (m >> LIMB) << r  # below 2^51 and 2^52
            limbs[q] += sign * (low & MASK)
            limbs[q + 1] += sign * ((low >> LIMB) + (high & MASK))
            limbs[q + 2] += sign * (high >> LIMB)
    _carry(limbs, n)
    neg = limbs[n - 1] < 0
    if neg:
        for i in range(n):
            limbs[i] = -limbs[i]
        _carry(limbs, n)
    t = n - 1
    while t >= 0 and limbs[t] == 0:
        t -= 1
    if t < 0:
        return 0.0
    nb = math.frexp(float(limbs[t]))[1]  # the top limb's bits, 1..26
    mant = (limbs[t] << (53 - nb)) | (limbs[t - 1] << (27 - nb)) | (limbs[t - 2] >> (nb - 1))
    sticky = (limbs[t - 2] & ((np.int64(1) << (nb - 1)) - 1)) != 0
    for i in range(t - 2):
        sticky |= limbs[i] != 0
    v = math.ldexp(float(mant | np.int64(sticky)), base + LIMB * (t - 2) + nb - 1)
    return -v if neg else v


@njit(parallel=True, cache=True, nogil=True)
def _odd_sum(terms: np.ndarray, out: np.ndarray) -> None:
    n = terms.shape[1]
    for blk in prange((n + BLOCK - 1) // BLOCK):
        limbs = np.zeros(LIMBS, dtype=np.int64)
        for j in range(blk * BLOCK, min(n, (blk + 1) * BLOCK)):
            out[j] = _one(terms, j, limbs)


def odd_sum(terms: np.ndarray) -> np.ndarray:
    """The exact sums over axis 0 of float64 ``terms [T, N]`` rounded to odd at 53 bits: ``[N]`` float64."""
    terms = np.ascontiguousarray(terms, dtype=np.float64)
    out = np.empty(terms.shape[1], dtype=np.float64)
    _odd_sum(terms, out)
    return out


__all__ = ["odd_sum"]

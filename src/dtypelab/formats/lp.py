"""Logarithmic posit LP(n, es, rs, sf) — Ramachandran et al., DAC 2024, with a bounded regime.

Word: sign; a regime run of ``m`` identical bits, ``m`` capped at ``rs`` (a run that reaches ``rs`` has no
terminator, otherwise the opposite bit ends it), ``k = m - 1`` for ones, ``-m`` for zeros; then ``es``
exponent bits ``e`` (missing low bits are 0 where the word ends); then the remaining ``F`` bits, a
**log-domain** fraction ``f``. ``value = ±2^(2^es * k + e + f / 2^F - sf)``. Negative words are the two's
complement; 0...0 is zero and 10...0 is NaR (NaN). With ``rs = n - 1`` the binades are those of
posit(n, es); only the spacing inside a binade is logarithmic.

Rounding is to nearest in the log domain, ties to even on the pattern: the decision point between two
neighbours is the (n+1)-bit word between them, so it is their geometric mean where the extra bit is a
fraction bit and the pattern midpoint (a power of two, where ties can happen) where it is an exponent bit.
A nonzero input never rounds to zero and saturates at ±maxpos, as with posits. Values are irrational in
general: they are returned correctly rounded to the output dtype (half precision via float32).

Example:
    >>> import torch, dtypelab as dl
    >>> f = dl.fmt("lp(8,2,2,0)")
    >>> f.values()[f.values() > 0].log2().mul(8).round().int().tolist()[:3]
    [-63, -62, -61]
    >>> f.quantize(torch.tensor([1.05, 0.0, -1e9])).tolist()
    [1.0905077457427979, 0.0, -234.75303649902344]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache

import numpy as np

from dtypelab.formats.base import Format
from dtypelab.formats.posit import never_to_zero
from dtypelab.kernels.table import DOWN, UP, RoundingTable

_PRECISION = 60  # decimal digits used to round 2^q and to compare against it


@dataclass(frozen=True, repr=False)
class LogPosit(Format):
    """lp(n, es, rs, sf): n in 3..16, es in 0..4, rs in 1..n-1, sf a real scale (log2) factor."""

    n: int
    es: int
    rs: int
    sf: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and 3 <= self.n <= 16):
            raise ValueError(f"lp: n must be an integer in 3..16, got {self.n!r}")
        if not (isinstance(self.es, int) and 0 <= self.es <= 4):
            raise ValueError(f"lp: es must be an integer in 0..4, got {self.es!r}")
        if not (isinstance(self.rs, int) and 1 <= self.rs <= self.n - 1):
            raise ValueError(f"lp: rs must be an integer in 1..n-1 = 1..{self.n - 1}, got {self.rs!r}")
        if not (isinstance(self.sf, (int, float)) and math.isfinite(self.sf)):
            raise ValueError(f"lp: sf must be a finite real number, got {self.sf!r}")
        object.__setattr__(self, "sf", float(self.sf))

    inf_is_nan = True

    @property
    def bits(self) -> int:
        return self.n

    def __str__(self) -> str:
        sf = int(self.sf) if self.sf.is_integer() else self.sf
        return f"lp({self.n},{self.es},{self.rs},{sf})"

    @property
    def nan_code(self) -> int:
        return 1 << (self.n - 1)

    def code_values(self) -> np.ndarray:
        return _lp_tables(self)[0]

    def rounding_table(self) -> RoundingTable:
        return _lp_tables(self)[1]


def log_exponent(p: int, n: int, es: int, rs: int) -> Fraction:
    """``2^es * k + e + f / 2^F`` of a positive n-bit LP pattern ``p`` (not zero, not NaR)."""
    i = n - 2
    first = (p >> i) & 1
    m = 0
    while i >= 0 and m < rs and ((p >> i) & 1) == first:
        m += 1
        i -= 1
    if m < rs:
        i -= 1  # the terminator
    k = m - 1 if first else -m
    rest = max(i + 1, 0)
    take = min(es, rest)
    e = ((p >> (rest - take)) & ((1 << take) - 1)) << (es - take)
    f_bits = rest - take
    f = p & ((1 << f_bits) - 1)
    return Fraction((k << es) + e) + Fraction(f, 1 << f_bits)


def _pow2(q: Fraction) -> Decimal:
    return Decimal(2) ** (Decimal(q.numerator) / Decimal(q.denominator))


def _nearest_float32(d: Decimal) -> np.float32:
    guess = np.float32(float(d))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    return min(candidates, key=lambda c: abs(Decimal(float(c)) - d))


@lru_cache(maxsize=32)
def _lp_tables(f: LogPosit) -> tuple[np.ndarray, RoundingTable]:
    n, es, rs, sf = f.n, f.es, f.rs, Fraction(f.sf)
    half = 1 << (n - 1)
    pos64, pos32 = [], []
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        for p in range(1, half):
            d = _pow2(log_exponent(p, n, es, rs) - sf)
            pos64.append(float(d))
            pos32.append(_nearest_float32(d))
        mids, ties = [], []
        for p in range(1, half - 1):  # between p and p + 1
            q = log_exponent(2 * p + 1, n + 1, es, rs) - sf
            if q.denominator == 1:
                mids.append(math.ldexp(1.0, q.numerator))
                ties.append(UP if (p + 1) % 2 == 0 else DOWN)
            else:
                exact = _pow2(q)
                t = float(exact)
                mids.append(t)
                ties.append(UP if Decimal(t) > exact else DOWN)
    pos64_a = np.array(pos64)
    code_values = np.zeros(1 << n)
    code_values[1:half] = pos64_a
    code_values[half] = np.nan
    code_values[half + 1:] = -pos64_a[::-1]  # code 2^n - p is -value(p)

    signed = np.arange(-half + 1, half, dtype=np.int64)
    values = np.concatenate([-pos64_a[::-1], [0.0], pos64_a])
    values32 = np.concatenate([-np.array(pos32[::-1]), [0.0], np.array(pos32)]).astype(np.float32)
    pos_mids = np.array(mids)
    pos_ties = np.array(ties, dtype=np.int8)
    # Mirrored onto the negatives every tie flips: x == -t passes iff t < exact (irrational), and the even
    # code of a mirrored pair is the other end (rational).
    neg_ties = np.where(pos_ties == UP, DOWN, UP)[::-1]
    thresholds = np.concatenate([-pos_mids[::-1], [0.0, 0.0], pos_mids])
    tie = np.concatenate([neg_ties, [UP, DOWN], pos_ties]).astype(np.int8)
    never_to_zero(signed, thresholds, tie)
    nar = (np.nan, half)
    table = RoundingTable.with_specials(values, signed & ((1 << n) - 1), thresholds, tie,
                                       nan=nar, pinf=nar, ninf=nar, values32=values32)
    return code_values, table

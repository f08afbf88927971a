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
from dtypelab.formats.registry import int_args, register_family
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
        if not isinstance(self.sf, (int, float)) or isinstance(self.sf, bool):
            raise TypeError(f"lp: sf must be a real number, got {self.sf!r}")
        lo, hi = sf_range(self.n, self.es, self.rs)
        if not ((isinstance(self.sf, int) or math.isfinite(self.sf)) and lo <= Fraction(self.sf) <= hi):
            raise ValueError(f"lp({self.n},{self.es},{self.rs},sf): sf must lie in [{float(lo)}, {float(hi)}] "
                             f"(every value 2^(... - sf) a normal float64), got {self.sf!r}")
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

    def nearest_table(self) -> RoundingTable:
        return _lp_tables(self)[1]


def sf_range(n: int, es: int, rs: int) -> tuple[Fraction, Fraction]:
    """The sf for which every value of lp(n, es, rs, sf), minpos to maxpos, is a normal float64 number.

    Example:
        >>> [float(s) for s in sf_range(8, 2, 2)]
        [-1015.125, 1014.125]
    """
    low, high = log_exponent(1, n, es, rs), log_exponent((1 << (n - 1)) - 1, n, es, rs)
    return high - 1023, low + 1022


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


def log_exponent_numerators(p: np.ndarray, n: int, es: int, rs: int, d: int) -> np.ndarray:
    """Vectorized :func:`log_exponent` of positive n-bit patterns ``p``, as int64 numerators over ``2**d``."""
    w = n - 1
    b = np.asarray(p, dtype=np.int64) & ((1 << w) - 1)
    first = (b >> (w - 1)) & 1
    m = np.zeros_like(b)
    alive = np.ones(b.shape, dtype=bool)
    for i in range(w - 1, -1, -1):  # run length, capped at rs
        alive &= (((b >> i) & 1) == first) & (m < rs)
        m += alive
    rest = np.maximum(w - m - (m < rs), 0)  # bits after the regime and its terminator (if any)
    take = np.minimum(es, rest)
    e = ((b >> (rest - take)) & ((1 << take) - 1)) << (es - take)
    f_bits = rest - take
    f = b & ((1 << f_bits) - 1)
    k = np.where(first == 1, m - 1, -m)
    return (((k << es) + e) << d) + (f << (d - f_bits))


_LD_OK = np.finfo(np.longdouble).nmant >= 63  # x87 extended precision: 64-bit significand
_LD_ERR = 2.0**-60  # bound on the relative error of the long double 2^q below (exp2l: ~1 ulp = 2^-63)


def _pow2_vector(num: np.ndarray, d: int, sf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``2^(num / 2^d - sf)`` for int64 ``num``: (float64 correctly rounded, float32 correctly rounded and
    kept finite, sign of float64 - exact (0 where exact), mask of elements to redo exactly).

    Computed in long double; an element is flagged for the exact Decimal path when the long double result
    is too close to a float64 or float32 rounding boundary to decide, or when long double is plain double.
    """
    sf_int = math.floor(sf)
    sf_frac = np.longdouble(sf - sf_int)  # exact
    whole = (num >> d) - sf_int
    r = (num & ((1 << d) - 1)).astype(np.longdouble) / np.longdouble(2.0**d) - sf_frac  # in (-1, 1), error 2^-64
    exact = r == 0
    y = np.ldexp(np.exp2(r), whole.astype(np.int32))
    v64 = y.astype(np.float64)
    with np.errstate(over="ignore"):
        v32 = y.astype(np.float32)
    v32 = np.where(np.isinf(v32), np.copysign(np.float32(np.finfo(np.float32).max), v32), v32).astype(np.float32)
    diff = v64.astype(np.longdouble) - y  # exact (Sterbenz)
    err = np.abs(y) * _LD_ERR
    sign = np.where(exact, 0, np.sign(diff)).astype(np.int8)
    half64 = np.spacing(v64).astype(np.longdouble) / 2
    near64 = (np.abs(np.abs(diff) - half64) <= err) | (np.abs(np.abs(diff) - half64 / 2) <= err) | (
        np.abs(diff) <= err)
    d32 = np.abs(v32.astype(np.longdouble) - y)
    with np.errstate(over="ignore"):  # spacing of float32 max: inf, never near
        half32 = np.spacing(np.abs(v32)).astype(np.longdouble) / 2
    near32 = (np.abs(d32 - half32) <= err) | (np.abs(d32 - half32 / 2) <= err)
    redo = ~exact & (near64 | near32 | (not _LD_OK))
    return v64, v32, sign, redo


@lru_cache(maxsize=32)
def _lp_tables(f: LogPosit) -> tuple[np.ndarray, RoundingTable]:
    n, es, rs, sf = f.n, f.es, f.rs, Fraction(f.sf)
    half = 1 << (n - 1)
    d = n + 1  # every fraction of an (n+1)-bit pattern is a multiple of 2^-d
    pats = np.arange(1, half, dtype=np.int64)
    pos64, pos32, _, redo = _pow2_vector(log_exponent_numerators(pats, n, es, rs, d), d, f.sf)
    mid_pats = 2 * pats[:-1] + 1  # (n+1)-bit patterns between p and p + 1
    mid_num = log_exponent_numerators(mid_pats, n + 1, es, rs, d)
    mids, _, side, mid_redo = _pow2_vector(mid_num, d, f.sf)
    # Irrational midpoints: x == t passes iff t > the exact midpoint. Rational ones (powers of two) are true
    # ties: to the even pattern.
    ties = np.where(side > 0, UP, DOWN).astype(np.int8)
    rational = side == 0
    ties[rational] = np.where((pats[:-1][rational] + 1) % 2 == 0, UP, DOWN)
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        for i in np.flatnonzero(redo):
            exact = _pow2(log_exponent(int(pats[i]), n, es, rs) - sf)
            pos64[i], pos32[i] = float(exact), _nearest_float32(exact)
        for i in np.flatnonzero(mid_redo):
            exact = _pow2(log_exponent(int(mid_pats[i]), n + 1, es, rs) - sf)
            mids[i] = float(exact)
            ties[i] = UP if Decimal(float(mids[i])) > exact else DOWN
    pos64_a = pos64
    code_values = np.zeros(1 << n)
    code_values[1:half] = pos64_a
    code_values[half] = np.nan
    code_values[half + 1:] = -pos64_a[::-1]  # code 2^n - p is -value(p)

    signed = np.arange(-half + 1, half, dtype=np.int64)
    values = np.concatenate([-pos64_a[::-1], [0.0], pos64_a])
    values32 = np.concatenate([-pos32[::-1], [0.0], pos32]).astype(np.float32)
    pos_mids = mids
    pos_ties = ties
    # Mirrored onto the negatives every tie flips: x == -t passes iff t < exact (irrational), and the even
    # code of a mirrored pair is the other end (rational).
    neg_ties = np.where(pos_ties == UP, DOWN, UP)[::-1]
    thresholds = np.concatenate([-pos_mids[::-1], [0.0, 0.0], pos_mids])
    tie = np.concatenate([neg_ties, [UP, DOWN], pos_ties]).astype(np.int8)
    never_to_zero(signed, thresholds, tie)
    exact_tie = np.concatenate([rational[::-1], [False, False], rational])  # powers of two: true ties
    nar = (np.nan, half)
    table = RoundingTable.with_specials(values, signed & ((1 << n) - 1), thresholds, tie,
                                       nan=nar, pinf=nar, ninf=nar, values32=values32, exact_tie=exact_tie)
    return code_values, table


def _parse(args: list[str]) -> LogPosit:
    if len(args) not in (3, 4):
        raise ValueError(f"lp takes (n,es,rs) or (n,es,rs,sf), got {len(args)} arguments")
    n, es, rs = int_args(args[:3], 3, "lp")
    try:
        sf = float(args[3]) if len(args) == 4 else 0.0
    except ValueError:
        raise ValueError(f"lp: sf must be a real number, got {args[3]!r}") from None
    return LogPosit(n, es, rs, sf)


register_family("lp", _parse, forms=("lp(n,es,rs,sf)",))

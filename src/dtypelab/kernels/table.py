"""The shared exact rounding engine: a sorted threshold table, with a plain reference and a fast path.

Every format of at most 16 bits describes its rounding once, as a :class:`RoundingTable`:

* ``values[j]`` / ``codes[j]`` — the value and bit pattern of interval ``j`` (sorted by value);
* ``thresholds[j]`` — the decision point between interval ``j`` and ``j + 1``;
* ``tie[j]`` — what an input exactly equal to ``thresholds[j]`` does: ``DOWN``, ``UP``, or ``BY_SIGN``
  (``+0.0`` goes up, ``-0.0`` down: how a format with a signed zero keeps the sign of a zero input).

An input's interval is the number of thresholds it *passes* (``x > t``, or ``x == t`` with an upward tie).
Extra entries after the sorted intervals hold what NaN, +inf and -inf become.

The reference (:meth:`RoundingTable.reference_index`) is two ``searchsorted`` calls. The fast path
(:mod:`dtypelab.kernels.lut`) precomputes, for each of the 65,536 values of the top 16 bits of an input,
the interval of the bucket's lowest and highest member: where they agree (almost everywhere) the answer
is read directly; otherwise a binary search over the few thresholds inside the bucket settles it.

Example:
    >>> import numpy as np
    >>> t = RoundingTable.from_midpoints(np.array([-1.0, 0.0, 1.0]), np.array([2, 0, 1]))
    >>> t.reference_index(np.array([-0.5, 0.5, 0.7, 3.0])).tolist()  # both ties go to 0.0, the even code
    [1, 1, 2, 2]
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np

DOWN, UP, BY_SIGN = 0, 1, 2


@dataclass(frozen=True, eq=False)
class RoundingTable:
    """Exact description of a monotone rounding function (see the module docstring)."""

    values: np.ndarray  # float64, sorted intervals then [nan, +inf, -inf] results
    codes: np.ndarray  # int64, same length
    thresholds: np.ndarray  # float64, len(sorted intervals) - 1, non-decreasing
    tie: np.ndarray  # int8, same length as thresholds
    nan_index: int
    pinf_index: int
    ninf_index: int
    values32: np.ndarray | None = None  # float32 values where a plain cast would not be correctly rounded
    exact_tie: np.ndarray | None = None  # per threshold: x == t is a true tie of its two neighbours (nearest tables)

    def __post_init__(self) -> None:
        k = len(self.thresholds) + 1
        if len(self.tie) != len(self.thresholds) or len(self.values) != len(self.codes) or len(self.values) < k:
            raise ValueError("RoundingTable: thresholds, tie, values and codes have inconsistent lengths")
        if self.exact_tie is not None and len(self.exact_tie) != len(self.thresholds):
            raise ValueError("RoundingTable: exact_tie and thresholds have inconsistent lengths")
        if np.any(np.diff(self.thresholds) < 0):
            raise ValueError("RoundingTable: thresholds must be non-decreasing")

    @classmethod
    def from_midpoints(
        cls,
        values: np.ndarray,
        codes: np.ndarray,
        *,
        nan: tuple[float, int] | None = None,
        pinf: tuple[float, int] | None = None,
        ninf: tuple[float, int] | None = None,
        signed_zero: bool = False,
    ) -> RoundingTable:
        """Round to nearest, ties to the even code: thresholds are the arithmetic midpoints.

        ``values`` sorted ascending (exact float64), ``codes`` their bit patterns. ``nan``/``pinf``/``ninf``
        are (value, code) results for those inputs; by default NaN maps to NaN with code 0 (no NaN code) and
        infinities saturate. With ``signed_zero``, ``values`` holds -0.0 then +0.0 and the sign of a zero input
        is kept.
        """
        values = np.asarray(values, dtype=np.float64)
        codes = np.asarray(codes, dtype=np.int64)
        thresholds, side = exact_midpoints(values[:-1], values[1:])
        tie = np.where(codes[1:] % 2 == 0, UP, DOWN).astype(np.int8)
        tie[side > 0] = UP  # the float64 threshold lies above the true midpoint: x == t is nearer the upper value
        tie[side < 0] = DOWN
        exact = side == 0
        if signed_zero:
            zero = np.flatnonzero((values[:-1] == 0) & (values[1:] == 0))
            tie[zero], exact[zero] = BY_SIGN, False
        return cls.with_specials(values, codes, thresholds, tie, nan=nan, pinf=pinf, ninf=ninf, exact_tie=exact)

    @classmethod
    def with_specials(
        cls,
        values: np.ndarray,
        codes: np.ndarray,
        thresholds: np.ndarray,
        tie: np.ndarray,
        *,
        nan: tuple[float, int] | None = None,
        pinf: tuple[float, int] | None = None,
        ninf: tuple[float, int] | None = None,
        values32: np.ndarray | None = None,
        exact_tie: np.ndarray | None = None,
    ) -> RoundingTable:
        """Append the NaN / +inf / -inf results (defaults: NaN with no code, saturate) to sorted intervals."""
        k = len(values)
        nan = nan if nan is not None else (np.nan, 0)
        pinf = pinf if pinf is not None else (values[-1], codes[-1])
        ninf = ninf if ninf is not None else (values[0], codes[0])
        all_values = np.concatenate([values, [nan[0], pinf[0], ninf[0]]]).astype(np.float64)
        all_codes = np.concatenate([codes, [nan[1], pinf[1], ninf[1]]]).astype(np.int64)
        if values32 is not None:
            values32 = np.concatenate([values32, all_values[k:].astype(np.float32)]).astype(np.float32)
        return cls(all_values, all_codes, np.asarray(thresholds, np.float64), np.asarray(tie, np.int8),
                   k, k + 1, k + 2, values32, None if exact_tie is None else np.asarray(exact_tie, bool))

    @property
    def n_intervals(self) -> int:
        return len(self.thresholds) + 1

    @cached_property
    def _cumulative_up(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.tie == UP)])

    def reference_index(self, x: np.ndarray) -> np.ndarray:
        """Interval index of every element of ``x`` (any float dtype), the plain, obviously-correct way."""
        with np.errstate(invalid="ignore"):  # signalling NaN patterns convert quietly
            x = np.asarray(x, dtype=np.float64)
        t = self.thresholds
        below = np.searchsorted(t, x, side="left")  # thresholds strictly below x: passed
        upto = np.searchsorted(t, x, side="right")  # thresholds equal to x: [below, upto)
        passed = below + (self._cumulative_up[upto] - self._cumulative_up[below])
        by_sign = (self.tie == BY_SIGN)
        if by_sign.any():  # a signed-zero threshold is passed by +0.0 only
            for j in np.flatnonzero(by_sign):
                hit = (x == t[j]) & ~np.signbit(x)
                passed = passed + hit
        idx = passed.astype(np.int64)
        idx[np.isnan(x)] = self.nan_index
        idx[np.isposinf(x)] = self.pinf_index
        idx[np.isneginf(x)] = self.ninf_index
        return idx

    @cached_property
    def float32_values(self) -> np.ndarray:
        """Values as float32: correctly rounded, never overflowing to inf from a finite value."""
        if self.values32 is not None:
            return self.values32
        return _to_finite(self.values, np.float32)


def exact_midpoints(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints of ``a`` and ``b`` rounded to float64, and the sign of (rounded - exact) (0: exact).

    ``(a + b) / 2`` is exact for neighbours of similar size (every minifloat, posit, integer), but not for
    arbitrary codebook values such as 0 < 1e-38 < 1: there ``a + b`` rounds, and which side of the true
    midpoint the float64 threshold falls decides the tie. Inexact cases are settled with Fractions.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        s = a + b
        bb = s - a
        err = (a - (s - bb)) + (b - bb)  # TwoSum: a + b == s + err exactly (when s is finite)
        mid = s / 2
    side = np.zeros(a.shape, dtype=np.int8)
    tiny = np.abs(s) < 2.0**-1000  # halving could lose a bit
    for i in np.flatnonzero((err != 0) | ~np.isfinite(s) | tiny):
        exact = (Fraction(float(a[i])) + Fraction(float(b[i]))) / 2
        m = float(exact)
        mid[i] = m
        side[i] = (Fraction(m) > exact) - (Fraction(m) < exact)
    return mid, side


def _to_finite(values: np.ndarray, dtype: type) -> np.ndarray:
    finfo = np.finfo(dtype)
    finite = np.isfinite(values)
    clipped = np.where(finite, np.clip(values, float(finfo.min), float(finfo.max)), values)
    return clipped.astype(dtype)

"""Rounding as a parameter: the mode, the overflow policy and subnormal flushing, as one frozen :class:`Rounding`,
and the :class:`~dtypelab.kernels.table.RoundingTable` that realises it for a format (:func:`table_for`).

Canonical string ``MODE[+OVERFLOW][+daz][+ftz]``; the default ``rne`` (saturating, subnormals kept) is what every
format has always done. Modes (one table constructor each, in :data:`MODES`):

* ``rne`` nearest, ties to the even code (for posits: the even bit pattern, the Posit Standard's rounding);
* ``rna`` nearest, ties away from zero (ties are exact midpoints; a format's irrational thresholds are not ties);
* ``rz`` toward zero, ``ru`` toward +inf, ``rd`` toward -inf: a directed table's thresholds are the values
  themselves (a codebook without zero rounds inputs between its two neighbours of zero toward the one of their
  sign: the only monotone choice);
* ``ro`` to odd: an exact input stays, any other goes to the neighbour whose code is odd (where both or neither
  neighbour is odd, as in some codebooks: toward zero);
* ``sr`` / ``srK`` stochastic: up (away from zero) with probability ``floor(delta * 2^K) / 2^K``, ``delta`` the
  position of ``|x|`` between its neighbours toward and away from zero (``delta`` in the linear domain for every
  family, LP included: unbiased in value, not in ``log2``). ``K`` random bits (1..32) are compared with the
  remainder truncated to ``K`` bits, as IEEE P3109 defines stochastic rounding and hardware adds random bits below
  the last kept bit; plain ``sr`` uses 64 random bits (probabilities exact to 2^-64). The random bits come from a
  counter-based generator keyed by one seed drawn from a ``torch.Generator`` (:mod:`dtypelab.kernels.random`).

Overflow policies (finite inputs beyond ±max, and ±inf inputs):

* ``saturate`` (default): finite overflow goes to ±max; ±inf stays ±inf where the format has infinities, else
  takes the format's own rule (±max for floats, NaR for posits).
* ``satfinite`` (P3109 SatFinite): finite overflow and ±inf go to ±max.
* ``satpropagate`` (P3109 SatPropagate): finite overflow goes to ±max; ±inf stays ±inf, or NaN without infinities.
* ``ovfinf`` (P3109 OvfInf, IEEE 754): a result that the mode rounds beyond ±max (on the format's grid continued
  past max) is ±inf, or NaN without infinities; ±inf stays ±inf (NaN). Toward zero and to odd never overflow a
  finite input; toward -inf never overflows a positive one, toward +inf never a negative one.

Subnormals (floats with subnormals only): ``daz`` treats inputs of magnitude below the smallest normal as zero
(keeping their sign), ``ftz`` flushes subnormal results to zero; both may be given.

Example:
    >>> r = Rounding.parse("sr8+ovfinf")
    >>> r.mode, r.random_bits, r.overflow, str(r)
    ('sr', 8, 'ovfinf', 'sr8+ovfinf')
    >>> str(Rounding.parse("toward-zero+ftz")), Rounding() == Rounding.parse("rne")
    ('rz+ftz', True)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from dtypelab.kernels.engine import StochasticEngine
from dtypelab.kernels.table import BY_SIGN, DOWN, UP, RoundingTable, exact_midpoints

MAX_RANDOM_BITS = 32
UNLIMITED_BITS = 64  # what plain ``sr`` compares


class Roundable(Protocol):
    """What :func:`table_for` reads of a format (named here: formats import the kernels, not the reverse)."""

    bits: int

    @property
    def nan_code(self) -> int | None: ...

    @property
    def above_max(self) -> float | None: ...

    @property
    def min_normal(self) -> float | None: ...

    def nearest_table(self) -> RoundingTable: ...


# ---- the value -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """A rounding mode: its canonical token, long name, whether it is stochastic, and how it sets the thresholds
    between neighbouring values (``gaps``) and at the overflow edge of each sign (``edge``)."""

    name: str
    long_name: str
    description: str
    gaps: Callable[[_Sorted, RoundingTable], tuple[np.ndarray, np.ndarray]]
    edge: Callable[[int], str]  # sign (+1 / -1) -> NEAREST_EVEN, NEAREST_AWAY, AT_MAX or NEVER
    stochastic: bool = False


MODES: dict[str, Mode] = {}
OVERFLOW = {
    "saturate": "finite overflow to ±max; ±inf kept where the format has it (the default)",
    "satfinite": "finite overflow and ±inf to ±max (P3109 SatFinite)",
    "satpropagate": "finite overflow to ±max; ±inf kept, or NaN without infinities (P3109 SatPropagate)",
    "ovfinf": "results rounded beyond ±max become ±inf, or NaN without infinities (P3109 OvfInf)",
}
SUBNORMAL_FLAGS = {"daz": "inputs below the smallest normal count as zero", "ftz": "subnormal results become zero"}


def register_mode(mode: Mode) -> Mode:
    """Make ``mode`` available under its token and long name."""
    MODES[mode.name] = mode
    return mode


def mode_of(token: str) -> Mode:
    """The mode named ``token`` (canonical or long name); a miss lists the valid names."""
    for mode in MODES.values():
        if token in (mode.name, mode.long_name):
            return mode
    valid = ", ".join(f"{m.name} ({m.long_name})" for m in MODES.values())
    raise ValueError(f"unknown rounding mode {token!r}; valid: {valid}, srK for K random bits (1..{MAX_RANDOM_BITS})")


@dataclass(frozen=True)
class Rounding:
    """How results are rounded: ``mode`` (a :data:`MODES` name), ``random_bits`` (stochastic modes only: 1..32, None
    for 64), ``overflow`` (an :data:`OVERFLOW` policy), ``flush_inputs`` (daz) and ``flush_outputs`` (ftz).

    Example:
        >>> Rounding("rd", overflow="ovfinf")
        Rounding('rd+ovfinf')
        >>> Rounding("sr", random_bits=40)
        Traceback (most recent call last):
        ...
        ValueError: random_bits must be an integer in 1..32 (or None: 64 bits), got 40
    """

    mode: str = "rne"
    random_bits: int | None = None
    overflow: str = "saturate"
    flush_inputs: bool = False
    flush_outputs: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", mode_of(self.mode).name)
        if self.random_bits is not None:
            if not self.stochastic:
                raise ValueError(f"random_bits applies to stochastic rounding only, not {self.mode!r}")
            if not isinstance(self.random_bits, int) or isinstance(self.random_bits, bool) \
                    or not 1 <= self.random_bits <= MAX_RANDOM_BITS:
                raise ValueError(f"random_bits must be an integer in 1..{MAX_RANDOM_BITS} (or None: "
                                 f"{UNLIMITED_BITS} bits), got {self.random_bits!r}")
        if self.overflow not in OVERFLOW:
            raise ValueError(f"unknown overflow policy {self.overflow!r}; valid: {', '.join(OVERFLOW)}")
        for name in ("flush_inputs", "flush_outputs"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Rounding: {name} must be a bool, got {getattr(self, name)!r}")

    @property
    def stochastic(self) -> bool:
        return MODES[self.mode].stochastic

    @property
    def bits_compared(self) -> int:
        """Random bits a stochastic decision compares (64 for plain ``sr``)."""
        return self.random_bits if self.random_bits is not None else UNLIMITED_BITS

    @property
    def is_default(self) -> bool:
        return self == DEFAULT

    def __str__(self) -> str:
        parts = [self.mode + (str(self.random_bits) if self.random_bits is not None else "")]
        if self.overflow != "saturate":
            parts.append(self.overflow)
        parts += [flag for flag, on in (("daz", self.flush_inputs), ("ftz", self.flush_outputs)) if on]
        return "+".join(parts)

    def __repr__(self) -> str:
        return f"Rounding({str(self)!r})"

    @classmethod
    def parse(cls, spec: str | Rounding | None) -> Rounding:
        """``MODE[+OVERFLOW][+daz][+ftz]`` (long names accepted); None or ``""`` is the default."""
        if isinstance(spec, Rounding):
            return spec
        if spec is None:
            return DEFAULT
        if not isinstance(spec, str):
            raise TypeError(f"a rounding spec must be a string or Rounding, got {type(spec).__name__}")
        return _parse(spec.strip().lower().replace(" ", ""))


@lru_cache(maxsize=256)
def _parse(text: str) -> Rounding:
    if not text:
        return DEFAULT
    head, *rest = text.split("+")
    counted = re.fullmatch(r"(sr|stochastic)(\d+)", head)
    kwargs: dict[str, object] = {"mode": counted.group(1) if counted else head}
    if counted:
        kwargs["random_bits"] = int(counted.group(2))
    for token in rest:
        if token in OVERFLOW and "overflow" not in kwargs:
            kwargs["overflow"] = token
        elif token == "daz" and "flush_inputs" not in kwargs:
            kwargs["flush_inputs"] = True
        elif token == "ftz" and "flush_outputs" not in kwargs:
            kwargs["flush_outputs"] = True
        else:
            raise ValueError(f"bad rounding part {token!r} in {text!r}: after the mode come, each at most once, an "
                             f"overflow policy ({', '.join(OVERFLOW)}), daz and ftz")
    return Rounding(**kwargs)  # type: ignore[arg-type]


# ---- the tables ----------------------------------------------------------------------------------------------

NEAREST_EVEN, NEAREST_AWAY, AT_MAX, NEVER = "nearest-even", "nearest-away", "at-max", "never"


@dataclass(frozen=True)
class _Sorted:
    """A format's finite values in order (-0.0 before +0.0), their codes, float32 values where a cast is not
    correctly rounded (LP), and whether the format is signed."""

    values: np.ndarray
    codes: np.ndarray
    values32: np.ndarray | None
    signed: bool  # negative values, or at least -inf (binary2p1se's only negative)

    @classmethod
    def of(cls, t: RoundingTable) -> _Sorted:
        k = t.n_intervals
        signed = bool(t.values[0] < 0 or np.isneginf(t.values[t.ninf_index]))
        return cls(t.values[:k], t.codes[:k], None if t.values32 is None else t.values32[:k], signed)

    @property
    def zero_pair(self) -> np.ndarray:
        """Per gap, whether it is the -0.0 / +0.0 pair (its threshold is 0 with ties by sign in every mode)."""
        return (self.values[:-1] == 0) & (self.values[1:] == 0)


def _nearest_even(s: _Sorted, nearest: RoundingTable) -> tuple[np.ndarray, np.ndarray]:
    return nearest.thresholds.copy(), nearest.tie.copy()


def _nearest_away(s: _Sorted, nearest: RoundingTable) -> tuple[np.ndarray, np.ndarray]:
    t, tie = nearest.thresholds.copy(), nearest.tie.copy()
    exact = nearest.exact_tie if nearest.exact_tie is not None else np.zeros(len(t), bool)
    tie[exact] = np.where(t[exact] > 0, UP, np.where(t[exact] < 0, DOWN, BY_SIGN))
    return t, tie


def _down(s: _Sorted, nearest: RoundingTable) -> tuple[np.ndarray, np.ndarray]:
    return s.values[1:].copy(), np.full(len(s.values) - 1, UP, np.int8)


def _up(s: _Sorted, nearest: RoundingTable) -> tuple[np.ndarray, np.ndarray]:
    return s.values[:-1].copy(), np.full(len(s.values) - 1, DOWN, np.int8)


def _toward_zero(s: _Sorted, nearest: RoundingTable) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = s.values[:-1], s.values[1:]
    t = np.where(hi <= 0, lo, np.where(lo >= 0, hi, 0.0))
    tie = np.where(hi <= 0, DOWN, np.where(lo >= 0, UP, BY_SIGN)).astype(np.int8)
    return t, tie


def _to_odd(s: _Sorted, nearest: RoundingTable) -> tuple[np.ndarray, np.ndarray]:
    t, tie = _toward_zero(s, nearest)
    lo_odd, hi_odd = s.codes[:-1] % 2 == 1, s.codes[1:] % 2 == 1
    to_lo, to_hi = lo_odd & ~hi_odd, hi_odd & ~lo_odd
    t = np.where(to_lo, s.values[1:], np.where(to_hi, s.values[:-1], t))
    tie = np.where(to_lo, UP, np.where(to_hi, DOWN, tie)).astype(np.int8)
    return t, tie


for _mode in (
    Mode("rne", "nearest-even", "nearest, ties to the even code", _nearest_even, lambda sign: NEAREST_EVEN),
    Mode("rna", "nearest-away", "nearest, ties away from zero", _nearest_away, lambda sign: NEAREST_AWAY),
    Mode("rz", "toward-zero", "the nearest value no larger in magnitude", _toward_zero, lambda sign: NEVER),
    Mode("ru", "toward-positive", "the smallest value >= x", _up, lambda sign: AT_MAX if sign > 0 else NEVER),
    Mode("rd", "toward-negative", "the largest value <= x", _down, lambda sign: AT_MAX if sign < 0 else NEVER),
    Mode("ro", "to-odd", "exact inputs kept, others to the neighbour with an odd code", _to_odd, lambda sign: NEVER),
    Mode("sr", "stochastic", "away from zero with probability (|x| - |lower|) / (|upper| - |lower|), to K bits",
         _toward_zero, lambda sign: NEVER, stochastic=True),
):
    register_mode(_mode)


def _overflow_result(f: Roundable, nearest: RoundingTable, sign: int) -> tuple[float, int]:
    """(value, code) of an overflow on the side of ``sign``: ±inf where the format has it, else its NaN."""
    index = nearest.pinf_index if sign > 0 else nearest.ninf_index
    if np.isinf(nearest.values[index]) and np.sign(nearest.values[index]) == sign:
        return float(nearest.values[index]), int(nearest.codes[index])
    if f.nan_code is None:
        raise ValueError(f"{f} has neither infinities nor NaN: overflow policies 'ovfinf' and 'satpropagate' need "
                         f"one of them; valid for {f}: saturate, satfinite")
    return float("nan"), int(f.nan_code)


def _edge(kind: str, top: float, above: float | None, top_code: int) -> tuple[float, int] | None:
    """Threshold and tie past which a positive input overflows (None: never), for the top value ``top``."""
    if kind == NEVER:
        return None
    if kind == AT_MAX or above is None:
        return top, DOWN
    mid, side = exact_midpoints(np.array([top]), np.array([above]))
    if side[0]:
        return float(mid[0]), UP if side[0] > 0 else DOWN
    away = kind == NEAREST_AWAY or top_code % 2 == 1  # the continued grid's next code has the other parity
    return float(mid[0]), UP if away else DOWN


def _overflow_edge(f: Roundable, s: _Sorted, mode: Mode, sign: int, truncating: bool) -> tuple[float, int] | None:
    """Threshold and tie (for the positive side; mirrored by the caller) past which an input of ``sign`` overflows
    under ``ovfinf``, or None (never, or no values of that sign)."""
    if sign < 0 and not s.signed:
        return None  # unsigned: negative inputs saturate to the lowest value
    end = -1 if sign > 0 else 0
    top = abs(float(s.values[end]))
    if truncating:  # stochastic: overflow intervals start at the grid's next value
        return (f.above_max, UP) if f.above_max is not None else (top, DOWN)
    return _edge(mode.edge(sign), top, f.above_max, int(s.codes[end]))


def table_for(f: Roundable, rounding: Rounding, truncating: bool = False) -> RoundingTable:
    """The table of ``rounding``'s deterministic mode for ``f`` (with ``truncating``: the toward-zero table a
    stochastic mode starts from, whose overflow intervals begin at the continued grid's next value, unflushed).

    Example:
        >>> from dtypelab import fmt
        >>> t = table_for(fmt("int4"), Rounding("rd"))
        >>> t.values[t.reference_index(np.array([2.5, -2.5, 9.0]))].tolist()
        [2.0, -3.0, 7.0]
    """
    _check_possible(f, rounding)
    nearest = f.nearest_table()
    s = _Sorted.of(nearest)
    mode = MODES[rounding.mode]
    t, tie = mode.gaps(s, nearest)
    t[s.zero_pair], tie[s.zero_pair] = 0.0, BY_SIGN
    values, codes, values32 = list(s.values), list(s.codes), None if s.values32 is None else list(s.values32)
    thresholds, ties = list(t), list(tie)
    pinf = (float(nearest.values[nearest.pinf_index]), int(nearest.codes[nearest.pinf_index]))
    ninf = (float(nearest.values[nearest.ninf_index]), int(nearest.codes[nearest.ninf_index]))
    if rounding.overflow == "satfinite":
        pinf, ninf = (values[-1], codes[-1]), (values[0], codes[0])
    elif rounding.overflow in ("satpropagate", "ovfinf"):
        pinf = _overflow_result(f, nearest, +1)
        ninf = _overflow_result(f, nearest, -1) if s.signed else (float("nan"), int(f.nan_code))  # type: ignore
    if rounding.overflow == "ovfinf":
        for sign in (+1, -1):
            edge = _overflow_edge(f, s, mode, sign, truncating)
            if edge is None:
                continue
            at, at_tie = edge
            value, code = pinf if sign > 0 else ninf
            if sign > 0:
                values, codes, thresholds, ties = values + [value], codes + [code], thresholds + [at], ties + [at_tie]
            else:  # mirrored: x == -t passes where x == t does not
                values, codes = [value, *values], [code, *codes]
                thresholds, ties = [-at, *thresholds], [UP + DOWN - at_tie, *ties]
            if values32 is not None:
                values32 = values32 + [np.float32(value)] if sign > 0 else [np.float32(value), *values32]
    table = RoundingTable.with_specials(np.array(values), np.array(codes), np.array(thresholds),
                                        np.array(ties, np.int8), nan=(np.nan, nearest.codes[nearest.nan_index]),
                                        pinf=pinf, ninf=ninf,
                                        values32=None if values32 is None else np.array(values32, np.float32))
    if rounding.flush_inputs and not truncating:
        table = flush_inputs(table, f.min_normal)  # type: ignore[arg-type]
    if rounding.flush_outputs and not truncating:
        table = flush_outputs(table, f.min_normal)  # type: ignore[arg-type]
    return table


def stochastic_engine(f: Roundable, rounding: Rounding) -> StochasticEngine:
    """The engine of a stochastic ``rounding`` for ``f``: the truncating table, each interval's position (an
    overflow interval sits at the continued grid's next value), the flushed results and the daz bound."""
    truncating = table_for(f, rounding, truncating=True)
    results = flush_outputs(truncating, f.min_normal) if rounding.flush_outputs else truncating  # type: ignore
    k = truncating.n_intervals
    positions = truncating.values[:k].copy()
    beyond = ~np.isfinite(positions)
    above = f.above_max if f.above_max is not None else np.inf
    positions[beyond] = np.where(np.arange(k)[beyond] == 0, -above, above)
    flush_below = (f.min_normal or 0.0) if rounding.flush_inputs else 0.0
    return StochasticEngine(truncating, results, positions, f.bits, rounding.bits_compared, flush_below)


def _check_possible(f: Roundable, rounding: Rounding) -> None:
    if (rounding.flush_inputs or rounding.flush_outputs) and f.min_normal is None:
        raise ValueError(f"{f} has no subnormals to flush: 'daz' and 'ftz' apply to floats with subnormals")


def flush_outputs(t: RoundingTable, min_normal: float) -> RoundingTable:
    """``t`` with every subnormal result replaced by the zero of its sign (+0 where the format has no -0)."""
    k = t.n_intervals
    values, codes = t.values.copy(), t.codes.copy()
    zero_codes = {bool(np.signbit(v)): c for v, c in zip(values[:k], codes[:k], strict=True) if v == 0}
    tiny = np.flatnonzero((values[:k] != 0) & (np.abs(values[:k]) < min_normal))
    for i in tiny:
        negative = bool(values[i] < 0) and True in zero_codes
        values[i] = -0.0 if negative else 0.0
        codes[i] = zero_codes[negative]
    values32 = None if t.values32 is None else t.values32.copy()
    if values32 is not None:
        values32[tiny] = values[tiny]
    return RoundingTable(values, codes, t.thresholds, t.tie, t.nan_index, t.pinf_index, t.ninf_index, values32)


def flush_inputs(t: RoundingTable, min_normal: float) -> RoundingTable:
    """``t`` where every input of magnitude below ``min_normal`` rounds as a zero of its sign."""
    k = t.n_intervals
    lo = int(t.reference_index(np.array([-min_normal]))[0])  # thresholds passed at -min_normal: kept
    hi = int(t.reference_index(np.array([min_normal]))[0])  # intervals from min_normal on: kept
    zeros = [i for i in range(k) if t.values[i] == 0]
    thresholds = [*t.thresholds[:lo], -min_normal]
    ties = [*t.tie[:lo], DOWN]
    if len(zeros) == 2:  # -0.0 and +0.0
        thresholds.append(0.0), ties.append(BY_SIGN)
    thresholds += [min_normal, *t.thresholds[hi:]]
    ties += [UP, *t.tie[hi:]]
    keep = [*range(lo + 1), *zeros, *range(hi, k)]
    extra = [t.nan_index, t.pinf_index, t.ninf_index]
    values32 = None if t.values32 is None else t.values32[keep + extra]
    return RoundingTable(t.values[keep + extra], t.codes[keep + extra], np.array(thresholds, np.float64),
                         np.array(ties, np.int8), len(keep), len(keep) + 1, len(keep) + 2, values32)


__all__ = ["Rounding", "Mode", "MODES", "OVERFLOW", "SUBNORMAL_FLAGS", "DEFAULT", "register_mode", "mode_of",
           "table_for", "stochastic_engine", "flush_inputs", "flush_outputs", "MAX_RANDOM_BITS"]

DEFAULT = Rounding()

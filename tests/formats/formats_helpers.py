"""Shared helpers for the format tests: input sets and slow, obviously-correct references.

Nothing here uses dtypelab's rounding (``float_formats`` only builds formats); references are written from
the format definitions (REFERENCE.md §1).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from hypothesis import strategies as st

from dtypelab.formats.float import Domain, FloatFormat


def probe_inputs(values: np.ndarray, *, rng: np.random.Generator | None = None, n_random: int = 20_000,
                 dtype: type = np.float64) -> np.ndarray:
    """Every value, every arithmetic midpoint and its float neighbours, out-of-range and log-uniform inputs.

    ``values`` is the sorted finite value set (float64). Both signs are included; NaN and infinities are not.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return _probe_inputs(values, rng, n_random, dtype)


def _probe_inputs(values: np.ndarray, rng: np.random.Generator | None, n_random: int, dtype: type) -> np.ndarray:
    v = np.unique(np.asarray(values, dtype=np.float64))
    mids = (v[:-1] + v[1:]) / 2
    pts = np.concatenate([v, mids]).astype(dtype)
    up = np.nextafter(pts, dtype(np.inf))
    down = np.nextafter(pts, dtype(-np.inf))
    vmax = float(np.abs(v).max())
    pos = v[v > 0]
    vmin = float(pos.min()) if pos.size else 1.0
    big = np.array([vmax * 1.0001, vmax * 2, vmax * 1e6, 1e30, np.finfo(dtype).max], dtype=np.float64)
    small = np.array([vmin / 2, vmin / 3, vmin * 0.9999, 1e-30, np.finfo(dtype).tiny, 0.0], dtype=np.float64)
    rng = rng or np.random.default_rng(0)
    lo, hi = sorted((math.log10(vmin) - 2, math.log10(vmax) + 2))
    rand = 10.0 ** rng.uniform(lo, hi, n_random)
    everything = np.concatenate([pts, up, down, big.astype(dtype), small.astype(dtype), rand.astype(dtype)])
    everything = np.concatenate([everything, -everything]).astype(dtype)
    return everything[np.isfinite(everything)]


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def posit_value(p: int, n: int, es: int) -> Fraction | None:
    """Exact value of the n-bit posit pattern ``p`` from the Posit Standard's definition (None for NaR)."""
    p &= (1 << n) - 1
    if p == 0:
        return Fraction(0)
    if p == 1 << (n - 1):
        return None
    sign = p >> (n - 1)
    if sign:
        p = (1 << n) - p
    bits = format(p, f"0{n}b")[1:]  # after the sign
    first = bits[0]
    m = len(bits) - len(bits.lstrip(first))
    k = m - 1 if first == "1" else -m
    rest = bits[m + 1:]
    e_bits = (rest[:es]).ljust(es, "0")
    e = int(e_bits, 2) if es else 0
    f_bits = rest[es:]
    f = Fraction(int(f_bits, 2), 1 << len(f_bits)) if f_bits else Fraction(0)
    value = Fraction(2) ** ((k << es) + e) * (1 + f)
    return -value if sign else value


def posit_round(x: float, n: int, es: int) -> int:
    """The posit(n, es) pattern of the float ``x``: the exact bit string of ``|x|``, rounded RNE to n-1 bits.

    NaN and infinities give NaR; a nonzero never rounds to zero; saturates at maxpos.
    """
    if math.isnan(x) or math.isinf(x):
        return 1 << (n - 1)
    if x == 0:
        return 0
    fr, ex = math.frexp(abs(x))  # |x| = fr * 2^ex, 0.5 <= fr < 1, fr has at most 53 significant bits
    scale = ex - 1
    k, e = scale >> es, scale & ((1 << es) - 1)
    regime = "1" * (k + 1) + "0" if k >= 0 else "0" * (-k) + "1"
    frac = format(int(fr * 2**53), "053b")[1:]  # the 52 bits after the leading 1
    body = regime + (format(e, f"0{es}b") if es else "") + frac
    maxpos = (1 << (n - 1)) - 1
    if len(regime) > n - 1:  # beyond the regime range: saturate (never to zero)
        p = maxpos if k >= 0 else 1
    else:
        kept, rest = body[: n - 1].ljust(n - 1, "0"), body[n - 1:]
        p = int(kept, 2)
        if rest and rest[0] == "1" and ("1" in rest[1:] or p & 1):
            p += 1
        p = min(max(p, 1), maxpos)
    return ((1 << n) - p) & ((1 << n) - 1) if x < 0 else p


def float_value(code: int, width: int, precision: int, bias: int, signed: bool, extended: bool,
                negative_zero: bool, high_nans: int, subnormals: bool) -> float:
    """Value of ``code`` in the float format these parameters define, read from its bit string (NaN for NaN).

    Layout: [sign] exponent field, ``precision - 1`` fraction bits. Per sign, the top ``high_nans`` codes are
    NaN and, in an extended format, the code below them is inf; a signed format without negative zero has a
    NaN at 10...0; without subnormals exponent field 0 is an ordinary binade.
    """
    bits = format(code, f"0{width}b")
    negative, body = (bits[0] == "1", bits[1:]) if signed else (False, bits)
    index, count = int(body, 2), 1 << len(body)
    if (negative and index == 0 and not negative_zero) or index >= count - high_nans:
        return math.nan
    if extended and index == count - 1 - high_nans:
        return -math.inf if negative else math.inf
    exp_bits = len(body) - (precision - 1)
    exp = int(body[:exp_bits], 2) if exp_bits else 0
    frac_bits = body[exp_bits:]
    f = Fraction(int(frac_bits, 2), 1 << len(frac_bits)) if frac_bits else Fraction(0)
    mag = f * Fraction(2) ** (1 - bias) if exp == 0 and subnormals else (1 + f) * Fraction(2) ** (exp - bias)
    return -float(mag) if negative else float(mag)


@st.composite
def float_formats(draw, max_bits: int = 12) -> FloatFormat:
    """Any parameters of the float family (signed or not, finite or extended, NaN placement, subnormals),
    with every value inside float32's range (as every named float: the tests' float32 expectations need it)."""
    width = draw(st.integers(2, max_bits))
    signed = draw(st.booleans())
    precision = draw(st.integers(max(1, width - signed - 7), width - signed))  # at most 8 exponent bits
    exp_bits, subnormals = width - signed - (precision - 1), draw(st.booleans())
    lowest = 1 - (precision - 1) if subnormals else 0  # log2 of the smallest value, plus the bias
    bias = draw(st.integers(max(-3, (1 << exp_bits) - 1 - 127), min((1 << exp_bits) + 1, 149 + lowest)))
    domain = draw(st.sampled_from(list(Domain)))
    most = (1 << (width - signed)) - 2 - (domain == Domain.EXTENDED)
    if most < 0:
        domain, most = Domain.FINITE, most + 1
    return FloatFormat(width, precision, bias, signed=signed, domain=domain,
                       negative_zero=signed and draw(st.booleans()), high_nans=draw(st.integers(0, min(most, 5))),
                       subnormals=subnormals)

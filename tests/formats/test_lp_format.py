"""Logarithmic posit LP(n, es, rs, sf): the definition of REFERENCE.md §1, checked independently.

An independent string-based decoder gives the exact log2 of every pattern; values are checked against
Decimal 2^q correctly rounded; rounding against brute-force nearest-in-log2 (float64, away from ties).
"""

from __future__ import annotations

import math
import time
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest
import torch
from formats_helpers import t

import dtypelab as dl
from dtypelab.formats.lp import _lp_tables

CONFIGS = ["lp(8,2,2,0)", "lp(6,1,2,0)", "lp(8,0,7,0)", "lp(8,1,3,0.5)", "lp(10,2,4,-1.25)", "lp(5,2,4,0)",
           "lp(7,3,6,2)", "lp(12,1,11,0.3)", "lp(4,0,1,0)", "lp(16,1,15,0)", "lp(16,2,5,0.7)"]


def lp_log2(p: int, n: int, es: int, rs: int, sf: float) -> Fraction | None:
    """Exact log2|value| of the n-bit LP pattern ``p`` (None for zero and NaR), read off the bit string."""
    p &= (1 << n) - 1
    if p == 0 or p == 1 << (n - 1):
        return None
    if p >> (n - 1):
        p = (1 << n) - p
    bits = format(p, f"0{n}b")[1:]
    first = bits[0]
    m = 0
    while m < len(bits) and m < rs and bits[m] == first:
        m += 1
    k = m - 1 if first == "1" else -m
    rest = bits[m + (1 if m < rs else 0):]
    e = int(rest[:es].ljust(es, "0"), 2) if es else 0
    frac = rest[es:]
    f = Fraction(int(frac, 2), 2 ** len(frac)) if frac else Fraction(0)
    return Fraction(k * 2**es + e) + f - Fraction(sf)


def exact_value(q: Fraction) -> float:
    with localcontext() as ctx:
        ctx.prec = 50
        return float(Decimal(2) ** (Decimal(q.numerator) / Decimal(q.denominator)))


def _params(spec: str) -> tuple[int, int, int, float]:
    f = dl.fmt(spec)
    return f.n, f.es, f.rs, f.sf


def test_lp_8_2_2_0_is_exactly_the_powers_of_2_to_the_i_over_8() -> None:
    f = dl.fmt("lp(8,2,2,0)")
    v = f.values().numpy()
    assert v.size == 255 and np.count_nonzero(v == 0) == 1
    expected = np.array([exact_value(Fraction(i, 8)) for i in range(-63, 64)])
    np.testing.assert_array_equal(v[v > 0], expected)
    np.testing.assert_array_equal(v[v < 0], -expected[::-1])


@pytest.mark.parametrize("spec", CONFIGS)
def test_lp_values_are_correctly_rounded_powers_of_two(spec: str) -> None:
    n, es, rs, sf = _params(spec)
    f = dl.fmt(spec)
    rng = np.random.default_rng(n)
    codes = np.arange(1 << n) if n <= 10 else rng.integers(0, 1 << n, 1500)
    got = f.decode(t(codes), torch.float64).numpy()
    for c, g in zip(codes.tolist(), got.tolist(), strict=True):
        q = lp_log2(c, n, es, rs, sf)
        if q is None:
            assert g == 0 if c == 0 else math.isnan(g)
        else:
            sign = -1.0 if c >> (n - 1) else 1.0
            assert g == sign * exact_value(q), (spec, c)


@pytest.mark.parametrize(("n", "es"), [(5, 0), (6, 1), (8, 0), (8, 1), (8, 2), (10, 3), (12, 2)])
def test_lp_with_full_regime_has_the_binades_of_posit(n: int, es: int) -> None:
    codes = t(np.arange(1 << n))
    lp = dl.fmt(f"lp({n},{es},{n - 1},0)").decode(codes, torch.float64).numpy()
    po = dl.fmt(f"posit({n},{es})").decode(codes, torch.float64).numpy()
    ok = np.isfinite(po) & (po != 0)
    np.testing.assert_array_equal(np.isnan(lp), np.isnan(po))
    np.testing.assert_array_equal(np.sign(lp[ok]), np.sign(po[ok]))
    np.testing.assert_array_equal(np.frexp(lp[ok])[1], np.frexp(po[ok])[1])  # same binade, code by code
    powers = ok & (np.frexp(np.abs(po))[0] == 0.5)
    np.testing.assert_array_equal(lp[powers], po[powers])  # f = 0: the same powers of two


@pytest.mark.parametrize("spec", CONFIGS)
def test_lp_rounds_to_nearest_in_the_log_domain(spec: str) -> None:
    f = dl.fmt(spec)
    v = f.values().numpy()
    pos = v[v > 0]
    lv = np.log2(pos)
    rng = np.random.default_rng(len(spec))
    lx = rng.uniform(lv[0], lv[-1], 20_000)
    x = np.exp2(lx)
    lx = np.log2(x)
    i = np.clip(np.searchsorted(lv, lx), 1, lv.size - 1)
    d_lo, d_hi = lx - lv[i - 1], lv[i] - lx
    clear = np.abs(d_lo - d_hi) > 1e-9  # away from ties
    nearest = np.where(d_lo < d_hi, pos[i - 1], pos[i])
    q = f.quantize(t(x)).numpy()
    np.testing.assert_array_equal(q[clear], nearest[clear])
    np.testing.assert_array_equal(f.quantize(t(-x)).numpy()[clear], -nearest[clear])
    for dtype in (torch.float32,):  # float32 inputs: the same rule, output correctly rounded to float32
        x32 = x.astype(np.float32)
        lx32 = np.log2(x32.astype(np.float64))
        j = np.clip(np.searchsorted(lv, lx32), 1, lv.size - 1)
        e_lo, e_hi = lx32 - lv[j - 1], lv[j] - lx32
        ok = np.abs(e_lo - e_hi) > 1e-9
        want = np.where(e_lo < e_hi, pos[j - 1], pos[j]).astype(np.float32)
        got = f.quantize(t(x32).to(dtype)).numpy()
        np.testing.assert_array_equal(got[ok], want[ok])


@pytest.mark.parametrize("spec", ["lp(5,2,4,0)", "lp(6,3,5,0)", "lp(4,1,3,0)", "lp(5,2,4,-2)"])
def test_lp_exact_log_ties_go_to_the_even_pattern(spec: str) -> None:
    """Powers of two halfway (in log2) between two powers of two are real ties: the even code wins."""
    f = dl.fmt(spec)
    n, es, rs, sf = _params(spec)
    codes = np.arange(1, 1 << (n - 1))
    logs = [lp_log2(int(c), n, es, rs, sf) for c in codes]
    ties = 0
    for a in range(len(codes) - 1):
        mid = (logs[a] + logs[a + 1]) / 2
        if mid.denominator == 1:
            x = math.ldexp(1.0, mid.numerator)
            even = codes[a] if codes[a] % 2 == 0 else codes[a + 1]
            assert f.encode(torch.tensor([x], dtype=torch.float64)).item() == even
            assert f.encode(torch.tensor([-x], dtype=torch.float64)).item() == (1 << n) - even
            ties += 1
    assert ties > 0


@pytest.mark.parametrize("spec", ["lp(8,2,2,0)", "lp(6,1,2,0.5)", "lp(16,1,15,0)"])
def test_lp_saturates_never_to_zero_and_nan_is_nar(spec: str) -> None:
    f = dl.fmt(spec)
    x = torch.tensor([1e300, -1e300, 1e-300, -1e-300, 0.0, np.inf, -np.inf, np.nan], dtype=torch.float64)
    q = f.quantize(x)
    assert q[:5].tolist() == [f.max, -f.max, f.min_positive, -f.min_positive, 0.0]
    assert torch.isnan(q[5:]).all()
    assert f.encode(x)[5:].tolist() == [1 << (f.bits - 1)] * 3


def test_lp_scale_factor_divides_by_a_power_of_two() -> None:
    base = dl.fmt("lp(8,1,4,0)").values().numpy()
    np.testing.assert_array_equal(dl.fmt("lp(8,1,4,3)").values().numpy(), base / 8)
    shifted = dl.fmt("lp(8,1,4,0.25)").values().numpy()
    np.testing.assert_allclose(shifted, base * 2**-0.25, rtol=2**-51, atol=0)  # two roundings


def test_lp16_tables_build_fast() -> None:
    _lp_tables.cache_clear()
    t0 = time.perf_counter()
    dl.fmt("lp(16,0,15,0.1)").rounding_table()
    assert time.perf_counter() - t0 < 3.0  # was 9-13 s with a Decimal loop over every value

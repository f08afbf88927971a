"""The quire's exact sum: round to odd at 53 bits, against exact rational arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dtypelab.arith import Compute, sum_to_odd
from dtypelab.arith.exact import _sum_to_odd_limbs
from dtypelab.kernels.oddsum import odd_sum


def _round_to_odd_53(x: Fraction) -> float:
    """``x`` truncated to 53 significant bits, the last one set when that dropped anything."""
    if x == 0:
        return 0.0
    mag = abs(x)
    e = mag.numerator.bit_length() - mag.denominator.bit_length()  # 2^e <= mag < 2^(e+1), after the fix-up
    e -= Fraction(2) ** e > mag
    q = mag / Fraction(2) ** (e - 52)
    mant = q.numerator // q.denominator
    mant |= mant != q
    return math.copysign(float(Fraction(mant) * Fraction(2) ** (e - 52)), x)


def _exact(column: list[float]) -> Fraction:
    return sum((Fraction(v) for v in column), Fraction(0))


# finite float64 terms whose sums stay in float64's normal range (the kernel's documented domain)
term = st.one_of(st.just(0.0), st.builds(lambda m, e: math.ldexp(m, e), st.floats(-2, 2, allow_nan=False),
                                         st.integers(-900, 900)))


@settings(max_examples=300, deadline=None)
@given(st.lists(term, min_size=1, max_size=40), st.booleans())
def test_odd_sum_is_the_exact_sum_rounded_to_odd(column, cancel):
    """Any terms (spanning up to 1800 binades), and with half of them cancelled: the exact rational sum rounded
    to odd at 53 bits."""
    if cancel:
        column = column + [-v for v in column[: len(column) // 2]]
    exact = _exact(column)
    if exact != 0 and abs(exact) < 2.0**-1000:
        return  # below float64's normal range
    got = odd_sum(np.array(column)[:, None])[0]
    assert got == _round_to_odd_53(exact)


def test_odd_sum_rounds_correctly_through_float32_after_wide_cancellation():
    """The one later rounding is the exact sum's: 2^60 + 1 + 2^-60 - 2^60 in float32 is 1 (float64 sums to 0);
    1 + 2^-24 + 2^-80 is above float32's tie, so it rounds up (float64 drops the 2^-80 and the tie goes to even)."""
    terms = torch.tensor([[2.0**60, 1.0], [1.0, 2.0**-24], [2.0**-60, 2.0**-80], [-(2.0**60), 0.0]],
                         dtype=torch.float64)
    assert terms.sum(0).float().tolist() == [0.0, 1.0]
    assert sum_to_odd(terms).float().tolist() == [1.0, 1.0 + 2.0**-23]


def test_special_terms_give_the_float64_sum():
    terms = np.array([[np.inf, 1.0, np.nan, 0.0, 1e308], [1.0, -np.inf, 1.0, 0.0, 1e308],
                      [-np.inf, 2.0, 3.0, -0.0, 0.0]])
    got = odd_sum(terms)
    assert np.isnan(got[0]) and got[1] == -np.inf and np.isnan(got[2])
    assert got[3] == 0.0 and not np.signbit(got[3])  # an exact zero: +0
    assert got[4] == np.inf  # past float64's largest


def test_torch_limbs_equal_the_kernel():
    """The torch path (other devices) gives the kernel's bits, on the CPU: random terms over 10 to 600 binades,
    cancelling pairs, zero columns."""
    g = torch.Generator().manual_seed(0)
    for span in (5, 60, 300):
        t = torch.randn(17, 2000, generator=g, dtype=torch.float64) * torch.exp2(
            torch.randint(-span, span, (17, 2000), generator=g).double())
        t[8:16] = -t[:8] * (torch.rand(8, 2000, generator=g) < 0.5)
        t[:, :5] = 0
        got = _sum_to_odd_limbs(t)
        assert torch.equal(got, sum_to_odd(t))
        exact = [_round_to_odd_53(_exact(t[:, j].tolist())) for j in range(0, 2000, 97)]
        assert got[::97].tolist() == exact


@pytest.mark.parametrize("tail,want", [(2.0**-80, 1.0 + 2.0**-27), (-(2.0**-80), 1.0)])
def test_the_quire_rounds_posit32_ties_by_every_bit(tail, want):
    """Round to odd at 53 bits serves outputs of more than 25 bits: posit(32,2) has 28 significant bits near 1,
    and 1 + 2^-28 is its tie between 1 and 1 + 2^-27; a 2^-80 term decides it (the float64 matmul drops it and the
    tie goes to even, 1)."""
    a = torch.tensor([[1.0, 2.0**-28, tail]], dtype=torch.float64)
    b = torch.ones(3, 1, dtype=torch.float64)
    c = Compute.parse({"accumulator": "quire", "output": "posit(32,2)"})
    assert c.matmul(a, b).item() == want
    assert c.output(a @ b).item() == 1.0

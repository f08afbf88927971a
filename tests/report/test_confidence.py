"""Exact binomial intervals: the Clopper-Pearson endpoints solve the binomial tail equations (checked with exact
rational sums, not scipy), proportions are found by their item counts, and corrupt counts are refused."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtypelab.report.confidence import Interval, clopper_pearson, interval


def _tail_at_least(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly."""
    q = Fraction(p)
    return float(sum(comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(k, n + 1)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 120).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_clopper_pearson_endpoints_solve_the_tail_equations(kn):
    k, n = kn
    lo, hi = clopper_pearson(k, n)
    assert 0 <= lo <= k / n <= hi <= 1
    if k > 0:
        assert _tail_at_least(k, n, lo) == pytest.approx(0.025, rel=1e-6)  # P(X >= k | lo) = 2.5 %
    else:
        assert lo == 0
    if k < n:
        assert 1 - _tail_at_least(k + 1, n, hi) == pytest.approx(0.025, rel=1e-6)  # P(X <= k | hi) = 2.5 %
    else:
        assert hi == 1


def test_intervals_of_the_workloads_metrics():
    top1 = interval({"top1": 100 * 355 / 360, "n": 360.0, "loss": 0.1}, "top1")
    assert (top1.k, top1.n) == (355, 360) and top1.lo < top1.value < top1.hi <= 100
    recall = interval({"recall@1": 230 / 435, "n_queries": 435.0}, "recall@1")
    assert (recall.k, recall.n) == (230, 435) and recall.hi < 1
    assert recall.show(3) == "0.529 ± 0.048"
    assert interval({"loss": 0.1, "n": 360.0}, "loss") is None  # not a proportion
    assert interval({"top1": 98.0}, "top1") is None  # no item count recorded: nothing is claimed
    with pytest.raises(ValueError, match="not a share of 360 items"):
        interval({"top1": 98.0, "n": 360.0}, "top1")


def test_overlap_decides_what_differs():
    a, b, c = Interval(0.530, 0.482, 0.578, 230, 435), Interval(0.544, 0.496, 0.592, 236, 435), \
        Interval(0.30, 0.26, 0.34, 130, 435)
    assert a.overlaps(b) and not a.above(b) and not b.above(a)
    assert a.above(c) and not c.above(a) and not a.overlaps(c)

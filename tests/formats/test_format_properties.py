"""Hypothesis property tests for every format family of the format registry (``registry.families()``).

For a random format of each family: quantize is idempotent, monotone, lands in ``values()``, is nearest
(linear formats: no value strictly closer; posits: the exact bit-string reference; LP: nearest in log2),
ties go to the even code, it saturates at ±max, NaN stays NaN (encode raises where there is no NaN code),
encode/decode round-trip on every code, and every input dtype and ``out=`` agree.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from formats_helpers import float_formats, posit_round, probe_inputs, t
from hypothesis import given, settings
from hypothesis import strategies as st

import dtypelab as dl
from dtypelab.formats.float import FloatFormat
from dtypelab.formats.registry import families

MAX_BITS = 12  # random formats stay small so each example is cheap; 16-bit ones are covered elsewhere
# Each example builds a new format (tables, lookup tables): an eighth of the active profile's budget.
EXAMPLES = max(5, settings.default.max_examples // 8)


@st.composite
def posit_specs(draw):
    return f"posit({draw(st.integers(2, MAX_BITS))},{draw(st.integers(0, 4))})"


@st.composite
def lp_specs(draw):
    n = draw(st.integers(3, 10))
    sf = draw(st.sampled_from([0, 1, -2, 0.5, -1.25, 0.3]))
    return f"lp({n},{draw(st.integers(0, 4))},{draw(st.integers(1, n - 1))},{sf})"


@st.composite
def fp_specs(draw):
    e = draw(st.integers(2, 8))
    return f"fp({e},{draw(st.integers(1, MAX_BITS - 1 - e))})" if e < MAX_BITS - 1 else f"fp({e},1)"


@st.composite
def codebook_specs(draw):
    vals = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False, width=32), min_size=2,
                         max_size=40, unique=True))
    return "codebook(" + ",".join(repr(v) for v in sorted(vals)) + ")"


STRATEGIES = {
    "posit": posit_specs(),
    "lp": lp_specs(),
    "fp": fp_specs(),
    "float": float_formats().map(str),
    "int": st.integers(2, MAX_BITS).map(lambda n: f"int({n})"),
    "uint": st.integers(2, MAX_BITS).map(lambda n: f"uint({n})"),
    "dt": st.integers(3, 8).map(lambda n: f"dt({n})"),
    "udt": st.integers(3, 8).map(lambda n: f"udt({n})"),
    "nf4": st.just("nf4"),
    "codebook": codebook_specs(),
}
EXTRA = st.sampled_from(["e4m3", "e3m2", "e2m3", "e2m1", "e4m3fnuz", "e5m2fnuz", "e8m0"])  # reached by name


def test_every_family_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(families()), "add a strategy for the new family"


def _inputs(f: dl.Format, extra: list[float]) -> np.ndarray:
    v = f.values().numpy()
    x = probe_inputs(v, n_random=500, rng=np.random.default_rng(len(v)))
    return np.concatenate([x, np.asarray(extra, dtype=np.float64), [0.0, -0.0]])


def _expected_nearest(f: dl.Format, x: np.ndarray, q: np.ndarray) -> None:
    """No value of values() strictly closer than q (exact Fractions), ties to the even code."""
    v = f.values().numpy()
    xc = np.clip(x, v[0], v[-1])
    i = np.searchsorted(v, xc)
    tie_results = []
    for xi, qi, ii in zip(xc.tolist(), q.tolist(), i.tolist(), strict=True):
        cands = [v[j] for j in (ii - 1, ii) if 0 <= j < v.size]
        dist = [abs(Fraction(c) - Fraction(xi)) for c in cands]
        best = min(dist)
        assert abs(Fraction(qi) - Fraction(xi)) == best, (str(f), xi, qi, cands)
        if len(cands) == 2 and dist[0] == dist[1]:
            tie_results.append(qi)
    if tie_results:
        codes = f.encode(torch.tensor(tie_results, dtype=torch.float64)).numpy()
        assert np.all(codes % 2 == 0), (str(f), np.array(tie_results)[codes % 2 == 1][:5])


def _expected_log_nearest(f: dl.Format, x: np.ndarray, q: np.ndarray) -> None:
    v = f.values().numpy()
    pos = v[v > 0]
    lv = np.log2(pos)
    ax = np.abs(x)
    inside = (ax >= pos[0]) & (ax <= pos[-1])
    lx = np.log2(ax[inside])
    i = np.clip(np.searchsorted(lv, lx), 1, lv.size - 1)
    d_lo, d_hi = lx - lv[i - 1], lv[i] - lx
    clear = np.abs(d_lo - d_hi) > 1e-9
    want = np.where(d_lo < d_hi, pos[i - 1], pos[i]) * np.sign(x[inside])
    np.testing.assert_array_equal(q[inside][clear], want[clear])


def check_format(spec: str) -> None:
    f = dl.fmt(spec)
    assert dl.fmt(str(f)) == f and str(dl.fmt(str(f))) == str(f)  # canonical spec round-trips
    v = f.values().numpy()
    assert np.all(np.diff(v) > 0) and v.dtype == np.float64
    assert f.max == v[-1]
    assert f.min_positive == v[v > 0][0] if (v > 0).any() else math.isnan(f.min_positive)
    x = _inputs(f, [v[-1] * 3 + 1, v[0] * 3 - 1, 1e300, -1e300])
    q = f.quantize(t(x)).numpy()
    # in values(), idempotent, monotone
    assert np.isin(q, v).all(), str(f)
    np.testing.assert_array_equal(f.quantize(t(q)).numpy(), q)
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(q[order]) >= 0)
    # nearest under the format's rule
    if isinstance(f, dl.formats.Posit):
        expected = np.array([posit_round(float(xi), f.n, f.es) for xi in x])
        np.testing.assert_array_equal(f.encode(t(x)).numpy().astype(np.int64), expected)
    elif isinstance(f, dl.formats.LogPosit):
        _expected_log_nearest(f, x, q)
    else:
        rng = np.random.default_rng(0)
        pick = rng.choice(x.size, min(x.size, 400), replace=False)
        _expected_nearest(f, x[pick], q[pick])
        mids = (v[:-1] + v[1:]) / 2  # every tie
        _expected_nearest(f, mids, f.quantize(t(mids)).numpy())
    # saturation
    big = torch.tensor([abs(v[-1]) * 4 + 1, -abs(v[0]) * 4 - 1, 1e300, -1e300], dtype=torch.float64)
    sat = f.quantize(big).tolist()
    assert sat == [v[-1], v[0], v[-1], v[0]]
    if isinstance(f, (dl.formats.Posit, dl.formats.LogPosit)) or (isinstance(f, FloatFormat) and f.signed):
        assert v[0] == -f.max
    # NaN
    nan = torch.tensor([math.nan, 1.0])
    assert torch.isnan(f.quantize(nan)[0])
    if f.nan_code is None:
        with pytest.raises(ValueError, match="NaN"):
            f.encode(nan)
    else:
        assert f.encode(nan)[0].item() == f.nan_code
    # every code round-trips
    codes = torch.arange(1 << f.bits)
    dec = f.decode(codes, torch.float64)
    fin = ~torch.isnan(dec)
    back = f.encode(dec[fin]).long()
    np.testing.assert_array_equal(back.numpy(), codes[fin].numpy())
    # decode(encode(x)) == quantize(x)
    np.testing.assert_array_equal(f.decode(f.encode(t(x)), torch.float64).numpy(), q)
    # input dtypes and out=
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        xd = t(x).to(dtype)
        got = f.quantize(xd)
        assert got.dtype == dtype and got.shape == xd.shape
        if dtype == torch.float32:  # the float64 answer, kept finite in float32
            raw = f.quantize(xd.double())
            kept = raw.clamp(-3.4028234663852886e38, 3.4028234663852886e38)
            want = torch.where(torch.isinf(xd.double()), raw, kept).float()
        else:  # half precision goes through float32 (documented)
            want = f.quantize(xd.float())
        torch.testing.assert_close(got, want.to(dtype), rtol=0, atol=0, equal_nan=True)
        out = torch.empty_like(xd)
        assert f.quantize(xd, out=out) is out
        torch.testing.assert_close(out, got, rtol=0, atol=0, equal_nan=True)
        codes_out = torch.empty(xd.shape, dtype=f.encode(xd[:1]).dtype)
        assert f.encode(xd, out=codes_out) is codes_out
        np.testing.assert_array_equal(codes_out.numpy(), f.encode(xd).numpy())


@pytest.mark.parametrize("family", sorted(STRATEGIES))
def test_family_properties(family: str) -> None:
    @settings(max_examples=EXAMPLES)
    @given(STRATEGIES[family])
    def run(spec: str) -> None:
        check_format(spec)

    run()


@settings(max_examples=EXAMPLES)
@given(EXTRA)
def test_named_float_properties(spec: str) -> None:
    check_format(spec)


@pytest.mark.parametrize("spec", ["posit(16,1)", "posit16", "bf16", "fp16", "int16", "uint(16)", "lp(16,1,15,0)",
                                  "posit(9,0)", "fp(4,4)", "e5m2"])
def test_wide_format_properties(spec: str) -> None:
    check_format(spec)

"""Posits against SoftPosit (the Posit Standard's reference library) and an exact bit-string reference.

Inputs: every value, every midpoint of adjacent values (arithmetic and bit-pattern) and their float
neighbours, out-of-range inputs, log-uniform random samples; both signs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import softposit as sp
import torch
from formats_helpers import posit_round, posit_value, probe_inputs, t

import dtypelab as dl
from dtypelab.formats.posit import pattern_values


def _softposit_codes(x: np.ndarray, n: int, es: int) -> np.ndarray:
    if (n, es) == (8, 0):
        return np.array([sp.convertDoubleToP8(float(v)).v for v in x], dtype=np.int64)
    if (n, es) == (16, 1):
        return np.array([sp.convertDoubleToP16(float(v)).v for v in x], dtype=np.int64)
    if (n, es) == (32, 2):
        return np.array([sp.convertDoubleToP32(float(v)).v for v in x], dtype=np.int64)
    assert es == 2
    return np.array([sp.convertDoubleToPX2(float(v), n).v >> (32 - n) for v in x], dtype=np.int64)


def _softposit_decoded(x: np.ndarray, n: int, es: int) -> np.ndarray:
    """SoftPosit's own value of its rounding of each input."""
    if (n, es) == (8, 0):
        return np.array([sp.convertP8ToDouble(sp.convertDoubleToP8(float(v))) for v in x])
    if (n, es) == (16, 1):
        return np.array([sp.convertP16ToDouble(sp.convertDoubleToP16(float(v))) for v in x])
    return np.array([sp.convertPX2ToDouble(sp.convertDoubleToPX2(float(v), n)) for v in x])


def _finer_values(n: int, es: int) -> np.ndarray:
    """Values of posit(n+1, es): every value and every bit-pattern midpoint of posit(n, es) (inputs only)."""
    codes = np.arange(1 << (n + 1), dtype=np.int64)
    v = pattern_values(codes, n + 1, es)
    return np.unique(v[np.isfinite(v)])


def _table_inputs(n: int, es: int, n_extra: int) -> np.ndarray:
    """Every value and every arithmetic and bit-pattern midpoint (both signs), plus a sample of float
    neighbours of those, out-of-range and log-uniform inputs."""
    f = dl.fmt(f"posit({n},{es})")
    v = f.values().numpy()
    finer = _finer_values(n, es)
    core = np.concatenate([v, (v[:-1] + v[1:]) / 2, finer])
    extra = np.concatenate([probe_inputs(v, n_random=20_000), probe_inputs(finer, n_random=0)])
    rng = np.random.default_rng(n * 7 + es)
    if extra.size > n_extra:
        extra = rng.choice(extra, n_extra, replace=False)
    return np.concatenate([core, -core, extra])


@pytest.mark.parametrize(("n", "es"), [(8, 0), (16, 1)] + [(n, 2) for n in range(4, 17)])
def test_posit_matches_softposit_on_every_value_midpoint_and_neighbour(n: int, es: int) -> None:
    x = _table_inputs(n, es, n_extra=60_000)
    x = np.concatenate([x, [np.nan, np.inf, -np.inf, 0.0, -0.0]])
    f = dl.fmt(f"posit({n},{es})")
    expected = _softposit_codes(x, n, es)
    codes = f.encode(t(x)).numpy().astype(np.int64)
    bad = np.flatnonzero(codes != expected)
    first_bad = list(zip(x[bad[:5]], codes[bad[:5]], expected[bad[:5]], strict=True))
    assert bad.size == 0, f"posit({n},{es}) first mismatches: {first_bad}"
    # values: SoftPosit's own decoding of each distinct result
    first = np.unique(expected, return_index=True)[1]
    q = f.quantize(t(x[first])).numpy()
    decoded = _softposit_decoded(x[first], n, es)
    decoded[np.isinf(decoded)] = np.nan  # SoftPosit reads NaR back as inf; dtypelab's NaR is NaN
    np.testing.assert_array_equal(q, decoded)


def test_posit32_matches_softposit_on_float64_inputs() -> None:
    rng = np.random.default_rng(32)
    f = dl.fmt("posit32")
    assert str(f) == "posit(32,2)"
    maxpos = 2.0 ** 120
    rand = 10.0 ** rng.uniform(-40, 40, 60_000) * rng.choice([-1.0, 1.0], 60_000)
    # exact midpoints between random adjacent posit32 patterns, and their neighbours
    pats = rng.integers(1, 2**31 - 1, 3000)
    mids = np.array([float(posit_value(2 * int(p) + 1, 33, 2)) for p in pats])
    edge = np.array([maxpos, maxpos * 1.5, 1 / maxpos, 1 / maxpos / 3, 1e300, 1e-300, 0.0, 1.0, 3.0])
    x = np.concatenate([rand, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf), edge, -edge, -mids,
                        [np.nan, np.inf, -np.inf]])
    expected = np.array([sp.convertDoubleToP32(float(v)).v for v in x], dtype=np.int64)
    codes = f.encode(t(x)).numpy()
    bad = np.flatnonzero(codes != expected)
    assert bad.size == 0, list(zip(x[bad[:5]], codes[bad[:5]], expected[bad[:5]], strict=False))
    q = f.quantize(t(x)).numpy()
    ref = np.array([sp.convertP32ToDouble(sp.convertDoubleToP32(float(v))) for v in x])
    np.testing.assert_array_equal(q[~np.isnan(ref)], ref[~np.isnan(ref)])
    assert np.isnan(q[np.isnan(ref)]).all()  # NaR is NaN


@pytest.mark.parametrize(("n", "es"), [(3, 0), (5, 1), (6, 3), (7, 4), (9, 1), (10, 3), (12, 4), (20, 1), (24, 3),
                                       (28, 0), (32, 4), (31, 1)])
def test_posit_matches_exact_bit_string_reference(n: int, es: int) -> None:
    """Any (n, es), including those SoftPosit lacks, against rounding of the exact bit string."""
    rng = np.random.default_rng(n * 10 + es)
    max_exp = (n - 2) << es
    x = 2.0 ** rng.uniform(-max_exp - 3, max_exp + 3, 2000) * rng.choice([-1.0, 1.0], 2000)
    if n <= 16:
        f = dl.fmt(f"posit({n},{es})")
        x = np.concatenate([x, probe_inputs(_finer_values(n, es), n_random=0)])
        if x.size > 8_000:
            x = rng.choice(x, 8_000, replace=False)
    x = np.concatenate([x, [0.0, -0.0, np.nan, np.inf, -np.inf]])
    f = dl.fmt(f"posit({n},{es})")
    expected = np.array([posit_round(float(v), n, es) for v in x], dtype=np.int64)
    codes = f.encode(t(x)).numpy().astype(np.int64)
    bad = np.flatnonzero(codes != expected)
    assert bad.size == 0, list(zip(x[bad[:5]], codes[bad[:5]], expected[bad[:5]], strict=False))
    q = f.quantize(t(x)).numpy()
    ref = np.array([math.nan if (v := posit_value(int(c), n, es)) is None else float(v) for c in expected])
    np.testing.assert_array_equal(q, ref)


def test_posit_vectors_from_reference_md() -> None:
    p81 = dl.fmt("posit(8,1)")
    x = torch.tensor([1.03125, 1.09375, 1.1, 0.3, 5000.0, 1e-9, -0.7], dtype=torch.float64)
    assert p81.quantize(x).tolist() == [1.0, 1.125, 1.125, 0.296875, 4096.0, 2.44140625e-4, -0.6875]
    assert dl.fmt("posit8").quantize(torch.tensor([4095.0])).tolist() == [64.0]
    assert dl.fmt("posit16").quantize(torch.tensor([1.1, 5000.0], dtype=torch.float64)).tolist() == [
        1.10009765625, 4992.0]
    assert dl.fmt("posit(8,2)").quantize(torch.tensor([1e6])).tolist() == [1048576.0]


@pytest.mark.parametrize("spec", ["posit(8,1)", "posit(16,1)", "posit(24,2)", "posit(32,2)"])
def test_posit_never_rounds_a_nonzero_to_zero_and_saturates(spec: str) -> None:
    f = dl.fmt(spec)
    x = torch.tensor([1e-300, -1e-300, 5e-324, 1e300, -1e300, np.inf, -np.inf, np.nan], dtype=torch.float64)
    q = f.quantize(x)
    assert q[:5].tolist() == [f.min_positive, -f.min_positive, f.min_positive, f.max, -f.max]
    assert torch.isnan(q[5:]).all()  # inf and NaN are NaR
    assert f.encode(x)[5:].tolist() == [1 << (f.bits - 1)] * 3
    assert f.max == 2.0 ** ((f.bits - 2) << f.es) and f.min_positive == 1 / f.max

"""Dynamic tree (against the formula computed here), NF4 (against the QLoRA table), integers, codebooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from formats_helpers import probe_inputs, t

import dtypelab as dl

NF4_QLORA = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]


def dynamic_tree_formula(n: int) -> np.ndarray:
    """±10^(i-(n-2)) * (0.1 + 0.9*(j+0.5)/2^i), i = 0..n-2, j = 0..2^i-1, plus 0 and 1.0 (float64)."""
    vals = [0.0, 1.0]
    for i in range(n - 1):
        for j in range(2**i):
            v = 10.0 ** (i - (n - 2)) * (0.1 + 0.9 * (j + 0.5) / 2**i)
            vals += [v, -v]
    return np.sort(np.array(vals))


@pytest.mark.parametrize("n", range(3, 9))
def test_dynamic_tree_matches_formula(n: int) -> None:
    ours = dl.fmt(f"dt({n})").values().numpy()
    ref = dynamic_tree_formula(n)
    assert ours.size == ref.size == 2**n  # count, and every value distinct
    np.testing.assert_array_equal(np.sign(ours), np.sign(ref))
    assert np.all(np.diff(ours) > 0)
    # bitsandbytes rounds three times in float32 (linspace, mean, scale): measured error <= 1.48 ulp
    ulp32 = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(ours - ref) <= 2 * ulp32)
    assert np.all(ours == ours.astype(np.float32))  # float32 values, as bitsandbytes stores them
    assert dl.fmt(f"dt{n}").max == 1.0


def test_dt8_reference_facts() -> None:
    f = dl.fmt("dt8")
    v = f.values()
    assert v.numel() == 256 and f.max == 1.0
    assert abs(float(v[0]) - -0.99296874) < 1e-7
    assert 5.4e-7 < f.min_positive < 5.6e-7


def test_nf4_is_the_qlora_table() -> None:
    f = dl.fmt("nf4")
    assert f.values().tolist() == NF4_QLORA and f.bits == 4
    assert f.encode(torch.tensor(NF4_QLORA)).tolist() == list(range(16))


@pytest.mark.parametrize("spec", ["nf4", "dt8", "dt5", "dt3", "codebook(-2,-0.5,0,0.25,3)"])
def test_codebook_rounding_is_nearest_ties_to_even_index(spec: str) -> None:
    f = dl.fmt(spec)
    v = f.values().numpy()
    x = probe_inputs(v, n_random=5000)
    q = f.quantize(t(x)).numpy()
    codes = f.encode(t(x)).numpy().astype(np.int64)
    # brute force: the nearest value; at an exact tie the even index
    xc = np.clip(x, v[0] - 1, v[-1] + 1)  # same nearest value; keeps the distances exact
    d = np.abs(xc[:, None] - v[None, :])
    best = d.min(axis=1, keepdims=True)
    tied = d == best
    n_tied = tied.sum(axis=1)
    nearest = np.argmax(tied, axis=1)
    even = np.where(tied & (np.arange(v.size)[None, :] % 2 == 0), 1, 0).argmax(axis=1)
    expected = np.where(n_tied > 1, even, nearest)
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(q, v[expected])


@pytest.mark.parametrize("spec", ["int8", "int4", "int16", "uint8", "uint2", "int(2)", "uint(16)"])
def test_integers_round_half_even_and_clip(spec: str) -> None:
    f = dl.fmt(spec)
    lo, hi = (-(1 << (f.bits - 1)), (1 << (f.bits - 1)) - 1) if spec.startswith("int") else (0, (1 << f.bits) - 1)
    x = probe_inputs(np.arange(lo, hi + 1, dtype=np.float64), n_random=5000)
    q = f.quantize(t(x)).numpy()
    np.testing.assert_array_equal(q, np.clip(np.round(x), lo, hi))  # numpy rounds half to even
    codes = f.encode(t(x)).numpy().astype(np.int64)
    np.testing.assert_array_equal(codes, np.clip(np.round(x), lo, hi).astype(np.int64) & ((1 << f.bits) - 1))
    assert f.max == hi and f.min_positive == 1


def test_codebook_spec_round_trips_and_validates() -> None:
    f = dl.fmt("codebook(-1, 0.5, 2)")
    assert dl.fmt(str(f)) == f and f.values().tolist() == [-1.0, 0.5, 2.0] and f.bits == 2
    for bad in ["codebook(1,1)", "codebook(2,1)", "codebook(1,inf)", "codebook(x)"]:
        with pytest.raises(ValueError, match="codebook"):
            dl.fmt(bad)

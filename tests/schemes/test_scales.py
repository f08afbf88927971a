"""Each scale rule returns the scale its definition gives (REFERENCE.md section 2), on hand-made tensors."""

import math

import numpy as np
import pytest
import torch

import dtypelab as dl


def test_absmax_maps_group_max_to_format_max():
    x = torch.tensor([[1.0, -8.0], [0.5, 0.25], [0.0, 0.0]])
    s = dl.Scheme(format="int8", granularity="channel", scale="absmax").compute_scales(x)
    assert s.reshape(-1).tolist() == pytest.approx([8 / 127, 0.5 / 127, 1.0], rel=1e-7)
    assert dl.Scheme(format="nf4", scale="absmax").compute_scales(x).item() == pytest.approx(8.0, rel=1e-7)


def test_pow2_is_smallest_power_of_two_that_does_not_clip():
    x = torch.tensor([3.0, -0.5])
    s = dl.Scheme(format="int8", scale="pow2").compute_scales(x).item()
    assert s == 2.0**-5  # 3/127 = 2^-5.4 -> ceil -> 2^-5
    assert 3.0 / s <= 127 and 3.0 / (s / 2) > 127
    q = dl.fake_quantize(x, "int8/tensor/pow2")
    assert torch.equal(q, torch.tensor([3.0, -0.5]))


def test_uint_pow2_uses_lab_zero_point():
    scheme = dl.Scheme(format="uint8", scale="pow2")
    assert scheme.element_range.zero_point == 128
    x = torch.tensor([0.0, 1.0, 2.5])
    q = dl.fake_quantize(x, scheme)
    s = scheme.compute_scales(x).item()
    assert s == 2.0 ** math.ceil(math.log2(2.5 / 127))
    expected = (torch.round(x / s + 128).clamp(0, 255) - 128) * s
    assert torch.equal(q, expected)


def test_log2_hist_centre_of_fullest_bin():
    # 60 values at 2^-3, 30 at 2^2, 10 at 2^5: range [-3, 5] in 100 bins of 0.08; fullest is bin 0.
    x = torch.tensor([2.0**-3] * 60 + [-(2.0**2)] * 30 + [2.0**5] * 10 + [0.0] * 500)
    s = dl.Scheme(format="posit(6,1)", scale="log2-hist").compute_scales(x).item()
    assert s == float(np.float32(2 ** (-3 + 0.5 * 8 / 100)))  # scales are stored as fp32


def test_log2_hist_matches_torch_histc_definition():
    torch.manual_seed(0)
    w = torch.randn(5, 300, dtype=torch.float64) * 0.05
    s = dl.Scheme(format="posit(8,0)", granularity="channel", scale="log2-hist").compute_scales(w).reshape(-1)
    for row, got in zip(w, s, strict=True):
        logs = torch.log2(row.abs())
        hist = torch.histc(logs, bins=100, min=float(logs.min()), max=float(logs.max()))
        width = (logs.max() - logs.min()) / 100
        centre = logs.min() + (int(hist.argmax()) + 0.5) * width
        assert float(got) == float(np.float32(2 ** float(centre)))


def _log2_hist_definition(row: np.ndarray) -> float:
    """The rule spelled out in Python (with the kernels' log2, tested on its own against math.log2 in
    tests/formats/test_torch_backend.py), NaN for a row with nothing to count."""
    from dtypelab.kernels.log2hist import log2

    a = [abs(float(v)) for v in row if v != 0 and math.isfinite(v)]
    if not a:
        return math.nan
    lo, hi = log2(min(a)), log2(max(a))
    width = (hi - lo) / 100
    counts = [0] * 100
    for v in a:
        counts[min(max(int(math.floor((log2(v) - lo) / width)) if width > 0 else 0, 0), 99)] += 1
    return lo + (counts.index(max(counts)) + 0.5) * width


def test_log2_hist_kernel_equals_definition_on_both_paths_and_dtypes():
    from dtypelab.kernels.log2hist import CHUNK, log2_hist_centres

    rng = np.random.default_rng(3)
    long_row = np.exp2(rng.normal(-4, 3, size=(1, 3 * CHUNK + 17)))  # a per-tensor row: the chunked path
    long_row[0, :: 7] = 0.0
    long_row[0, 5], long_row[0, 11], long_row[0, 13] = np.nan, np.inf, -np.inf  # left out, like zeros
    rows = np.exp2(rng.normal(0, 2, size=(6, 500))) * rng.choice([-1, 1], size=(6, 500))
    rows[2] = 0.0  # nothing to count: NaN centre (scale 1)
    rows[3, :] = 0.5  # one magnitude: zero-width bins
    for data in (long_row, rows, rows.astype(np.float32)):
        got = log2_hist_centres(data, 100)
        want = [_log2_hist_definition(row) for row in data]
        np.testing.assert_array_equal(got, np.array(want))


def test_log2_energy_closed_form():
    torch.manual_seed(1)
    w = torch.randn(1000, dtype=torch.float64) * 0.02
    s = dl.Scheme(format="posit(6,1)", scale="log2-energy").compute_scales(w).item()
    wn = w.numpy()
    expected = 2.0 ** round(float((wn**2 * np.log2(np.abs(wn))).sum() / (wn**2).sum()))
    assert s == expected


def test_sqnr_sweep_picks_best_power_of_two():
    torch.manual_seed(2)
    w = torch.randn(2000, dtype=torch.float64) * 0.01
    f = dl.fmt("posit(6,1)")
    best, best_sqnr = None, -math.inf
    for k in range(-5, 5):  # PositTune: posit(w * 2^k) / 2^k
        q = f.quantize(w * 2.0**k) / 2.0**k
        sqnr = 10 * math.log10(float((w**2).sum() / ((w - q) ** 2).sum()))
        if sqnr > best_sqnr:
            best, best_sqnr = 2.0**-k, sqnr
    assert dl.Scheme(format=f, scale="sqnr").compute_scales(w).item() == best


def test_mse_search_not_worse_than_absmax():
    torch.manual_seed(3)
    w = torch.randn(4, 512, dtype=torch.float64)
    w[0, 0] = 40.0  # an outlier makes clipping pay
    err = {r: float(((dl.fake_quantize(w, f"int4/channel/{r}") - w) ** 2).sum()) for r in ("absmax", "mse")}
    assert err["mse"] < err["absmax"]


def test_zero_tensor_gets_unit_scale():
    for rule in ("absmax", "pow2", "log2-hist", "log2-energy", "sqnr", "mse"):
        s = dl.Scheme(format="posit(8,1)", scale=rule).compute_scales(torch.zeros(10))
        assert s.item() == 1.0, rule

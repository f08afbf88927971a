"""The torch backend (every non-CPU device's path), forced on CPU tensors, against the numba kernels: closed-form
posits of 17-32 bits, the fused block kernels of every block rule, PositTune's log2-hist rule and its log2, and the
public API end to end with the torch backend serving the CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dtypelab as dl
from dtypelab.kernels import backend, log2hist, posit_closed
from dtypelab.kernels.backend import REFERENCE
from dtypelab.kernels.cpu import BACKEND
from dtypelab.kernels.log2hist import log2_hist_centres

POSITS = [(17, 0), (17, 1), (20, 2), (24, 1), (28, 4), (31, 3), (32, 0), (32, 2), (32, 4)]
FAST = {(17, 1), (24, 1), (32, 2), (32, 4)}  # the others run in the slow suite


def _edges(n: int, es: int) -> np.ndarray:
    """Zeros, NaN, infinities, float32 extremes, and the posit's own extremes and their neighbours."""
    top = float((n - 2) << es)
    powers = np.array([2.0**top, 2.0**-top, 2.0 ** (top - 1), 2.0 ** (1 - top), 1.0, 1.5, 3.0, 0.75])
    near = np.concatenate([powers, np.nextafter(powers, np.inf), np.nextafter(powers, 0)])
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1e-45, 3.4e38, 1e308])
    both = np.concatenate([near, special])
    return np.concatenate([both, -both])


@pytest.mark.parametrize("n, es", [p if p in FAST else pytest.param(*p, marks=pytest.mark.slow) for p in POSITS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_closed_form_posit_equals_numba_on_edges_and_a_million_patterns(n: int, es: int, dtype: type) -> None:
    width = np.uint32 if dtype == np.float32 else np.uint64
    rng = np.random.default_rng(n * 10 + es)
    patterns = rng.integers(0, np.iinfo(width).max, 1_000_000, dtype=width, endpoint=True).view(dtype)
    # values in the posit's own range, where the rounding (not saturation) decides
    inside = (rng.standard_normal(200_000) * 2.0 ** rng.integers(-40, 40, 200_000)).astype(dtype)
    with np.errstate(over="ignore"):  # float64 edges beyond float32's range become infinities
        x = np.concatenate([_edges(n, es).astype(dtype), patterns, inside])
    xt = torch.from_numpy(x)
    f = dl.fmt(f"posit({n},{es})")
    want_codes, want_nans = f.engine.encode(xt)
    got_codes = torch.empty_like(want_codes)
    nans = REFERENCE.posit(f.engine, xt, got_codes, "code")
    assert torch.equal(got_codes, want_codes)
    assert isinstance(nans, torch.Tensor) and int(nans) == int(want_nans) == int(np.isnan(x).sum())
    out_dtype = torch.float64 if dtype == np.float64 else torch.float32
    want = f.quantize(xt)
    got = torch.empty(xt.shape, dtype=out_dtype)
    REFERENCE.posit(f.engine, xt, got, "value")
    assert torch.equal(got.view(torch.int64 if dtype == np.float64 else torch.int32),
                       want.view(torch.int64 if dtype == np.float64 else torch.int32))


def test_torch_posit_decode_equals_numba_on_every_pattern_of_a_wide_posit_sample() -> None:
    for n, es in POSITS:
        p = np.random.default_rng(es).integers(0, 1 << n, 200_000, dtype=np.int64)
        p[:4] = [0, 1, 1 << (n - 1), (1 << n) - 1]
        want = np.empty(p.size)
        posit_closed.decode(p, want, n, es)
        np.testing.assert_array_equal(posit_closed.torch_decode(torch.from_numpy(p), n, es).numpy(), want)


BLOCK_SCHEMES = ["dt8/block:256/absmax", "dt8/block:4096/absmax", "nf4/block:64/absmax", "int8/block:32/absmax",
                 "posit(8,1)/block:32/absmax", "mxfp8", "mxfp4", "mxfp6", "e4m3/block:32/mx-ceil",
                 "e4m3/block:32/mx-even", "e4m3/block:32/mx-rceil", "e2m1/block:16/mx-rceil", "int8/block:32/none"]


@pytest.mark.parametrize("spec", BLOCK_SCHEMES)
def test_torch_block_kernels_equal_numba(spec: str) -> None:
    """Scales, codes, fake-quantized values and NaN-block counts, bit for bit, on heavy-tailed data with NaN,
    infinities, an all-zero block and a short last block."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1 << 16, generator=gen) * torch.exp(4 * torch.randn(1 << 16, generator=gen))
    x[5], x[700], x[3000] = float("nan"), float("inf"), -float("inf")
    x[4096:8192] = 0
    x = torch.cat([x, torch.randn(77, generator=gen)])
    scheme = dl.Scheme.parse(spec)
    rule, engine = scheme.block_rule(), scheme.format.engine_for(scheme.rounding)
    size = scheme.granularity.contiguous_group_size(x)
    assert rule is not None and size is not None
    for want_codes in (True, False):
        cpu, torch_path = BACKEND.block(engine, x, size, rule, want_codes), REFERENCE.block(engine, x, size, rule,
                                                                                              want_codes)
        assert torch.equal(cpu[1].view(torch.int32), torch_path[1].view(torch.int32))
        out_cpu, out_torch = cpu[0], torch_path[0]
        if not want_codes:
            out_cpu, out_torch = out_cpu.view(torch.int32), out_torch.view(torch.int32)
        assert torch.equal(out_cpu, out_torch)
        assert isinstance(torch_path[2], torch.Tensor) and int(torch_path[2]) == int(cpu[2]) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_log2_hist_rule_equals_numba(dtype: type) -> None:
    """Same rows, same centres, bit for bit: both take log2 from the shared definition
    (:func:`dtypelab.kernels.log2hist.log2`, :func:`~dtypelab.kernels.log2hist.torch_log2`)."""
    rng = np.random.default_rng(4)
    rows = (rng.standard_normal((65, 4096)) * np.exp(3 * rng.standard_normal((65, 4096)))).astype(dtype)
    rows[0, :3] = [0.0, np.nan, np.inf]
    rows[1] = 0  # no finite nonzero element: NaN
    with np.errstate(invalid="ignore"):  # signalling NaN patterns convert quietly
        patterns = rng.integers(0, 2**32, (8, 4096), dtype=np.uint64).astype(np.uint32).view(np.float32).astype(dtype)
    for x in (rows, patterns, np.zeros((3, 0), dtype)):  # rows of no element: NaN
        want = log2_hist_centres(x, 64)
        got = REFERENCE.log2_hist_centres(torch.from_numpy(x), 64)
        assert got.dtype == torch.float64
        np.testing.assert_array_equal(got.numpy().view(np.int64), want.view(np.int64))


def test_the_shared_log2_is_within_three_ulps_of_the_c_library_and_exact_on_powers_of_two() -> None:
    """The one log2 of every backend (:mod:`dtypelab.kernels.log2hist`) against ``math.log2``, and torch's
    evaluation of it against numba's, bit for bit."""
    rng = np.random.default_rng(8)
    a = np.concatenate([rng.integers(1, 0x7FF0000000000000, 100_000, dtype=np.int64).view(np.float64),
                        np.exp(rng.uniform(-5, 5, 100_000)), 1 + rng.uniform(-1e-6, 1e-6, 1000)])
    got = np.array([log2hist.log2(float(v)) for v in a])
    want = np.array([math.log2(float(v)) for v in a])
    close = np.abs(got - want) <= 3 * np.spacing(np.abs(want))
    assert close.all(), a[~close][:5]
    np.testing.assert_array_equal(log2hist.torch_log2(torch.from_numpy(a)).numpy().view(np.int64),
                                  got.view(np.int64))
    powers = np.arange(-1074, 1024)
    assert [log2hist.log2(2.0 ** int(k)) for k in powers] == powers.astype(float).tolist()


@pytest.fixture
def torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve CPU tensors with the torch backend for one test."""
    monkeypatch.setitem(backend._LOADED, "cpu", REFERENCE)


@pytest.mark.parametrize("spec", ["posit(8,1)", "posit(24,2)", "dt8", "nf4", "e4m3", "int16", "lp(8,2,2,0)"])
def test_formats_through_the_torch_backend_equal_numba(spec: str, torch_on_cpu: None) -> None:
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(5)) * 3
    x[:3] = torch.tensor([0.0, float("inf"), -float("inf")])
    f = dl.fmt(spec)
    got_q, got_c = f.quantize(x), f.encode(x)
    backend._LOADED["cpu"] = BACKEND
    assert torch.equal(got_q.view(torch.int32), f.quantize(x).view(torch.int32)) and torch.equal(got_c, f.encode(x))


@pytest.mark.parametrize("spec", ["mxfp8", "dt8/block:256/absmax", "posit(16,1)/channel/log2-hist"])
def test_schemes_through_the_torch_backend_equal_numba(spec: str, torch_on_cpu: None) -> None:
    x = torch.randn(64, 512, generator=torch.Generator().manual_seed(6))
    with_nan = x.clone()
    with_nan[3, 7] = float("nan")
    got_fake, got_q = dl.fake_quantize(with_nan, spec), dl.quantize(x, spec)
    backend._LOADED["cpu"] = BACKEND
    want_fake, want_q = dl.fake_quantize(with_nan, spec), dl.quantize(x, spec)
    assert torch.equal(got_fake.view(torch.int32), want_fake.view(torch.int32))
    assert torch.equal(got_q.dequantize().view(torch.int32), want_q.dequantize().view(torch.int32))


def test_a_nan_is_refused_by_a_format_without_a_nan_code_on_the_torch_backend(torch_on_cpu: None) -> None:
    x = torch.randn(1024)
    x[9] = float("nan")
    with pytest.raises(ValueError, match="no NaN code"):
        dl.quantize(x, "dt8/block:256/absmax")

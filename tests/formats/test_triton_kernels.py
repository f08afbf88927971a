"""The Triton kernels of the CUDA backend, run by Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``),
against the numba kernels: each lookup form on every 16-bit bucket's ends and on random float32 bit patterns
(10^7 per form in the slow suite), and the fused block kernels built on them."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch

import dtypelab as dl
from dtypelab.kernels import lut
from dtypelab.kernels.blockwise import BlockRule
from dtypelab.kernels.cpu import BACKEND

pytest.importorskip("triton", reason="triton is not installed (pip install 'dtypelab[triton]')")
pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def triton_backend():
    """The CUDA backend's module, loaded with Triton's interpreter on (kernels are built at import)."""
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        from dtypelab.kernels import gpu

        gpu = importlib.reload(gpu)
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before
    assert isinstance(gpu.BACKEND, gpu.TritonBackend)
    return gpu.BACKEND


def _patterns(count: int, seed: int) -> torch.Tensor:
    """Every 16-bit bucket's lowest, next, middle and highest member, then ``count`` random bit patterns."""
    keys = np.arange(1 << 16, dtype=np.uint32) << np.uint32(16)
    ends = np.concatenate([keys, keys + np.uint32(1), keys | np.uint32(1 << 15), keys | np.uint32(0xFFFF)])
    rand = np.random.default_rng(seed).integers(0, 2**32, count, dtype=np.uint64).astype(np.uint32)
    return torch.from_numpy(np.concatenate([ends, rand]).view(np.float32))


def _check_forms(backend, spec: str, form: int, count: int) -> None:
    f = dl.fmt(spec)
    assert f.engine.lut(np.float32).form == form
    x = _patterns(count, form)
    for what, dtype in (("code", f.engine.code_dtype), ("value", torch.float32)):
        want, got = torch.empty(x.shape, dtype=dtype), torch.empty(x.shape, dtype=dtype)
        nans_want = BACKEND.table(f.engine, x, want, what)
        nans_got = backend.table(f.engine, x, got, what)
        assert torch.equal(got.view(torch.int32) if what == "value" else got,
                           want.view(torch.int32) if what == "value" else want)
        if what == "code":
            assert isinstance(nans_got, torch.Tensor) and int(nans_got) == nans_want


FORMS = [("e4m3", lut.DIRECT), ("nf4", lut.CUT), ("dt8", lut.CUT), ("int16", lut.TWO_LEVEL),
         ("lp(12,2,3,0)", lut.TWO_LEVEL)]


@pytest.mark.parametrize("spec, form", FORMS)
def test_triton_lookups_equal_numba_on_bucket_ends_and_random_patterns(triton_backend, spec: str, form: int) -> None:
    _check_forms(triton_backend, spec, form, 1 << 18)


@pytest.mark.slow
@pytest.mark.parametrize("spec, form", FORMS)
def test_triton_lookups_equal_numba_on_ten_million_patterns(triton_backend, spec: str, form: int) -> None:
    _check_forms(triton_backend, spec, form, 10_000_000)


BLOCK_SCHEMES = ["dt8/block:256/absmax", "dt8/block:4096/absmax", "nf4/block:64/absmax", "int8/block:32/absmax",
                 "posit(8,1)/block:32/absmax", "mxfp8", "mxfp4", "mxfp6", "e4m3/block:32/mx-ceil",
                 "e4m3/block:32/mx-even", "e4m3/block:32/mx-rceil", "e2m1/block:16/mx-rceil", "int8/block:32/none",
                 "int16/block:64/absmax", "int4/block:7/absmax", "lp(8,2,2,0)/block:128/absmax",
                 "e3m2/block:32/mx", "mxint8"]  # test_torch_backend's, then the other forms and a ragged block


def _block_inputs() -> torch.Tensor:
    """Heavy-tailed data with NaN, infinities, an all-zero span, subnormals, and a short last block."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1 << 14, generator=gen) * torch.exp(4 * torch.randn(1 << 14, generator=gen))
    x[5], x[700], x[3000], x[3001] = float("nan"), float("inf"), -float("inf"), float("inf")
    x[4096:8192] = 0
    x[9000:9100] = 1e-42
    x[9100:9200] = -3e-39
    return torch.cat([x, torch.randn(77, generator=gen)])


def _check_block(backend, engine, x: torch.Tensor, size: int, rule, given: torch.Tensor | None = None) -> None:
    for want_codes in (True, False):
        want = BACKEND.block(engine, x, size, rule, want_codes, given)
        got = backend.block(engine, x, size, rule, want_codes, given)
        assert want is not None and got is not None
        assert torch.equal(want[1].view(torch.int32), got[1].view(torch.int32))
        assert got[0].dtype == want[0].dtype
        assert torch.equal(want[0].view(torch.int32) if not want_codes else want[0],
                           got[0].view(torch.int32) if not want_codes else got[0])
        assert isinstance(got[2], torch.Tensor) and int(got[2]) == int(want[2])


@pytest.mark.parametrize("spec", BLOCK_SCHEMES)
def test_triton_block_kernels_equal_numba(triton_backend, spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scales, codes, fake-quantized values and NaN-block counts, bit for bit; the torch path is not taken."""
    from dtypelab.kernels import backend

    x = _block_inputs()
    scheme = dl.Scheme.parse(spec)
    rule, engine = scheme.block_rule(), scheme.format.engine_for(scheme.rounding)
    size = scheme.granularity.contiguous_group_size(x)
    assert rule is not None and size is not None
    monkeypatch.setattr(backend.TorchBackend, "block", None)  # a fallback would fail
    _check_block(triton_backend, engine, x, size, rule)
    nans = torch.full((x.numel() // 4,), float("nan"))
    _check_block(triton_backend, engine, nans, size, rule)  # every block NaN


def test_triton_block_kernel_with_given_scales_equals_numba(triton_backend) -> None:
    x = _block_inputs()
    x = torch.where(torch.isnan(x), 0.0, x)
    rule, engine = dl.Scheme.parse("int8/block:32/absmax").block_rule(), dl.fmt("int8").engine
    given = torch.rand((x.numel() + 31) // 32, generator=torch.Generator().manual_seed(4)) * 2.0 ** 20 + 1e-3
    _check_block(triton_backend, engine, x, 32, BlockRule("given", rule.qmax, clip=True), given)
    _check_block(triton_backend, engine, x, 32, BlockRule("given", 255.0, zero_point=-128.0), given)


def test_triton_block_takes_the_torch_path_beyond_its_reach(triton_backend) -> None:
    """Blocks larger than one program, and two-level lookups that need the search, take the torch path."""
    from dtypelab.kernels import gpu

    x = _block_inputs()
    for spec, size in (("int8/block:32/absmax", gpu.MAX_BLOCK + 1), ("lp(12,2,3,0)/block:32/absmax", 32)):
        scheme = dl.Scheme.parse(spec)
        _check_block(triton_backend, scheme.format.engine, x, size, scheme.block_rule())


def _positive_doubles(count: int, seed: int) -> np.ndarray:
    """Random finite positive float64 bit patterns (subnormals included), powers of two, and values near 1."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(1, 0x7FF0000000000000, count, dtype=np.int64).view(np.float64)
    return np.concatenate([patterns, 2.0 ** np.arange(-1074, 1024), 1 + rng.uniform(-1e-3, 1e-3, 1000),
                           rng.uniform(0.5, 2.0, 10_000), [5e-324, 1.7976931348623157e308]])


def test_triton_log2_equals_numba_and_torch(triton_backend) -> None:
    from numba import njit

    from dtypelab.kernels.log2hist import _log2, torch_log2

    @njit
    def numba_log2(a, out):
        for i in range(a.size):
            out[i] = _log2(a[i])

    a = _positive_doubles(200_000, 7)
    want = np.empty_like(a)
    numba_log2(a, want)
    got = triton_backend.log2(torch.from_numpy(a)).numpy()
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
    np.testing.assert_array_equal(torch_log2(torch.from_numpy(a)).numpy().view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_triton_log2_hist_equals_numba(triton_backend, dtype: type) -> None:
    """Centres bit for bit on heavy-tailed rows (zeros, NaN, infinities, an empty row, a one-magnitude row, a row
    longer than a program's chunk, ragged), random bit patterns, and a bin count that is not a power of two."""
    from dtypelab.kernels.log2hist import log2_hist_centres

    rng = np.random.default_rng(4)
    rows = (rng.standard_normal((33, 2500)) * np.exp(3 * rng.standard_normal((33, 2500)))).astype(dtype)
    rows[0, :3] = [0.0, np.nan, np.inf]
    rows[1] = 0  # no finite nonzero element: NaN
    rows[2] = -0.75  # one magnitude: zero-width bins
    with np.errstate(invalid="ignore"):  # signalling NaN patterns convert quietly
        patterns = rng.integers(0, 2**32, (5, 3000), dtype=np.uint64).astype(np.uint32).view(np.float32).astype(dtype)
    for x in (rows, patterns):
        for bins in (64, 100):
            want = log2_hist_centres(x, bins)
            got = triton_backend.log2_hist_centres(torch.from_numpy(x), bins)
            assert got.dtype == torch.float64
            np.testing.assert_array_equal(got.numpy().view(np.int64), want.view(np.int64))

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


@pytest.mark.parametrize("spec", ["mxfp8", "dt8/block:256/absmax", "nf4/block:64/absmax", "e4m3/block:32/mx-rceil"])
def test_triton_block_kernels_equal_numba(triton_backend, spec: str) -> None:
    x = torch.randn(1 << 14, generator=torch.Generator().manual_seed(2)) * 10
    x[11] = float("nan")
    scheme = dl.Scheme.parse(spec)
    rule, engine = scheme.block_rule(), scheme.format.engine_for(scheme.rounding)
    size = scheme.granularity.contiguous_group_size(x)
    for want_codes in (True, False):
        a, b = BACKEND.block(engine, x, size, rule, want_codes), triton_backend.block(engine, x, size, rule,
                                                                                      want_codes)
        assert torch.equal(a[1].view(torch.int32), b[1].view(torch.int32))
        assert torch.equal(a[0].view(torch.int32) if not want_codes else a[0],
                           b[0].view(torch.int32) if not want_codes else b[0])
        assert int(a[2]) == int(b[2]) == 1

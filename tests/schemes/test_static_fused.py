"""The one-pass static-scale fake quantization (a static activation quantizer's every forward) gives the bits of
the generic divide / round / multiply path, on the numba and the torch backends."""

from __future__ import annotations

import pytest
import torch

import dtypelab as dl
from dtypelab.kernels import backend
from dtypelab.kernels.backend import REFERENCE
from dtypelab.schemes.scheme import Scaled

SPECS = ["posit(8,1)/tensor/absmax", "e4m3/tensor/absmax", "dt8/tensor/absmax", "uint8/tensor/absmax",
         "lp(8,2,2,0)/tensor/absmax", "int16/tensor/absmax", "int4/tensor/mse"]


def _generic(x: torch.Tensor, spec: str, s: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    with monkeypatch.context() as m:
        m.setattr(Scaled, "_fused_static", lambda self: None)
        return dl.fake_quantize(x, spec, s)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("on_torch", [False, True])
def test_fused_static_scale_equals_the_generic_path(spec: str, on_torch: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(100_003, generator=torch.Generator().manual_seed(8)) * 5
    x[:5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
    if on_torch:
        monkeypatch.setitem(backend._LOADED, "cpu", REFERENCE)
    calls = []
    engine_block = type(dl.fmt("e4m3").engine).block
    monkeypatch.setattr(type(dl.fmt("e4m3").engine), "block",
                        lambda self, *a: calls.append(a[2].name) or engine_block(self, *a))
    for s in (0.37, 3.0, 1e-3, 0.0):
        scale = torch.tensor(s, dtype=torch.float64)
        fast = dl.fake_quantize(x, spec, scale)
        assert torch.equal(fast.view(torch.int32), _generic(x, spec, scale, monkeypatch).view(torch.int32))
    assert calls.count("given") == 4  # the fused pass was asked each time (numba declines the zero scale)

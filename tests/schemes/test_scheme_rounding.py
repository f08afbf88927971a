"""Rounding through schemes: the scheme string, fake quantization (QAT), stored tensors and model configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import dtypelab as dl


@pytest.mark.parametrize("spec", ["e4m3/tensor/absmax//sr8", "e4m3/block:32/mx//rz", "int4/channel/absmax/bf16/sr",
                                  "posit(6,1)/tensor/none//rna", "e5m2/tensor/none//rne+ovfinf+ftz"])
def test_rounding_part_round_trips(spec: str) -> None:
    s = dl.Scheme.parse(spec)
    assert str(s) == spec and dl.Scheme.parse(str(s)) == s


def test_default_rounding_keeps_every_string() -> None:
    for spec in ("posit(8,1)/tensor/none", "int8/channel/absmax/bf16", "e4m3/block:32/mx", "nf4/block:64/absmax"):
        assert str(dl.Scheme.parse(spec)) == spec
        tail = "/rne" if spec.count("/") == 3 else "//rne"
        assert str(dl.Scheme.parse(spec + tail)) == spec  # the default is never written
    assert dl.Scheme("e4m3", "tensor", "absmax", rounding="rne") == dl.Scheme.parse("e4m3/tensor/absmax")


def test_scheme_rounding_applies_to_every_path() -> None:
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
    down = dl.Scheme.parse("e4m3/channel/absmax//rd")
    scaled = down.scale(x)
    s = scaled.scales.reshape(-1, 1).float()
    assert bool((scaled.dequantize() <= x + 1e-7).all())
    assert torch.equal(scaled.dequantize(), dl.fmt("e4m3").quantize(x / s, rounding="rd") * s)
    qt = dl.quantize(x, down)
    assert torch.equal(qt.dequantize(), scaled.dequantize())
    mx = dl.Scheme.parse("e2m1/block:32/mx//ru")  # the fused block kernel runs the directed table too
    q = dl.fake_quantize(x, mx)
    generic = mx.scale(x.double()).dequantize().float()
    assert torch.equal(q, generic) and not torch.equal(q, dl.fake_quantize(x, "e2m1/block:32/mx"))


def test_stochastic_fake_quantize_is_reproducible_and_straight_through() -> None:
    x = torch.randn(1000, requires_grad=True)
    scheme = "e4m3/tensor/absmax//sr8"
    a = dl.fake_quantize(x, scheme, generator=torch.Generator().manual_seed(3))
    b = dl.fake_quantize(x, scheme, generator=torch.Generator().manual_seed(3))
    c = dl.fake_quantize(x, scheme, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    (grad,) = torch.autograd.grad(a.sum(), x)
    assert torch.equal(grad, torch.ones_like(x))
    qt = dl.quantize(x.detach(), scheme, generator=torch.Generator().manual_seed(3))
    assert torch.equal(qt.dequantize(), a.detach())


def test_stochastic_rounding_in_a_model_config_trains() -> None:
    """QAT with stochastically rounded weights: every training forward draws new bits, and the loss falls."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    x = torch.randn(256, 8)
    y = x[:, :1] * 2 - x[:, 1:2]
    dl.quantize_model(model, {"weights": "int4/channel/absmax//sr", "activations": "e4m3/tensor/absmax//sr8",
                              "activation_scales": "dynamic"})
    assert not torch.equal(model[0].weight, model[0].weight)  # training: each use rounds the weights anew
    with torch.no_grad():  # inference: the weights are rounded once (and cached) as a deployed model's are
        assert torch.equal(model[0].weight, model[0].weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    dl.restore(model)

"""GPTQ: with an identity Hessian it is round to nearest, bit for bit; with the Hessian of correlated inputs it
lowers the layer's output error below round to nearest, for every format family and granularity."""

import pytest
import torch

from dtypelab.model.gptq import element_scales, gptq, hessian
from dtypelab.schemes import Scheme, fake_quantize

SCHEMES = ["posit(4,1)/channel/absmax", "e2m1/block:32/mx", "nf4/block:64/absmax", "int4/channel/absmax",
           "dt4/channel/absmax", "lp(4,1,1,0)/tensor/absmax", "uint4/channel/absmax", "posit(4,1)"]


def _layer(seed: int, rows: int = 48, cols: int = 192, n: int = 1024):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.1
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)  # correlated input features
    spread = torch.rand(cols, generator=g) * 2 + 0.1
    x = torch.randn(n, cols, generator=g) @ mix * spread
    return w, x


@pytest.mark.parametrize("spec", SCHEMES)
def test_identity_hessian_is_round_to_nearest_exactly(spec):
    w, _ = _layer(0)
    scheme = Scheme.parse(spec)
    assert torch.equal(gptq(w, scheme, torch.eye(w.shape[1])), fake_quantize(w, scheme))
    assert torch.equal(gptq(w, scheme, torch.eye(w.shape[1]) * 3.0, block=7), fake_quantize(w, scheme))


@pytest.mark.parametrize("spec", SCHEMES)
def test_gptq_lowers_output_error_below_round_to_nearest(spec):
    w, x = _layer(1)
    scheme = Scheme.parse(spec)
    h = hessian([x[:512], x[512:]])
    q = gptq(w, scheme, h)
    rtn = fake_quantize(w, scheme)

    def err(v, inputs):
        return float((inputs @ (v - w).T).square().sum())

    assert err(q, x) < 0.9 * err(rtn, x)
    xt = _layer(1, n=2048)[1][1024:]  # held out, same distribution
    assert err(q, xt) < err(rtn, xt)
    # every element is on the scheme's grid under the original weight's scales
    _, s = element_scales(w, scheme)
    assert torch.equal(scheme.round_scaled(q / s) * s, q)
    assert q.dtype == w.dtype and not torch.equal(q, rtn)


def test_gptq_float64_and_dead_inputs():
    w, x = _layer(2, rows=8, cols=40, n=300)
    x[:, 5] = 0.0  # an input never nonzero: its column is rounded to nearest, not zeroed
    scheme = Scheme.parse("int4/channel/absmax")
    q = gptq(w.double(), scheme, hessian([x]))
    assert q.dtype == torch.float64
    assert torch.equal(q[:, 0], fake_quantize(w.double(), scheme)[:, 0])  # the first column is never updated
    assert not torch.equal(q[:, 5], torch.zeros(8, dtype=torch.float64))


def test_hessian_is_two_xtx_over_n():
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    rows = x.reshape(-1, 6)
    assert torch.allclose(hessian([x[:1], x[1:]]), 2 * rows.T @ rows / 15)


@pytest.mark.parametrize("call, match", [
    (lambda: gptq(torch.zeros(3), Scheme.parse("int4"), torch.eye(3)), "at least 2 dimensions"),
    (lambda: gptq(torch.zeros(2, 3), Scheme.parse("int4"), torch.eye(2)), r"\[3, 3\]"),
    (lambda: gptq(torch.zeros(2, 3), Scheme.parse("int4"), torch.eye(3), block=0), "block"),
    (lambda: gptq(torch.zeros(2, 3), Scheme.parse("int4"), torch.eye(3), damp=-1.0), "damp"),
    (lambda: gptq(torch.zeros(2, 3), Scheme.parse("int4"), torch.full((3, 3), float("nan"))), "NaN"),
    (lambda: gptq(torch.zeros(2, 2), Scheme.parse("int4"), torch.tensor([[1.0, 2.0], [2.0, 1.0]]), damp=0.0),
     "positive definite"),
    (lambda: hessian([]), "calibration"),
])
def test_gptq_errors_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()

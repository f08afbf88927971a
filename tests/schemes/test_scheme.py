"""Scheme strings round-trip; bad schemes raise clear errors; fake-quant gradients are straight-through."""

import pytest
import torch

import dtypelab as dl
from dtypelab.schemes import RULES


@pytest.mark.parametrize("rule", list(RULES))
def test_str_round_trip_for_every_rule(rule):
    fmt, gran = ("e4m3", "block:32") if rule.startswith("mx") else ("posit(6,1)", "channel:1")
    s = dl.Scheme(format=fmt, granularity=gran, scale=rule)
    assert dl.Scheme.parse(str(s)) == s


def test_defaults_and_scale_formats():
    assert str(dl.Scheme.parse("posit(8,1)")) == "posit(8,1)/tensor/none"
    s = dl.Scheme.parse("int8/channel/absmax/bf16")
    assert s.scale_bits == 16 and dl.Scheme.parse(str(s)) == s
    assert dl.Scheme.parse("int8/tensor/pow2").scale_bits == 8


@pytest.mark.parametrize("bad, match", [
    ("posit(8,1)/block:0", "positive integer block size"),
    ("posit(8,1)/blocks:4", "valid: tensor"),
    ("posit(8,1)/tensor/median", "valid: none, absmax"),
    ("e4m3/block:32/mx-round", "valid: .*mx, mx-ceil, mx-even, mx-rceil"),
    ("posit(1,0)", "posit: n must be"),
    ("int8/tensor/none/fp32", "scale_format 'none'"),
    ("a/b/c/d/e/f", "FORMAT"),
    ("e4m3/tensor/absmax//nearest", "unknown rounding mode 'nearest'"),
    ("int8/tensor/absmax//rne+ovfinf", "int8 has neither infinities nor NaN"),
])
def test_bad_schemes(bad, match):
    with pytest.raises(ValueError, match=match):
        dl.Scheme.parse(bad)


def test_channel_axis_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        dl.fake_quantize(torch.randn(3, 4), "int8/channel:2/absmax")


def test_straight_through_gradient():
    x = torch.tensor([0.1, 3.0, 100.0], requires_grad=True)
    y = dl.fake_quantize(x, "int4")  # no scale: 100 saturates at 7
    (g,) = torch.autograd.grad((y * torch.tensor([1.0, 2.0, 3.0])).sum(), x)
    assert g.tolist() == [1.0, 2.0, 3.0]
    y = dl.fake_quantize(x, "int4", zero_saturated_grad=True)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g.tolist() == [1.0, 1.0, 0.0]


def test_static_scales_are_used():
    x = torch.tensor([1.0, 2.0, 4.0])
    s = torch.tensor(0.5)
    assert torch.equal(dl.fake_quantize(x, "int4/tensor/absmax", scales=s), torch.tensor([1.0, 2.0, 3.5]))
    with pytest.raises(ValueError, match="groups"):
        dl.fake_quantize(torch.randn(4, 3), "int4/channel/absmax", scales=torch.ones(3))


def test_dtype_preserved():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = torch.randn(4, 32).to(dtype)
        assert dl.fake_quantize(x, "posit(8,1)/channel/log2-hist").dtype == dtype


def test_metrics():
    x = torch.tensor([1.0, 2.0, 1e-9, 100.0])
    m = dl.metrics.quantization_error(x, "int4")
    assert m["fraction_saturated"] == 0.25 and m["fraction_flushed"] == 0.25
    assert m["max_abs_error"] == 93.0

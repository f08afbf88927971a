"""The fused block kernel is bit-identical to the generic path it replaces."""

import pytest
import torch

import dtypelab as dl
from dtypelab.kernels import cpu


def fused(x, scheme, want_codes):
    """The CPU backend's fused block kernel for ``scheme``, or None where it declines."""
    size = scheme.granularity.contiguous_group_size(x)
    rule = scheme.block_rule()
    if size is None or rule is None:
        return None
    return scheme.format.engine.block(x, size, rule, want_codes)

SCHEMES = ["dt8/block:64/absmax", "dt8/block:4096/absmax", "nf4/block:64/absmax", "int8/channel/absmax",
           "posit(6,1)/block:32/none", "mxfp8", "mxfp4", "mxint8", "e3m2/block:32/mx", "uint8/block:16/absmax",
           "lp(8,2,2,0)/block:128/absmax", "int4/block:7/absmax", "int16/block:64/absmax",
           "e4m3/block:32/mx-ceil", "e2m1/block:32/mx-even", "int8/block:32/mx-rceil", "fp(3,2)/block:32/mx-even",
           "posit(8,1)/block:32/mx-ceil", "int16/block:64/mx-rceil"]


def test_the_schemes_cover_every_lookup_form():
    import numpy as np

    from dtypelab.kernels.lut import CUT, DIRECT, TWO_LEVEL

    forms = {dl.Scheme.parse(s).format.engine.lut(np.float32).form for s in SCHEMES}
    assert forms == {DIRECT, CUT, TWO_LEVEL}


def inputs():
    torch.manual_seed(0)
    x = torch.randn(33, 128) * torch.exp2(torch.randint(-20, 20, (33, 1)).float())
    x[0] = 0.0
    x[1, 3] = float("nan")
    x[2, 5] = float("inf")
    x[3, :] = 1e-42  # subnormal
    return x


@pytest.mark.parametrize("spec", SCHEMES)
def test_fused_equals_generic(spec, monkeypatch):
    scheme = dl.Scheme.parse(spec)
    x = inputs()
    if scheme.format.nan_code is None and not scheme.rule.nonfinite_is_nan:  # both refuse to encode NaN there
        with pytest.raises(ValueError, match="no NaN code"):
            dl.quantize(x, scheme)
        x[1, 3] = 0.5  # (the infinity stays: it sets no scale and saturates)
    assert fused(x, scheme, want_codes=True) is not None  # the fast path applies
    fast_q, fast_fake = dl.quantize(x, scheme), dl.fake_quantize(x, scheme)
    monkeypatch.setattr(cpu, "MAX_BLOCK", 0)  # force the generic path
    assert fused(x, scheme, want_codes=True) is None
    slow_q, slow_fake = dl.quantize(x, scheme), dl.fake_quantize(x, scheme)
    assert torch.equal(fast_q.codes, slow_q.codes)
    assert torch.equal(fast_q.scales.nan_to_num(-1), slow_q.scales.nan_to_num(-1))
    assert torch.equal(fast_fake.nan_to_num(-7.0), slow_fake.nan_to_num(-7.0))
    assert torch.equal(fast_fake.isnan(), slow_fake.isnan())


def test_fused_declines_what_it_does_not_cover():
    x = torch.randn(8, 64)
    for spec in ("int8/tensor/absmax", "int8/channel:1/absmax", "posit(6,1)/block:32/log2-hist",
                 "int8/block:32/absmax/bf16", "posit(32,2)/block:32/absmax"):
        assert fused(x, dl.Scheme.parse(spec), want_codes=True) is None, spec
    assert fused(x.double(), dl.Scheme.parse("mxfp8"), want_codes=True) is None


@pytest.mark.parametrize("rule", ["mx", "mx-ceil", "mx-even", "mx-rceil"])
@pytest.mark.parametrize("element", ["e4m3", "e2m1", "int8", "fp(3,2)", "e3m4"])
def test_fused_mx_variants_equal_generic_at_binade_edges(element, rule, monkeypatch):
    """Blocks whose absmax is a power of two, EVEN's tie ``2^k (2 - 2^-(m+1))``, RCEIL's ``max * 2^k``, and their
    float32 neighbours, from E8M0's smallest scale to its largest."""
    scheme = dl.Scheme(format=element, granularity="block:32", scale=rule)
    rng = scheme.element_range
    heads = torch.tensor([a * 2.0**k for k in range(-140, 125, 3)
                          for a in (1.0, 2 - 2.0 ** -(rng.mbits + 1), rng.max * rng.unit / 2**rng.emax)])
    heads = torch.cat([torch.nextafter(heads, torch.zeros(())), heads, torch.nextafter(heads, torch.tensor(1e38))])
    torch.manual_seed(1)
    x = (torch.rand(heads.numel(), 32) * 2 - 1) * heads[:, None]
    x[:, 5] = heads
    x[::7, 9] = -0.0  # a negative zero keeps its sign on both paths
    fast_q, fast_fake = dl.quantize(x, scheme), dl.fake_quantize(x, scheme)
    assert fused(x, scheme, want_codes=True) is not None
    monkeypatch.setattr(cpu, "MAX_BLOCK", 0)
    slow_q, slow_fake = dl.quantize(x, scheme), dl.fake_quantize(x, scheme)
    assert torch.equal(fast_q.scales, slow_q.scales) and torch.equal(fast_q.codes, slow_q.codes)
    assert torch.equal(fast_fake, slow_fake)

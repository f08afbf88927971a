"""SmoothQuant and AWQ equalization: the FP32 function is unchanged to float tolerance before rounding, the
rounding then improves where outlier channels hurt it, and restore is bit for bit."""

import pytest
import torch
from model_helpers import ConvNet, assert_same, snapshot

import dtypelab as dl
from dtypelab.model import equalize
from dtypelab.model.config import QuantConfig
from dtypelab.model.equalize import equalizer
from dtypelab.model.quantize import Equalized, InputScale
from dtypelab.schemes import Scheme


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU(), torch.nn.Linear(48, 8))
    spread = torch.ones(32)
    spread[[3, 17]] = 40.0  # outlier input channels, as in LLM activations
    batches = [torch.randn(64, 32, generator=g) * spread for _ in range(4)]
    return model, batches


@pytest.mark.parametrize("spec", ["smoothquant", "smoothquant:0.8", "smoothquant:0", "awq"])
def test_fp32_outputs_unchanged_before_rounding(spec):
    model, batches = _setup()
    x = torch.cat(batches)
    snap = snapshot(model)
    with torch.no_grad():
        ref = model(x)
    # no rounding anywhere (awq searches for a weight scheme, so it gets one on the other layer only)
    # (fold: false — this checks layer 0's own output; tests/model/test_model_fold.py checks the folds)
    cfg = {"fold": False, "layers": [{"match": "Linear", "equalize": spec}]} if spec != "awq" else \
        {"fold": False, "weights": "int4/channel/absmax",
         "layers": [{"match": "0", "weights": None, "equalize": "smoothquant"}, {"match": "2", "equalize": "awq"}]}
    dl.quantize_model(model, cfg, calibration=batches)
    assert isinstance(model[0].parametrizations.weight[0], Equalized)
    with torch.no_grad():
        out0 = model[0](x)
        ref0 = torch.nn.functional.linear(x, snap["values"]["0.weight"], snap["values"]["0.bias"])
        assert torch.allclose(out0, ref0, rtol=1e-5, atol=1e-4)
        if spec != "awq":
            assert torch.allclose(model(x), ref, rtol=1e-5, atol=1e-4)
        if spec != "smoothquant:0":
            assert not torch.equal(model[0].weight, snap["values"]["0.weight"])  # the weight was rescaled
    dl.restore(model)
    assert_same(model, snap)
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_smoothquant_lowers_w8a8_error_and_awq_lowers_w4_error():
    model, batches = _setup()
    x = torch.cat(batches)
    with torch.no_grad():
        ref = model[0](x)

    def err(cfg):  # layer 0's own error: layer 2's scales stay explicit (not folded into layer 0)
        dl.quantize_model(model, {**cfg, "fold": False}, calibration=batches)
        with torch.no_grad():
            e = float((model[0](x) - ref).square().sum())
        dl.restore(model)
        return e

    w8a8 = {"weights": "int8/channel/absmax", "activations": "int8/tensor/absmax"}
    assert err({**w8a8, "equalize": "smoothquant:0.5"}) < 0.5 * err(w8a8)
    w4 = {"weights": "int4/channel/absmax"}
    assert err({**w4, "equalize": "awq"}) < 0.9 * err(w4)
    assert err({"weights": {"scheme": "int4/channel/absmax", "method": "gptq"}, "equalize": "awq"}) < err(w4)


def test_equalize_hooks_run_before_the_activation_quantizer_and_static_scales_see_x_over_s():
    model, batches = _setup()
    dl.quantize_model(model, {"activations": "int8/tensor/absmax", "equalize": "smoothquant"}, calibration=batches)
    hooks = list(model[0]._forward_pre_hooks.values())
    assert isinstance(hooks[0], InputScale) and len(hooks) == 2
    s = hooks[0].scales
    want = dl.Scheme.parse("int8/tensor/absmax").compute_scales(torch.cat(batches) / s)
    assert torch.equal(hooks[1].scales, want.to(torch.float64).reshape(()))
    dl.restore(model)


def test_equalize_config_specs_and_errors():
    cfg = QuantConfig.coerce({"equalize": "SmoothQuant:0.50", "layers": [{"match": "0", "equalize": "awq"}]})
    assert cfg.equalize == "smoothquant:0.5" and QuantConfig.coerce(cfg.to_dict()) == cfg
    assert "equalize" not in QuantConfig.coerce({}).to_dict()
    for bad, match in [("smoothquant:2", "alpha"), ("awq:0", "positive integer"), ("awq:few", "positive integer"),
                       ("smooth", "valid: smoothquant, awq")]:
        with pytest.raises(ValueError, match=match):
            equalizer(bad)
    with pytest.raises(ValueError, match="Linear"):
        dl.quantize_model(ConvNet(), {"equalize": "smoothquant"}, calibration=[torch.randn(2, 1, 8, 8)])
    model, batches = _setup()
    with pytest.raises(ValueError, match="calibration"):
        dl.quantize_model(model, {"equalize": "smoothquant"})
    with pytest.raises(ValueError, match="weights scheme"):
        dl.quantize_model(model, {"equalize": "awq"}, calibration=batches)
    assert not hasattr(model[0], "parametrizations")


def test_awq_measures_its_error_on_a_seeded_sample_of_at_most_rows_rows(monkeypatch):
    _, batches = _setup()
    w = torch.randn(48, 32, generator=torch.Generator().manual_seed(1))
    scheme = Scheme.parse("int4/channel/absmax")
    assert [str(equalizer(s)) for s in ("awq", "awq:512", "awq:100", "awq:ALL")] == ["awq", "awq", "awq:100", "awq:all"]
    seen = []
    sample = equalize._sample_rows

    def spy(x, limit):
        out = sample(x, limit)
        seen.append((x.shape[0], out.shape[0]))
        assert (out[:, None, :] == x[None]).all(-1).any(-1).all()  # rows of x, not new ones
        assert len({tuple(r.tolist()) for r in out}) == out.shape[0]  # without replacement
        return out

    monkeypatch.setattr(equalize, "_sample_rows", spy)
    a, b = (equalizer("awq:40").scales(w, batches, scheme) for _ in range(2))
    assert seen == [(256, 40), (256, 40)] and torch.equal(a, b)
    every = equalizer("awq:all").scales(w, batches, scheme)
    assert seen[-1] == (256, 256) and torch.equal(equalizer("awq:256").scales(w, batches, scheme), every)


def test_equalize_on_gpt2_conv1d_scales_its_stored_rows_keeps_fp32_and_awq_lowers_w4_error():
    from transformers.pytorch_utils import Conv1D

    from dtypelab.workloads.lm import register_conv1d

    register_conv1d()
    g = torch.Generator().manual_seed(2)
    layer = Conv1D(48, 32)  # weight stored (in=32, out=48): y = x W + b
    _, batches = _setup()
    x = torch.cat(batches)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(32, 48, generator=g) * 0.2)
        ref = layer(x)
    before = snapshot(layer)
    dl.quantize_model(layer, {"equalize": "smoothquant"}, calibration=batches)  # FP32 weights: nothing rounded
    with torch.no_grad():
        assert torch.allclose(layer(x), ref, rtol=1e-5, atol=1e-4)
    dl.restore(layer)
    assert_same(layer, before)

    def err(cfg):
        dl.quantize_model(layer, cfg, calibration=batches)
        with torch.no_grad():
            e = float((layer(x) - ref).square().sum())
        dl.restore(layer)
        return e

    # per output channel of the stored (in, out) weight: axis 1 (axis 0 would be per input channel, whose scales
    # absorb any input channel scaling, so AWQ could not change the rounding)
    w4 = {"weights": "int4/channel:1/absmax"}
    assert err({**w4, "equalize": "awq"}) < 0.9 * err(w4)
    assert err({"weights": {"scheme": "int4/channel:1/absmax", "method": "gptq"}, "equalize": "awq"}) < err(w4)
    assert_same(layer, before)

"""GPTQ as a config entry: ``weights: {scheme: ..., method: gptq}`` rounds once from the calibration inputs,
lowers the output error below round to nearest, restores bit for bit, and a failure leaves the model as it was."""

import pytest
import torch
from model_helpers import SeqModel, assert_same, snapshot

import dtypelab as dl
from dtypelab.model.config import QuantConfig, resolve
from dtypelab.model.gptq import gptq, hessian
from dtypelab.model.methods import INPUT_ROWS
from dtypelab.model.quantize import RoundedWeight
from dtypelab.schemes import Scheme, fake_quantize

SCHEME = "int4/channel/absmax"


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    mix = torch.randn(64, 64, generator=g) / 8 + torch.eye(64)
    batches = [torch.randn(128, 64, generator=g) @ mix for _ in range(4)]
    return model, batches


def test_config_mapping_form_reads_and_round_trips():
    cfg = QuantConfig.coerce({"weights": {"scheme": "posit(4,1)/channel/absmax", "method": "gptq"},
                              "layers": [{"match": "2", "weights": {"method": "rtn"}},
                                         {"match": "0", "weights": {"scheme": "int4", "method": "GPTQ"}}]})
    assert cfg.weights == "posit(4,1)/channel/absmax" and cfg.weight_method == "gptq"
    assert QuantConfig.coerce(cfg.to_dict()) == cfg
    assert QuantConfig.coerce(QuantConfig.coerce({"weights": "int4"}).to_dict()).to_dict() == \
        {"weights": "int4/tensor/none", "activations": None, "activation_scales": "static", "bias": "float",
         "layers": []}  # an existing config writes as before
    model, _ = _setup()
    plans = resolve(model, cfg)
    assert (plans["0"].weight_method, str(plans["0"].weight)) == ("gptq", "int4/tensor/none")
    assert (plans["2"].weight_method, str(plans["2"].weight)) == ("rtn", "posit(4,1)/channel/absmax")


@pytest.mark.parametrize("bad, match", [
    ({"weights": {"scheme": SCHEME, "method": "obq"}}, "unknown weight method 'obq'; valid: rtn, gptq"),
    ({"weights": {"scheme": SCHEME, "rounding": "gptq"}}, "unknown key"),
    ({"weights": {"scheme": SCHEME, "method": "gptq"}, "weight_method": "rtn"}, "disagree"),
])
def test_bad_method_configs_name_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig.coerce(bad)


def test_gptq_in_quantize_model_beats_round_to_nearest_and_restores_bit_for_bit():
    model, batches = _setup()
    x = torch.cat(batches)
    snap = snapshot(model)
    with torch.no_grad():
        ref = model(x)
        ref0 = model[0](x)
    out, out0 = {}, {}
    for method in ("rtn", "gptq"):
        report = dl.quantize_model(model, {"weights": {"scheme": SCHEME, "method": method}}, calibration=batches)
        with torch.no_grad():
            out[method], out0[method] = model(x), model[0](x)
        assert report.layers["0"].weight_scheme == SCHEME
        if method == "gptq":
            part = model[0].parametrizations.weight[0]
            assert isinstance(part, RoundedWeight)
            w = model[0].parametrizations.weight.original
            with torch.no_grad():
                assert torch.equal(model[0].weight, gptq(w.detach(), dl.Scheme.parse(SCHEME), hessian(batches)))
            assert list(model.state_dict()) == ["0.bias", "0.parametrizations.weight.original", "2.bias",
                                                "2.parametrizations.weight.original"]
            assert report.layers["0"].weight_mse > 0
        dl.restore(model)
        assert_same(model, snap)
    err = {m: float((out0[m] - ref0).square().sum()) for m in out0}
    assert err["gptq"] < 0.8 * err["rtn"]
    assert float((out["gptq"] - ref).square().sum()) < float((out["rtn"] - ref).square().sum())


def test_gptq_needs_calibration_and_linear_layers_and_leaves_the_model_alone_on_failure():
    model, batches = _setup()
    snap = snapshot(model)
    cfg = {"weights": {"scheme": SCHEME, "method": "gptq"}}
    with pytest.raises(ValueError, match="calibration batches"):
        dl.quantize_model(model, cfg)
    assert_same(model, snap)
    with pytest.raises(ValueError, match="supports Linear, Conv1d, Conv2d, Conv1D layers only"):
        dl.quantize_model(torch.nn.Sequential(torch.nn.Embedding(5, 4)), cfg, calibration=[torch.tensor([[1, 2]])])
    dl.quantize_model(model, {"weights": "int8/channel/absmax"})
    quantized = snapshot(model)
    bad = [batches[0].clone()]
    bad[0][0, 0] = float("nan")  # a NaN input makes the Hessian NaN: GPTQ refuses, part-way through
    with pytest.raises(ValueError, match="NaN"):
        dl.quantize_model(model, cfg, calibration=bad)
    now = snapshot(model)  # the previous quantization is back, untouched (re-attached: new Parametrized classes)
    now["classes"] = [(n, c.__name__) for n, c in now["classes"]]
    quantized["classes"] = [(n, c.__name__) for n, c in quantized["classes"]]
    values, before = now.pop("values"), quantized.pop("values")
    assert now == quantized and all(torch.equal(values[k], v) for k, v in before.items())
    dl.restore(model)
    assert_same(model, snap)


def test_rounded_weight_trains_straight_through_and_rounds_to_nearest_once_changed():
    model, batches = _setup()
    dl.quantize_model(model, {"weights": {"scheme": SCHEME, "method": "gptq"}}, calibration=batches)
    w = model[0].parametrizations.weight.original
    frozen = model[0].weight.detach().clone()
    loss = model(batches[0]).square().sum()
    loss.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    with torch.no_grad():
        w.add_(0.01)
        scales = model[0].parametrizations.weight[0].scales
        assert torch.equal(model[0].weight, dl.fake_quantize(w, SCHEME, scales))
        assert not torch.equal(model[0].weight, frozen)
        w.sub_(0.01)
    dl.restore(model)


@pytest.mark.parametrize("conv", [
    torch.nn.Conv2d(6, 8, 3, padding=1, stride=2), torch.nn.Conv2d(6, 8, (3, 2), dilation=(2, 1)),
    torch.nn.Conv1d(6, 8, 5, padding=2, stride=1)])
def test_gptq_on_convolutions_uses_their_patches_and_beats_round_to_nearest(conv):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.2)
    shape = (16, 6, 12, 12) if isinstance(conv, torch.nn.Conv2d) else (16, 6, 40)
    base = torch.randn(shape, generator=g)
    batches = [base[:8] + base[:8].roll(1, dims=-1), base[8:] + base[8:].roll(1, dims=-1)]  # correlated pixels
    x = torch.cat(batches)
    with torch.no_grad():
        ref = conv(x)
        # the patches are the rows the weight's matrix multiplies: the Hessian's columns are the weight's columns
        rows = INPUT_ROWS[type(conv).__name__](conv, x)
        y = (rows @ conv.weight.reshape(8, -1).T).reshape(16, -1, 8).transpose(1, 2).reshape(ref.shape)
        assert torch.allclose(y + conv.bias.reshape(1, -1, *[1] * (ref.dim() - 2)), ref, atol=1e-5)
    out = {}
    for method in ("rtn", "gptq"):
        dl.quantize_model(conv, {"weights": {"scheme": "e2m1/channel/absmax", "method": method}},
                          calibration=batches)
        with torch.no_grad():
            out[method] = float((conv(x) - ref).square().sum())
        dl.restore(conv)
    assert out["gptq"] < 0.9 * out["rtn"]
    with torch.no_grad():
        assert torch.equal(conv(x), ref)


def test_gptq_refuses_grouped_convolutions():
    conv = torch.nn.Conv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="groups=1"):
        dl.quantize_model(conv, {"weights": {"scheme": SCHEME, "method": "gptq"}},
                          calibration=[torch.randn(2, 4, 6, 6)])
    assert not hasattr(conv, "parametrizations")


def test_tied_weights_refuse_methods_that_fit_one_layer():
    model = SeqModel()
    for rule in ({"weights": {"scheme": SCHEME, "method": "gptq"}}, {"equalize": "smoothquant"}):
        with pytest.raises(ValueError, match="tied"):
            resolve(model, {"weights": SCHEME, "layers": [{"match": "head", **rule}]})
    assert resolve(model, {"weights": SCHEME, "layers": [{"match": "head", "weights": {"method": "rtn"}}]})


@pytest.mark.parametrize("spec", ["int4/channel/absmax", "nf4/block:16/absmax"])
def test_gptq_on_gpt2_conv1d_rounds_its_stored_in_out_weight_and_beats_round_to_nearest(spec):
    from transformers.pytorch_utils import Conv1D

    from dtypelab.workloads.lm import register_conv1d

    register_conv1d()
    g = torch.Generator().manual_seed(5)
    layer = Conv1D(12, 32)  # weight stored (in=32, out=12): y = x W + b
    with torch.no_grad():
        layer.weight.copy_(torch.randn(32, 12, generator=g) * 0.2)
    base = torch.randn(4, 16, 32, generator=g)
    x = base + base.roll(1, dims=-1)  # correlated features
    batches = [x[:2], x[2:]]
    scheme = Scheme.parse(spec)
    w = layer.weight.detach().clone()
    # an identity Hessian rounds to nearest in the stored layout, bit for bit
    assert torch.equal(gptq(w, scheme, torch.eye(32), transposed=True), fake_quantize(w, scheme))
    with torch.no_grad():
        ref = layer(x)
    out = {}
    for method in ("rtn", "gptq"):
        dl.quantize_model(layer, {"weights": {"scheme": spec, "method": method}}, calibration=batches)
        with torch.no_grad():
            out[method] = float((layer(x) - ref).square().sum())
            q = layer.weight.detach().clone()
        dl.restore(layer)
    assert out["gptq"] < 0.9 * out["rtn"] and torch.equal(layer.weight, w)
    with pytest.raises(ValueError, match="exactly 2 when transposed"):
        gptq(torch.randn(2, 3, 4), scheme, torch.eye(12), transposed=True)
    assert q.shape == w.shape and not torch.equal(q, fake_quantize(w, scheme))  # the last one: GPTQ's weight

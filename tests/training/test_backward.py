"""Backward quantization at hook level: the gradient a layer passes back (error), its weight gradient and its saved
input, each equal to the scheme applied to the FP32 quantity; straight-through stays available; config errors."""

from __future__ import annotations

import pytest
import torch

import dtypelab as dl
from dtypelab.model.backward import attach_backward, backward_state
from dtypelab.model.config import QuantConfig

E5M2 = "e5m2/tensor/absmax"


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def _grads(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradient the ReLU receives from layer 2 (hooked), layer 2's weight gradient, and the input's gradient."""
    got: dict[str, torch.Tensor] = {}
    handle = model[1].register_full_backward_hook(lambda m, gin, gout: got.__setitem__("relu_out", gout[0].clone()))
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    (model(x) * torch.arange(1.0, 5.0)).square().sum().backward()
    handle.remove()
    got["w2"] = dl.model.layers.raw_weight(model[2], "weight").grad.clone()
    got["x"] = x.grad.clone()
    return got


def test_error_is_the_scheme_applied_to_the_fp32_gradient() -> None:
    model, x = _net(), torch.randn(5, 8)
    fp32 = _grads(model, x)
    state = attach_backward(model, {"layers": [{"match": "2", "backward": {"error": E5M2}}]})
    got = _grads(model, x)
    assert torch.equal(got["relu_out"], dl.fake_quantize(fp32["relu_out"], E5M2))
    assert not torch.equal(got["relu_out"], fp32["relu_out"])
    assert torch.equal(got["w2"], fp32["w2"])  # the error of layer 2 does not change its own weight gradient
    state.remove()
    assert backward_state(model) is None
    assert all(torch.equal(a, b) for a, b in zip(_grads(model, x).values(), fp32.values(), strict=True))


def test_weight_gradient_is_the_scheme_applied_to_the_fp32_one() -> None:
    model, x = _net(), torch.randn(5, 8)
    fp32 = _grads(model, x)
    attach_backward(model, {"backward": {"weight_grad": "int4/channel/absmax"}})
    got = _grads(model, x)
    assert torch.equal(got["w2"], dl.fake_quantize(fp32["w2"], "int4/channel/absmax"))
    assert torch.equal(model[0].weight.grad, dl.fake_quantize(_fp32_w0(x), "int4/channel/absmax"))
    assert torch.equal(got["relu_out"], fp32["relu_out"])  # errors stay FP32


def test_restore_takes_the_backward_hooks_off_with_the_forward_ones() -> None:
    model, x = _net(), torch.randn(5, 8)
    fp32 = _grads(model, x)
    dl.quantize_model(model, {"weights": "int8/channel/absmax"})
    attach_backward(model, {"backward": {"error": E5M2, "weight_grad": "int4/channel/absmax", "saved": E5M2}})
    assert not torch.equal(_grads(model, x)["x"], fp32["x"])
    dl.restore(model)
    assert backward_state(model) is None
    assert all(torch.equal(a, b) for a, b in zip(_grads(model, x).values(), fp32.values(), strict=True))


def _fp32_w0(x: torch.Tensor) -> torch.Tensor:
    model = _net()
    _grads(model, x)
    return model[0].weight.grad


def test_saved_input_is_stored_in_its_scheme() -> None:
    model, x = _net(), torch.randn(5, 8)
    fp32 = _grads(model, x)
    attach_backward(model, {"layers": [{"match": "2", "backward": {"saved": "int4/tensor/absmax"}}]})
    got = _grads(model, x)
    # the weight gradient of layer 2 from the FP32 forward's upstream gradient and Q(its input): grad_out^T Q(x)
    ref = _net()
    h = ref[1](ref[0](x)).detach()
    out = ref[2](h)
    upstream = torch.autograd.grad((out * torch.arange(1.0, 5.0)).square().sum(), out)[0]
    assert not torch.equal(got["w2"], fp32["w2"])
    assert torch.equal(got["w2"], upstream.t().mm(dl.fake_quantize(h, "int4/tensor/absmax")))
    assert torch.equal(fp32["w2"], upstream.t().mm(h))  # (the same product on the FP32 input: FP32's gradient)
    assert torch.equal(got["relu_out"], fp32["relu_out"])  # the error uses the weight, which is not rounded


def test_with_a_quantized_forward_the_error_rounds_the_straight_through_gradient() -> None:
    x = torch.randn(5, 8)
    forward = {"weights": "int4/channel/absmax", "activations": "int8/tensor/absmax", "activation_scales": "dynamic"}
    ste = _net()
    dl.quantize_model(ste, forward)
    straight = _grads(ste, x)
    model = _net()
    cfg = {**forward, "backward": {"error": E5M2, "weight_grad": E5M2}}
    dl.quantize_model(model, cfg)
    attach_backward(model, cfg)
    got = _grads(model, x)
    assert torch.equal(got["relu_out"], dl.fake_quantize(straight["relu_out"], E5M2))
    assert torch.equal(got["w2"], dl.fake_quantize(straight["w2"], E5M2))
    # straight through (no backward section): layer 2's input receives the FP32 gradient of its quantized input
    h = ste[1](ste[0](x)).detach()
    hq = dl.fake_quantize(h, "int8/tensor/absmax").requires_grad_(True)
    out = torch.nn.functional.linear(hq, ste[2].weight.detach(), ste[2].bias.detach())
    (out * torch.arange(1.0, 5.0)).square().sum().backward()
    assert torch.equal(straight["relu_out"], hq.grad)


def test_stochastic_backward_is_reproducible_and_unbiased_in_the_mean() -> None:
    x = torch.randn(64, 8)
    fp32 = _grads(_net(), x)["relu_out"]
    runs = []
    for _ in range(2):
        model = _net()
        attach_backward(model, {"layers": [{"match": "2", "backward": {"error": "e5m2/tensor/absmax//sr"}}]},
                        generator=torch.Generator().manual_seed(3))
        runs.append(_grads(model, x)["relu_out"])
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], dl.fake_quantize(fp32, E5M2))


@pytest.mark.parametrize("bad, match", [
    ({"backward": {"errors": E5M2}}, "errors"),
    ({"backward": {"error": "e9m9"}}, "e9m9"),
    ({"layers": [{"match": "7", "backward": {"error": E5M2}}]}, "matches no quantizable layer"),
])
def test_bad_backward_configs(bad: dict, match: str) -> None:
    model = _net()
    with pytest.raises(ValueError, match=match):
        attach_backward(model, bad)
    assert backward_state(model) is None


def test_backward_section_round_trips_and_rules_change_only_their_keys() -> None:
    rules = [{"match": "0", "backward": {"error": None}}, {"match": "2", "backward": None}]
    cfg = QuantConfig.coerce({"backward": {"error": E5M2, "weight_grad": "e5m2"}, "layers": rules})
    assert QuantConfig.coerce(cfg.to_dict()) == cfg
    assert "backward" not in QuantConfig.coerce({"weights": "int8"}).to_dict()
    plans = dl.model.config.resolve(_net(), cfg)
    assert (plans["0"].backward.error, plans["0"].backward.weight_grad) == (None, "e5m2/tensor/none")
    assert plans["2"].backward is None

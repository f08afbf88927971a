"""The lab's integer-only int8 path equals the fake-quant simulation of the same config, exactly."""

from __future__ import annotations

import pytest
import torch
from model_helpers import ConvNet
from torch import nn

import dtypelab as dl
from dtypelab.model.integer import IntConv2d, IntegerModel, IntLinear, requantize

LAB = {"weights": "int8/channel/pow2", "activations": "uint8/tensor/pow2", "bias": "int32"}


def _digit_images(n: int = 64) -> torch.Tensor:
    sklearn = pytest.importorskip("sklearn.datasets")
    return torch.tensor(sklearn.load_digits().data[:n], dtype=torch.float64).reshape(n, 1, 8, 8) / 16.0


def _trained_convnet(x: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    net = ConvNet().double()
    with torch.no_grad():  # spread the weights so layers use different shifts
        for i, p in enumerate(net.parameters()):
            p.mul_(2.0 ** (i % 3 - 1))
    return net.eval()


@pytest.mark.parametrize("config", [LAB, {**LAB, "weights": "int8/tensor/pow2", "activations": "int8/tensor/pow2"}])
def test_integer_only_equals_fake_quant_simulation(config):
    """Conv2d+ReLU, Conv2d+ReLU+MaxPool, flatten, Linear+ReLU, Linear on real 8x8 digits: the integer-only model
    (UINT8 codes with zero point 128, INT8 weights, INT32 accumulators and bias, shift requantization) gives the
    float64 fake-quant simulation's outputs bit for bit."""
    x = _digit_images()
    net = _trained_convnet(x)
    dl.quantize_model(net, config, calibration=[x[:32], x[32:]])
    int_net = dl.integer.convert(net)
    assert isinstance(int_net, IntegerModel)
    layers = [m for m in int_net if isinstance(m, (IntLinear, IntConv2d))]
    assert len(layers) == 4
    assert all(m.weight.dtype == torch.int8 and m.bias.dtype == torch.int32 for m in layers)
    assert all(m.shift is not None for m in layers[:-1]) and layers[-1].shift is None
    probe = torch.cat([x, 3 * torch.randn(8, 1, 8, 8, dtype=torch.float64)])  # beyond calibration: saturation
    with torch.no_grad():
        sim = net(probe)
    got = int_net(probe)
    assert got.dtype == torch.float64
    assert torch.equal(got, sim)
    assert len({int(s) for m in layers[:-1] for s in m.shift.reshape(-1)}) > 1  # non-trivial shifts


def test_intermediate_codes_are_uint8_and_match_the_simulated_activations():
    x = _digit_images(16)
    net = _trained_convnet(x)
    dl.quantize_model(net, LAB, calibration=[x])
    int_net = dl.integer.convert(net)
    seen = []
    net.fc1.register_forward_hook(lambda m, a, out: seen.append(a[0]))
    net(x)
    codes = x
    for m in int_net:
        codes = m(codes)
        if isinstance(m, nn.Flatten):
            break
    assert codes.dtype == torch.uint8
    scale = float(dl.model.quant_state(net).activations["fc1"].scales)
    assert torch.equal((codes.double() - 128) * scale, seen[0])


def test_a_plain_sequential_mlp_converts():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Dropout(0.1), nn.Linear(24, 10)).double().eval()
    x = _digit_images(40)
    dl.quantize_model(net, LAB, calibration=[x])
    assert torch.equal(dl.integer.convert(net)(x), net(x))


def test_the_labs_floor_shift_is_within_one_step():
    """rounding="floor" is the lab's bare >>: it may round down where the simulation rounds to nearest."""
    x = _digit_images(32)
    net = _trained_convnet(x)
    dl.quantize_model(net, LAB, calibration=[x])
    exact = dl.integer.convert(net)(x)
    floor = dl.integer.convert(net, rounding="floor")(x)
    half_up = dl.integer.convert(net, rounding="half-up")(x)
    assert not torch.equal(floor, exact)
    assert torch.allclose(half_up, exact, atol=(exact.abs().max() * 0.2).item())


def test_requantize_rounds_ties_to_even_with_integers_only():
    acc = torch.arange(-20, 21)
    for shift in range(0, 5):
        got = requantize(acc, torch.tensor(shift)).long() - 128
        expect = torch.round(acc.double() / 2**shift).clamp(-128, 127).long()  # torch.round: ties to even
        assert torch.equal(got, expect)
    assert requantize(torch.tensor([3]), torch.tensor(-2)).tolist() == [140]  # a left shift: 3 * 4 + 128


@pytest.mark.parametrize(("config", "message"), [
    ({**LAB, "weights": "int8/channel/absmax"}, "power-of-two"),
    ({**LAB, "bias": "float"}, "bias: int32"),
    ({"weights": "int8/channel/pow2", "activations": "uint8/tensor/pow2", "activation_scales": "dynamic"},
     "static activation"),
    ({**LAB, "weights": "posit(8,1)/channel/pow2"}, "int\\(n\\)"),
])
def test_convert_refuses_what_it_cannot_do_exactly(config, message):
    x = _digit_images(8)
    net = _trained_convnet(x)
    dl.quantize_model(net, config, calibration=[x])
    with pytest.raises(ValueError, match=message):
        dl.integer.convert(net)


def test_convert_refuses_unsupported_ops_and_unquantized_models():
    net = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match="quantized by dtypelab"):
        dl.integer.convert(net)
    dl.quantize_model(net, LAB, calibration=[torch.randn(4, 4, dtype=torch.float64)])
    with pytest.raises(ValueError, match="Sigmoid"):
        dl.integer.convert(net)

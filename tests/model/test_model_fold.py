"""Folding equalization and rotation into the op before a layer, and the Hadamard rotation option: the FP32
function is unchanged to float tolerance, the explicit path is used where folding is impossible, restore is
bit for bit, and rotation lowers 4-bit error on a layer with outlier channels."""

import pytest
import torch
from model_helpers import assert_same, snapshot
from torch import nn

import dtypelab as dl
from dtypelab.model.config import QuantConfig
from dtypelab.model.fold import Transform, find_hosts, hadamard, rotation_spec
from dtypelab.model.quantize import InputScale, InputTransform, Transformed, quant_state


class NormMLP(nn.Module):
    """LayerNorm -> fc1 -> ReLU -> fc2 -> (no activation) -> fc3, and a residual that reads fc3's input."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(32)
        self.fc1 = nn.Linear(32, 64)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(64, 32)
        self.fc3 = nn.Linear(32, 32)
        self.gelu = nn.GELU()
        self.fc4 = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc2(self.drop(torch.relu(self.fc1(self.norm(x)))))
        h = self.fc3(h) + h  # fc2's output has two users: fc3 and the residual
        return self.fc4(self.gelu(h))


def _data(seed: int = 0, width: int = 32, n: int = 4):
    g = torch.Generator().manual_seed(seed)
    spread = torch.ones(width)
    spread[[3, 17]] = 30.0
    return [torch.randn(64, width, generator=g) * spread for _ in range(n)]


def _model(seed: int = 0) -> NormMLP:
    torch.manual_seed(seed)
    m = NormMLP().eval()
    with torch.no_grad():  # a non-trivial affine, so folding into it is visible
        m.norm.weight.uniform_(0.5, 2.0)
        m.norm.bias.uniform_(-0.5, 0.5)
    return m


@pytest.mark.parametrize("option", [{"equalize": "smoothquant:0.5"}, {"rotate": "hadamard"},
                                    {"rotate": "hadamard:3"}])
def test_folding_keeps_fp32_outputs_and_restores_bit_for_bit(option):
    model, batches = _model(), _data()
    x = torch.cat(batches)
    snap = snapshot(model)
    with torch.no_grad():
        ref = model(x)
    dl.quantize_model(model, option, calibration=batches)
    st = quant_state(model)
    if "equalize" in option:  # diagonal: the LayerNorm's affine and, through the ReLU, fc1's rows
        assert st.folds == {"fc1": "norm", "fc2": "fc1"}
        assert set(st.input_scales) == {"fc3", "fc4"}  # residual user / GELU between: explicit
        assert isinstance(st.input_scales["fc3"], InputScale)
    else:  # a rotation does not pass the ReLU nor fold into a LayerNorm
        assert st.folds == {} and set(st.input_scales) == {"fc1", "fc2", "fc3", "fc4"}
        assert isinstance(st.input_scales["fc1"], InputTransform)
    with torch.no_grad():
        assert torch.allclose(model(x), ref, rtol=1e-5, atol=1e-4)
        if "equalize" in option:
            assert not model.norm._forward_pre_hooks and not model.fc1._forward_pre_hooks
            s = st.input_scales["fc3"].scales
            assert not torch.allclose(s, torch.ones_like(s))
    dl.restore(model)
    assert_same(model, snap)
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_rotation_folds_across_a_relu_free_linear_pair():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.0), nn.Linear(32, 4)).eval()
    x = torch.randn(50, 16)
    with torch.no_grad():
        ref = model(x)
    dl.quantize_model(model, {"layers": [{"match": "2", "rotate": "hadamard"}]})
    st = quant_state(model)
    assert st.folds == {"2": "0"} and not st.input_scales
    assert isinstance(model[0].parametrizations.bias[0], Transformed)
    with torch.no_grad():
        assert torch.allclose(model(x), ref, rtol=1e-5, atol=1e-5)
        r = hadamard(32)
        assert torch.allclose(model[0](x), (x @ model[0].parametrizations.weight.original.T
                                             + model[0].parametrizations.bias.original) @ r, atol=1e-5)
    dl.restore(model)
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_fold_false_and_untraceable_models_use_the_explicit_path():
    model, batches = _model(), _data()
    dl.quantize_model(model, {"equalize": "smoothquant", "fold": False}, calibration=batches)
    assert quant_state(model).folds == {} and len(quant_state(model).input_scales) == 4
    dl.restore(model)

    class Branchy(NormMLP):  # data-dependent control flow: torch.fx cannot trace it
        def forward(self, x):
            return super().forward(x) if bool(x.sum() > -1e9) else x[:, :8]

    model = Branchy().eval()
    x = torch.cat(batches)
    with torch.no_grad():
        ref = model(x)
    dl.quantize_model(model, {"equalize": "smoothquant"}, calibration=batches)
    assert quant_state(model).folds == {} and len(quant_state(model).input_scales) == 4
    with torch.no_grad():
        assert torch.allclose(model(x), ref, rtol=1e-5, atol=1e-4)
    dl.restore(model)


def test_hosts_refused_when_tied_or_int32_bias():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8))
    t = {"1": Transform(scales=torch.full((8,), 2.0)), "2": Transform(scales=torch.full((8,), 2.0))}
    assert {k: h.name for k, h in find_hosts(model, t).items()} == {"1": "0", "2": "1"}
    assert {k: h.name for k, h in find_hosts(model, t, refuse={"0"}).items()} == {"2": "1"}
    model[2].weight = model[0].weight  # layer 0's weight is tied: it cannot host a fold
    assert {k: h.name for k, h in find_hosts(model, t).items()} == {"2": "1"}


def test_folded_equalization_with_quantized_weights_and_failure_leaves_model():
    model, batches = _model(), _data()
    x = torch.cat(batches)
    snap = snapshot(model)
    cfg = {"weights": "int4/channel/absmax", "activations": "int8/tensor/absmax", "equalize": "smoothquant"}
    report = dl.quantize_model(model, cfg, calibration=batches)
    assert quant_state(model).folds == {"fc1": "norm", "fc2": "fc1"}
    assert report.layers["fc1"].weight_mse > 0
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    dl.restore(model)
    assert_same(model, snap)
    with pytest.raises(ValueError, match="calibration batch"):  # a bad batch: nothing attached
        dl.quantize_model(model, cfg, calibration=[torch.randn(4, 7)])
    assert_same(model, snap)


def _outlier_layer(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(64, 32)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(32, 64, generator=g) * 0.05)
        layer.weight[:, [5, 40]] *= 25.0  # outlier input channels of the weight
    spread = torch.ones(64)
    spread[[9, 30]] = 25.0  # and of the activations
    return layer, [torch.randn(128, 64, generator=g) * spread for _ in range(2)]


@pytest.mark.parametrize("scheme", ["int4/channel/absmax", "nf4/channel/absmax"])
def test_rotation_lowers_4bit_weight_error_with_outlier_channels(scheme):
    for seed in range(3):
        layer, batches = _outlier_layer(seed)
        model = nn.Sequential(layer)
        x = torch.cat(batches)
        with torch.no_grad():
            ref = model(x)

        def err(cfg, model=model, batches=batches, x=x, ref=ref):
            dl.quantize_model(model, cfg, calibration=batches)
            with torch.no_grad():
                e = float((model(x) - ref).square().sum())
            dl.restore(model)
            return e

        assert err({"weights": scheme, "rotate": "hadamard"}) < 0.8 * err({"weights": scheme})
        acts = {"activations": scheme.replace("channel", "tensor")}
        assert err({**acts, "rotate": "hadamard"}) < 0.8 * err(acts)


def test_rotate_config_and_errors():
    cfg = QuantConfig.coerce({"rotate": "Hadamard:0", "layers": [{"match": "0", "rotate": "hadamard:5"}]})
    assert cfg.rotate == "hadamard" and cfg.layers[0].rotate == "hadamard:5"
    assert QuantConfig.coerce(cfg.to_dict()) == cfg and "rotate" not in QuantConfig.coerce({}).to_dict()
    assert QuantConfig.coerce({"fold": False}).to_dict()["fold"] is False
    assert "fold" not in QuantConfig.coerce({}).to_dict()
    for bad in ("walsh", "hadamard:x", "hadamard:-1"):
        with pytest.raises(ValueError, match="valid: hadamard"):
            rotation_spec(bad)
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="one of them"):
        dl.quantize_model(model, {"rotate": "hadamard", "equalize": "smoothquant"}, calibration=[torch.randn(2, 4)])
    with pytest.raises(ValueError, match="Linear"):
        dl.quantize_model(nn.Sequential(nn.Embedding(4, 4)), {"rotate": "hadamard"})
    assert not hasattr(model[0], "parametrizations")


def test_hadamard_is_orthogonal_with_power_of_two_blocks():
    for n in (1, 6, 96, 384):
        r = hadamard(n, seed=2)
        assert torch.allclose(r @ r.T, torch.eye(n), atol=1e-5)
        b = n & -n
        assert r.abs().max() == pytest.approx(b ** -0.5) and (r != 0).sum() == n * b
    assert not torch.equal(hadamard(8, 0), hadamard(8, 1))
    with pytest.raises(ValueError, match="positive width"):
        hadamard(0)

"""quantize_model / restore: bit-exact restore, idempotence, atomicity, tied weights, static vs dynamic scales,
training, saving and loading, an unseen architecture, devices."""

from __future__ import annotations

import pytest
import torch
from model_helpers import ConvNet, SeqModel, assert_same, mlp, snapshot
from torch import nn
from torch.nn.utils import parametrize

import dtypelab as dl
from dtypelab.model import quant_state
from dtypelab.schemes import fake_quantize

W_A = {"weights": "posit(6,1)/channel/log2-hist", "activations": "posit(8,1)/tensor/log2-energy"}
SEQ_CONFIG = {"weights": "posit(6,1)/channel/log2-hist", "activations": "posit(8,1)/tensor/log2-hist",
              "layers": [{"match": "attn", "activation_scales": "dynamic"}]}


def _tokens(seed: int = 0, n: int = 4) -> torch.Tensor:
    return torch.randint(0, 40, (n, 7), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("make", "data", "config"), [
    (mlp, lambda: torch.randn(16, 8), W_A),
    (ConvNet, lambda: torch.randn(4, 1, 8, 8), {"weights": "int8/channel/pow2", "activations": "uint8/tensor/pow2",
                                                 "bias": "int32"}),
    (SeqModel, _tokens, SEQ_CONFIG),
])
def test_quantize_then_restore_is_bit_exact(make, data, config):
    """After restore: same state_dict (keys in order, values bit for bit), same Parameter objects, classes, hooks,
    attributes, and bit-identical outputs; while quantized the outputs differ."""
    torch.manual_seed(0)
    model = make().eval()
    x = data()
    snap = snapshot(model)
    before = model(x)
    dl.quantize_model(model, config, calibration=[x])
    assert not torch.equal(model(x), before)
    dl.restore(model)
    assert_same(model, snap)
    assert torch.equal(model(x), before)
    assert quant_state(model) is None


def test_quantizing_twice_is_quantizing_once():
    """A second quantize_model restores first: same state_dict, same outputs, same report; one restore suffices."""
    model, x = mlp(), torch.randn(16, 8)
    snap = snapshot(model)
    r1 = dl.quantize_model(model, W_A, calibration=[x])
    out1, sd1 = model(x), {k: v.clone() for k, v in model.state_dict().items()}
    r2 = dl.quantize_model(model, W_A, calibration=[x])
    assert torch.equal(model(x), out1)
    assert list(model.state_dict()) == list(sd1)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd1.items())
    assert r1 == r2
    assert all(len(m.parametrizations.weight) == 1 for m in model.modules() if parametrize.is_parametrized(m))
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == 3
    dl.restore(model)
    assert_same(model, snap)


def test_requantizing_with_another_config_replaces_the_first():
    model = mlp()
    dl.quantize_model(model, {"weights": "int4/tensor/absmax"})
    dl.quantize_model(model, {"weights": "e4m3/channel/absmax"})
    w = model[0].parametrizations.weight.original
    assert torch.equal(model[0].weight, fake_quantize(w, "e4m3/channel/absmax"))
    assert len(model[0].parametrizations.weight) == 1


def test_restore_of_an_unquantized_model_changes_nothing():
    model = mlp()
    snap = snapshot(model)
    assert dl.restore(model) is model
    assert_same(model, snap)


def test_wrong_calibration_data_leaves_the_model_as_it_was():
    """A calibration batch of the wrong shape is a ValueError naming the batch; nothing is changed."""
    model = mlp()
    snap = snapshot(model)
    with pytest.raises(ValueError, match="calibration batch 1 could not run"):
        dl.quantize_model(model, W_A, calibration=[torch.randn(4, 8), torch.randn(4, 9)])
    assert_same(model, snap)


def test_failure_part_way_through_attaching_rolls_back(monkeypatch):
    """If attaching fails on the third weight, the first two are taken off again."""
    model, x = mlp(), torch.randn(16, 8)
    snap = snapshot(model)
    real = parametrize.register_parametrization
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(parametrize, "register_parametrization", flaky)
    with pytest.raises(RuntimeError, match="injected"):
        dl.quantize_model(model, W_A, calibration=[x])
    assert len(calls) == 3
    assert_same(model, snap)


def test_failed_requantization_keeps_the_previous_quantization():
    model, x = mlp(), torch.randn(16, 8)
    dl.quantize_model(model, W_A, calibration=[x])
    out = model(x)
    with pytest.raises(ValueError):
        dl.quantize_model(model, W_A, calibration=[torch.randn(3, 5)])
    assert torch.equal(model(x), out)
    assert quant_state(model) is not None


def test_static_calibration_without_batches_is_an_error():
    model = mlp()
    snap = snapshot(model)
    with pytest.raises(ValueError, match="need calibration"):
        dl.quantize_model(model, W_A)
    assert_same(model, snap)


def test_static_scales_come_from_calibration_and_stay():
    """Static: every forward uses the scales computed once from all calibration inputs of the layer."""
    model = mlp()
    batches = [torch.randn(8, 8), 3 * torch.randn(8, 8)]
    dl.quantize_model(model, {"activations": "int8/tensor/absmax", "layers": [{"match": "re:[24]",
                                                                                "activations": None}]},
                      calibration=batches)
    scales = quant_state(model).activations["0"].scales
    assert float(scales) == float(torch.tensor(float(torch.cat(batches).abs().max()) / 127).float())  # fp32-stored
    probe = torch.randn(5, 8) * 10
    got = []
    model[0].register_forward_hook(lambda m, a, out: got.append(a[0]))
    model(probe)
    assert torch.equal(got[0], fake_quantize(probe, "int8/tensor/absmax", scales))


def test_dynamic_scales_are_recomputed_every_forward():
    """Dynamic (PositTune): each forward quantizes the input with scales computed from that input."""
    model = mlp()
    dl.quantize_model(model, {"activations": "posit(6,1)/tensor/log2-hist", "activation_scales": "dynamic"})
    got = []
    model[2].register_forward_hook(lambda m, a, out: got.append(a[0]))
    for scale in (1.0, 100.0):
        x = torch.randn(6, 8) * scale
        got.clear()
        h = model[1](model[0](x))  # the input of layer 2, computed the same way
        model(x)
        assert torch.equal(got[0], fake_quantize(h, "posit(6,1)/tensor/log2-hist"))


def test_weights_are_fake_quantized_and_cached_only_without_grad():
    model = mlp()
    dl.quantize_model(model, {"weights": "posit(6,1)/channel/log2-hist"})
    w = model[0].parametrizations.weight.original
    ref = fake_quantize(w.detach(), "posit(6,1)/channel/log2-hist")
    with torch.no_grad():
        a, b = model[0].weight, model[0].weight
        assert a is b and torch.equal(a, ref)  # primed by quantize_model, bit-identical to fake_quantize
        w.mul_(2)
        assert torch.equal(model[0].weight, fake_quantize(w.detach(), "posit(6,1)/channel/log2-hist"))
    assert model[0].weight.requires_grad


def test_qat_gradients_flow_and_training_changes_the_stored_weights():
    """Fake-quant with straight-through gradients: the optimizer updates the original (FP32) weights."""
    model, x = mlp(), torch.randn(32, 8)
    dl.quantize_model(model, W_A, calibration=[x])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model[0].parametrizations.weight.original.detach().clone()
    loss = model(x).pow(2).mean()
    loss.backward()
    assert model[0].parametrizations.weight.original.grad is not None
    opt.step()
    assert not torch.equal(model[0].parametrizations.weight.original, before)


def test_save_and_load_a_quantized_model(tmp_path):
    """A quantized model's state_dict loads into the same architecture quantized the same way: same outputs."""
    x = torch.randn(16, 8)
    a = mlp(seed=1)
    dl.quantize_model(a, {"weights": "int4/channel/absmax", "activations": "int8/tensor/absmax"}, calibration=[x])
    torch.save(a.state_dict(), tmp_path / "q.pt")
    b = mlp(seed=2)
    dl.quantize_model(b, {"weights": "int4/channel/absmax", "activations": "int8/tensor/absmax"}, calibration=[x])
    b.load_state_dict(torch.load(tmp_path / "q.pt"))
    dl.quantize_model(b, {"weights": "int4/channel/absmax", "activations": "int8/tensor/absmax"}, calibration=[x])
    assert torch.equal(a(x), b(x))
    dl.restore(b)
    assert torch.equal(b[0].weight, a[0].parametrizations.weight.original)


def test_tied_weights_stay_tied():
    """Embedding and output Linear share one Parameter: quantized, trained and restored, they still do, and the
    report stores it once."""
    model, x = SeqModel(), _tokens()
    w = model.emb.weight
    report = dl.quantize_model(model, SEQ_CONFIG, calibration=[x])
    assert model.emb.parametrizations.weight.original is w
    assert model.head.parametrizations.weight.original is w
    assert torch.equal(model.emb.weight, model.head.weight)
    model(x).sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    assert torch.equal(model.emb.weight, model.head.weight)
    dl.restore(model)
    assert model.emb.weight is w and model.head.weight is w
    shared_bits = report.layers["emb"].weight_bits_per_param * w.numel()
    others = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("emb", "conv.weight",
                                                                                     "attn.in_proj_weight",
                                                                                     "attn.out_proj.weight")))
    quantized = sum(report.layers[n].weight_bits_per_param * k for n, k in
                    [("conv", model.conv.weight.numel()),
                     ("attn", model.attn.in_proj_weight.numel() + model.attn.out_proj.weight.numel())])
    assert report.size_mb == pytest.approx((shared_bits + quantized + 32 * others) / 8e6)
    assert report.fp32_mb == pytest.approx(32 * sum(p.numel() for p in model.parameters()) / 8e6)


def test_unseen_architecture_trains_quantized():
    """Embedding + Conv1d + MultiheadAttention (+ LayerNorm, residuals): quantize, train a step, restore."""
    torch.manual_seed(0)
    model, x = SeqModel(), _tokens(n=8)
    y = torch.randint(0, 40, (8, 7))
    snap = snapshot(model)
    ref = model(x)
    report = dl.quantize_model(model, SEQ_CONFIG, calibration=[x])
    assert list(report.layers) == ["emb", "conv", "attn", "head"]
    assert report.layers["attn"].activation_scales == "dynamic"
    assert report.layers["attn"].act_sqnr_db > 20
    out = model(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out - ref).abs().max() > 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x).reshape(-1, 40), y.reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    dl.restore(model)
    assert snapshot(model)["keys"] == snap["keys"]
    assert snapshot(model)["classes"] == snap["classes"]


def test_mha_with_separate_projections_and_kwargs():
    """kdim/vdim != embed_dim gives q/k/v_proj_weight; inputs passed as keywords are quantized too."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, kdim=4, vdim=6, batch_first=True)
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    ref = mha(query=q, key=k, value=v)[0]
    snap = snapshot(mha)
    r = dl.quantize_model(mha, {"weights": "int4/channel/absmax", "activations": "int4/tensor/absmax"},
                          calibration=[(q, k, v)], forward=lambda m, b: m(query=b[0], key=b[1], value=b[2]))
    assert set(mha.parametrizations) == {"q_proj_weight", "k_proj_weight", "v_proj_weight"}
    assert r.layers[""].params == sum(p.numel() for p in mha.parameters())
    out = mha(query=q, key=k, value=v)[0]
    assert not torch.equal(out, ref)
    dl.restore(mha)
    assert_same(mha, snap)
    assert torch.equal(mha(query=q, key=k, value=v)[0], ref)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")


@pytest.mark.parametrize(("make", "data", "config", "dtype"), [
    (mlp, lambda: torch.randn(16, 8), W_A, torch.float32),
    (ConvNet, lambda: torch.randn(4, 1, 8, 8), {"weights": "int8/channel/pow2", "activations": "uint8/tensor/pow2",
                                                 "bias": "int32"}, torch.float64),
    (SeqModel, _tokens, SEQ_CONFIG, torch.float32),
])
def test_any_device(make, data, config, dtype):
    """Quantize on whatever accelerator exists (CUDA / MPS; CPU otherwise): forward, a training step, outputs close
    to the CPU's, and a bit-exact restore there."""
    device = _device()
    torch.manual_seed(0)
    cpu_model, x = make().to(dtype), data()
    x = x.to(dtype) if x.is_floating_point() else x
    model = make().to(dtype)
    model.load_state_dict(cpu_model.state_dict())
    model.to(device)
    xd = x.to(device)
    snap = snapshot(model)
    before = model(xd)
    dl.quantize_model(cpu_model, config, calibration=[x])
    dl.quantize_model(model, config, calibration=[xd])
    out = model(xd)
    assert out.device == xd.device
    # close to the CPU's result (not bit-equal: calibration runs the float model, whose sums the device orders
    # differently, and a power-of-two scale can land on the other side of a binade)
    ref, got = cpu_model(x).detach(), out.detach().cpu()
    assert torch.isfinite(got).all() and float((got - ref).abs().max()) <= 0.25 * float(ref.abs().max())
    out.float().pow(2).mean().backward()
    dl.restore(model)
    assert_same(model, snap)
    assert torch.equal(model(xd), before)


def test_integer_path_on_the_device():
    device = _device()
    torch.manual_seed(0)
    net, x = ConvNet().double().to(device), torch.randn(6, 1, 8, 8, dtype=torch.float64, device=device)
    dl.quantize_model(net, {"weights": "int8/channel/pow2", "activations": "uint8/tensor/pow2", "bias": "int32"},
                      calibration=[x])
    assert torch.equal(dl.integer.convert(net).to(device)(x), net(x))


def test_moving_a_quantized_model_moves_its_static_scales():
    model, x = mlp(), torch.randn(16, 8)
    dl.quantize_model(model, W_A, calibration=[x])
    out = model(x)
    model.double()
    assert model(x.double()).dtype == torch.float64
    model.float()
    assert torch.equal(model(x), out)


def test_calibration_changes_no_buffers_and_keeps_the_training_flags():
    """Calibration runs in eval mode without grad: BatchNorm statistics stay, train/eval flags come back."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    model.train()
    model[1].eval()
    snap = snapshot(model)
    dl.quantize_model(model, W_A, calibration=[torch.randn(8, 1, 8, 8) * 5])
    flags = dict(snap["training"])
    assert {n: m.training for n, m in model.named_modules() if n in flags} == flags
    dl.restore(model)
    assert_same(model, snap)


@pytest.mark.parametrize("scheme", ["int8/channel:-1/absmax", "posit(8,1)/channel:-1/log2-energy"])
def test_static_per_channel_activation_scales(scheme):
    """channel:AXIS activations: one static scale per feature, over every calibration input (3-D inputs here)."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 3)
    batches = [torch.randn(2, 5, 6) * torch.arange(1, 7), torch.randn(3, 4, 6)]
    dl.quantize_model(lin, {"activations": scheme}, calibration=batches)
    q = quant_state(lin).activations[""]
    assert q.scales.shape == (6,)
    flat = torch.cat([b.reshape(-1, 6) for b in batches])
    from dtypelab.schemes import Scheme

    expect = Scheme.parse(scheme.replace("channel:-1", "channel:1")).compute_scales(flat).reshape(-1)
    assert torch.equal(q.scales, expect)
    x = torch.randn(2, 2, 6)
    got = []
    lin.register_forward_hook(lambda m, a, out: got.append(a[0]))
    lin(x)
    assert torch.equal(got[0], fake_quantize(x, scheme, q.scales))


def test_bias_on_the_accumulator_grid_keeps_the_last_bit_without_grad():
    """Under no_grad the rounded bias is returned as is: ``b + (q - b)`` rounds where ``q`` is far from ``b``
    (here a bias past INT32 clamped to the grid's top)."""
    from dtypelab.model.quantize import BiasOnAccumulatorGrid
    from dtypelab.schemes import Scheme

    layer = nn.Linear(2, 1).double()
    with torch.no_grad():
        layer.weight.fill_(1.0)
    grid = BiasOnAccumulatorGrid(layer, "weight", Scheme.parse("int8/tensor/pow2"), torch.tensor(2.0**-30))
    s = float(grid.accumulator_scale())
    b = torch.tensor([2.0**30 + 0.5], dtype=torch.float64, requires_grad=True)
    want = (2**31 - 1) * s
    assert (b.detach() + (want - b.detach())).item() != want  # the STE form loses it
    with torch.no_grad():
        assert grid(b).item() == want
    out = grid(b)
    out.backward()
    assert b.grad.item() == 1.0

"""A layer ``compute:`` on transformers' GPT-2 ``Conv1D`` (``y = x W + b``, ``W`` stored ``(in, out)``): FP32
compute equals the library, coarse accumulators equal a sequential reference written here, fixed-point scales
per column, straight-through gradients, restore, energy, and the errors of a compute that reaches nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dtypelab as dl

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402

from dtypelab.arith.ops import LayerForward  # noqa: E402
from dtypelab.model.layers import LAYER_KINDS  # noqa: E402
from dtypelab.workloads.lm import register_conv1d  # noqa: E402

FP32 = {"accumulator": "fp32", "chunk": 4096}  # one chunk: the float32 rounding of the float64 dot product
FP16 = {"accumulator": "fp16", "chunk": 1}  # the running sum rounded to fp16 after every product
BF16 = {"accumulator": "bf16", "chunk": 32}  # 32 products at a time, the running sum rounded to bf16


@pytest.fixture(autouse=True)
def _conv1d_kind():
    register_conv1d()


# ---- an independent reference ---------------------------------------------------------------------------------


PRECISION = {torch.float16: (11, -14), torch.bfloat16: (8, -126)}  # significant bits, smallest normal exponent


def _round(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float64 -> the nearest ``dtype`` value (ties to even, subnormals; no overflow here), in one rounding
    (torch's own float64 -> float16 cast rounds twice, through float32)."""
    p, emin = PRECISION[dtype]
    _, e = torch.frexp(v)  # v = m 2^e, 0.5 <= |m| < 1
    ulp = torch.ldexp(torch.ones_like(v), e.clamp(min=emin + 1) - p)
    return torch.round(v / ulp) * ulp


def _reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, chunk: int) -> torch.Tensor:
    """``x @ w + b`` (``w`` as Conv1D stores it, ``(in, out)``): the products of each chunk of ``chunk`` summed in
    float64 and added to the running sum, rounded to ``dtype`` after each chunk and after the bias."""
    x2, w, b = x.reshape(-1, x.shape[-1]).double(), w.double(), b.double()
    s = torch.zeros(x2.shape[0], w.shape[1], dtype=torch.float64)
    for i in range(0, x2.shape[1], chunk):
        part = torch.zeros_like(s)
        for j in range(i, min(i + chunk, x2.shape[1])):
            part = part + x2[:, j, None] * w[None, j, :]
        s = _round(s + part, dtype)
    return _round(s + b, dtype).float().reshape(*x.shape[:-1], w.shape[1])


def test_reference_rounds_every_chunk():
    x, w, b = torch.tensor([[1.0, 2.0**-11, 2.0**-11]]), torch.ones(3, 1), torch.zeros(1)
    assert _reference(x, w, b, torch.float16, 1).item() == 1.0  # each 2^-11 is half an fp16 ulp: ties to even
    assert _reference(x, w, b, torch.float16, 3).item() == 1 + 2.0**-10  # one chunk: the exact sum, rounded
    v = torch.tensor([float.fromhex("0x1.2ea000e3e34p-9"), 2.0**-24 * 1.5, -(1 + 2.0**-8 + 2.0**-30)],
                     dtype=torch.float64)  # just above an fp16 tie; a subnormal tie; just above a bf16 tie
    assert _round(v, torch.float16).tolist() == [float.fromhex("0x1.2ecp-9"), 2.0**-23, -(1 + 2.0**-8)]
    assert _round(v, torch.bfloat16)[2].item() == -(1 + 2.0**-7)


def _grid(*shape: int, gen: torch.Generator) -> torch.Tensor:
    """Values with 11 significant bits: products and their float64 sums are exact in any order."""
    return torch.randint(-1024, 1024, shape, generator=gen) / 1024


def _conv1d(nx: int = 96, nf: int = 6) -> tuple[Conv1D, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    layer = Conv1D(nf, nx).eval()
    with torch.no_grad():
        layer.weight.copy_(_grid(nx, nf, gen=g))
        layer.bias.copy_(_grid(nf, gen=g))
    return layer, _grid(2, 5, nx, gen=g)


# ---- a bare Conv1D --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("compute", "dtype", "chunk"), [(FP16, torch.float16, 1), (BF16, torch.bfloat16, 32)])
def test_coarse_accumulator_equals_the_reference(compute, dtype, chunk):
    layer, x = _conv1d()
    with torch.no_grad():
        before = layer(x)
    sd = {k: v.clone() for k, v in layer.state_dict().items()}
    dl.quantize_model(layer, {"compute": compute})
    assert isinstance(layer.__dict__["forward"], LayerForward)
    with torch.no_grad():
        got = layer(x)
    assert torch.equal(got, _reference(x, sd["weight"], sd["bias"], dtype, chunk))
    assert not torch.equal(got, before)
    dl.restore(layer)
    assert "forward" not in layer.__dict__
    assert all(torch.equal(layer.state_dict()[k], v) for k, v in sd.items())
    with torch.no_grad():
        assert torch.equal(layer(x), before)


def test_fp32_compute_equals_the_layer_and_the_gradient_passes_straight_through():
    layer, x = _conv1d()
    with torch.no_grad():
        before = layer(x)
    xg = x.clone().requires_grad_()
    (layer(xg) ** 2).sum().backward()
    want_x, want_w, want_b = xg.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()
    layer.zero_grad()
    xg.grad = None
    dl.quantize_model(layer, {"compute": FP32})
    with torch.no_grad():
        assert float((layer(x) - before).abs().max()) <= 1e-5
    dl.quantize_model(layer, {"compute": {"accumulator": "bf16", "chunk": 4}})
    y = layer(xg)
    assert not torch.equal(y.detach(), before)
    (y ** 2).sum().backward()  # the gradient of the FP32 function at the simulated output
    dy = 2 * y.detach()
    assert torch.allclose(xg.grad, dy @ layer.weight.detach().T, atol=1e-5)
    assert torch.allclose(layer.weight.grad, x.reshape(-1, 96).T @ dy.reshape(-1, 6), atol=1e-4)
    assert torch.allclose(layer.bias.grad, dy.reshape(-1, 6).sum(0), atol=1e-5)
    assert not torch.equal(xg.grad, want_x) and not torch.equal(layer.bias.grad, want_b)  # dy is the simulated y's
    assert float((layer.weight.grad - want_w).abs().max()) < 0.05 * float(want_w.abs().max())
    dl.restore(layer)


def test_fixed_point_scales_are_per_column():
    """int32 over int8 codes: the exact integer dot products times s_x * s_w[column], as the float64 layer
    computes them from the same fake-quantized weights and inputs; per-channel scales on axis 0 (the input rows
    of the stored weight) are refused."""
    layer, x = _conv1d()
    layer, x = layer.double(), x.double()
    with torch.no_grad():
        layer.bias.zero_()
        layer.weight.mul_(torch.tensor([1.0, 8.0, 0.25, 3.0, 0.5, 40.0], dtype=torch.float64))  # column ranges
    cfg = {"weights": "int8/channel:1/pow2", "activations": "int8/tensor/pow2"}
    dl.quantize_model(layer, cfg, calibration=[x])
    with torch.no_grad():
        want = layer(x)  # float64 sums of integer multiples of s_x * s_w: exact
    dl.quantize_model(layer, {**cfg, "compute": {"accumulator": "int32"}}, calibration=[x])
    with torch.no_grad():
        assert torch.equal(layer(x), want)
    scales = dl.Scheme.parse("int8/channel:1/pow2").compute_scales(layer.parametrizations.weight.original)
    assert scales.numel() == 6 and len(set(scales.reshape(-1).tolist())) > 1
    with pytest.raises(ValueError, match=r"per output channel \(channel:1"):
        dl.quantize_model(layer, {"weights": "int8/channel/pow2", "activations": "int8/tensor/pow2",
                                  "compute": {"accumulator": "int32"}}, calibration=[x])
    dl.restore(layer)


# ---- a tiny GPT-2 ---------------------------------------------------------------------------------------------


def _gpt2() -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
                                  eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


IDS = torch.randint(64, (2, 11), generator=torch.Generator().manual_seed(1))
CONV1D = [f"transformer.h.{i}.{p}" for i in range(2) for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                  "mlp.c_proj")]


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_gpt2_compute_reaches_every_conv1d():
    model = _gpt2()
    before = _logits(model)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    dl.quantize_model(model, {"compute": FP32})
    assert all(isinstance(model.get_submodule(n).__dict__.get("forward"), LayerForward) for n in CONV1D)
    assert float((_logits(model) - before).abs().max()) <= 1e-4

    # the attention op kind calls c_attn / c_proj as modules: their layer compute applies inside it too
    dl.quantize_model(model, {"compute": FP16, "ops": [{"match": "GPT2Attention", "compute": FP16}]})
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, a, y, n=n: seen.__setitem__(n, (a[0], y)))
             for n in CONV1D]
    coarse = _logits(model)
    for h in hooks:
        h.remove()
    for n in CONV1D:  # each projection: the fp16 sequential sum of its own input and stored weight
        x, y = seen[n]
        assert torch.equal(y, _reference(x, sd[n + ".weight"], sd[n + ".bias"], torch.float16, 1)), n
    assert float((coarse - before).abs().max()) > 1e-4

    dl.restore(model)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert list(model.state_dict()) == list(sd) and all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert torch.equal(_logits(model), before)


def test_gpt2_layer_rule_compute_and_errors(monkeypatch):
    model = _gpt2()
    plans = dl.model.resolve(model, {"layers": [{"match": "*.c_fc", "compute": BF16}]})
    assert {n for n, p in plans.items() if p.compute is not None} == {"transformer.h.0.mlp.c_fc",
                                                                      "transformer.h.1.mlp.c_fc"}
    with pytest.raises(ValueError, match="Embedding layer cannot have it"):
        dl.model.resolve(model, {"layers": [{"match": "transformer.wte", "compute": BF16}]})
    plans = dl.model.resolve(model, {"compute": BF16})  # Embedding layers: left in FP32, no error
    assert plans["transformer.wte"].compute is None and plans["lm_head"].compute is not None
    with pytest.raises(ValueError, match="has none .*Embedding, MultiheadAttention"):
        dl.quantize_model(nn.ModuleDict({"e": nn.Embedding(4, 8), "a": nn.MultiheadAttention(8, 2)}),
                          {"compute": BF16})
    monkeypatch.delitem(LAYER_KINDS, "Conv1D")  # as before register_conv1d: the projections are no layers
    with pytest.raises(ValueError, match=r"'transformer.h.0.attn.c_attn'.*register_conv1d"):
        dl.quantize_model(model, {"compute": BF16})
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_gpt2_energy_prices_the_conv1d_accumulation():
    model = _gpt2()
    base = {"weights": "e4m3", "activations": "e4m3"}
    plain = dl.cost.energy(model, base, example={"input_ids": IDS})
    sim = dl.cost.energy(model, {**base, "compute": BF16}, example={"input_ids": IDS})
    tokens = IDS.numel()
    for name, outputs, k in (("transformer.h.0.attn.c_attn", 96, 32), ("transformer.h.1.mlp.c_proj", 32, 128)):
        row = next(r for r in sim.rows if r.name == name)
        acc = {x.op: x.count for x in row.lines if x.term == "acc"}
        assert acc == {"bf16 add (accumulator)": tokens * outputs * (k - 1)}, name
        was = next(r for r in plain.rows if r.name == name)
        assert "bf16 add (accumulator)" not in {x.op for x in was.lines}
        assert row.total_pj < was.total_pj
    assert sim.total_pj < plain.total_pj

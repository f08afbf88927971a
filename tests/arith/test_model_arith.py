"""Simulated arithmetic inside models: layers, the integer-only path, convolutions, BERT attention, restore."""

from __future__ import annotations

import pytest
import torch
from arith_helpers import recorded_matmuls
from torch import nn

import dtypelab as dl
from dtypelab.arith import Compute
from dtypelab.model.config import QuantConfig

LAB = {"weights": "int8/channel/pow2", "activations": "uint8/tensor/pow2", "bias": "int32"}


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).double().eval()


def test_int32_accumulator_equals_the_integer_only_path():
    """INT8 x INT8 -> INT32 in the float32 model equals dl.integer's integer-only model exactly."""
    x = torch.rand(40, 64, dtype=torch.float64) * 2 - 0.5
    net = _mlp()
    dl.quantize_model(net, LAB, calibration=[x])
    want = dl.integer.convert(net)(x)
    dl.quantize_model(net, {**LAB, "compute": {"accumulator": "int32"}}, calibration=[x])
    with torch.no_grad():
        assert torch.equal(net(x), want)
        got32 = net.float()(x.float())
    assert torch.equal(got32, want.float())


def test_int32_overflow_policy_is_honoured():
    x = torch.rand(6, 64, dtype=torch.float64)
    net = nn.Sequential(nn.Linear(64, 3)).double().eval()
    dl.quantize_model(net, LAB, calibration=[x])
    with torch.no_grad():
        net[0].parametrizations.weight.original.abs_()
        unit = net[0].parametrizations.bias[0].accumulator_scale()[0]
        net[0].parametrizations.bias.original[0] = (2**31 - 1) * unit  # INT32_MAX: the products push it over
    int_net = dl.integer.convert(net)
    with pytest.raises(OverflowError):
        int_net(x)
    codes = int_net[0](x)
    layer = int_net[1]
    acc = layer.accumulate(codes.long() - layer.in_zero_point) + layer.bias.long()
    assert int(acc.max()) > 2**31 - 1
    for policy, fix in (("saturate", lambda a: a.clamp(-(2**31), 2**31 - 1)),
                        ("wrap", lambda a: (a + 2**31) % 2**32 - 2**31)):
        dl.quantize_model(net, {**LAB, "compute": {"accumulator": "int32", "overflow": policy}}, calibration=[x])
        with torch.no_grad():
            assert torch.equal(net(x), int_net[2](fix(acc))), policy
    dl.quantize_model(net, {**LAB, "compute": {"accumulator": "int32"}}, calibration=[x])
    with pytest.raises(OverflowError, match="int32"), torch.no_grad():
        net(x)


def test_compute_changes_results_and_restore_is_bit_exact():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(256, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 8)).eval()
    with torch.no_grad():  # 11-bit values: float64 sums are exact, float32 ones are not
        for p in net[0].parameters():
            p.copy_(torch.randint(-1024, 1024, p.shape) / 1024)
    x = torch.randint(-1024, 1024, (32, 256)) / 1024
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        before = net(x)
    w, b = sd["0.weight"].double(), sd["0.bias"].double()
    dot = x.double() @ w.T
    dl.quantize_model(net, {"compute": "quire"})
    with torch.no_grad():
        assert torch.equal(net[0](x), (dot + b).float())  # one rounding of the exact sum with the bias
    dl.quantize_model(net, {"compute": {"accumulator": "fp32", "chunk": 256}})
    with torch.no_grad():
        assert torch.equal(net[0](x), (dot.float().double() + b).float())  # the chunk, then the bias: two
    dl.quantize_model(net, {"compute": {"accumulator": "bf16", "chunk": 8},
                            "ops": [{"match": "LayerNorm", "output": "e4m3"}, {"match": "1", "output": "bf16"}]})
    with torch.no_grad():
        out = net(x)
        ln = net[2](net[1](net[0](x)))
    assert not torch.equal(out, before)
    assert torch.equal(dl.fmt("e4m3").quantize(ln.double()).float(), ln)
    assert float((out - before).abs().max()) < 0.5
    dl.restore(net)
    assert "forward" not in net[0].__dict__ and not net[2]._forward_hooks
    assert list(net.state_dict()) == list(sd) and all(torch.equal(net.state_dict()[k], v) for k, v in sd.items())
    with torch.no_grad():
        assert torch.equal(net(x), before)


def test_gradient_passes_straight_through():
    net = nn.Sequential(nn.Linear(16, 4))
    dl.quantize_model(net, {"compute": {"accumulator": "bf16", "chunk": 4}})
    x = torch.randn(3, 16, requires_grad=True)
    net(x).sum().backward()
    assert torch.allclose(x.grad, net[0].weight.sum(0).expand(3, 16))


@pytest.mark.parametrize("conv", [nn.Conv2d(3, 5, 3, padding=1, stride=2), nn.Conv1d(3, 4, 5, dilation=2)])
def test_convolutions(conv):
    torch.manual_seed(0)
    conv = conv.double().eval()
    x = torch.randint(-4, 5, (2, 3, 9, 9) if isinstance(conv, nn.Conv2d) else (2, 3, 20)).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-3, 4, conv.weight.shape))
        conv.bias.copy_(torch.randint(-3, 4, conv.bias.shape))
    want = conv(x)
    dl.quantize_model(conv, {"compute": {"accumulator": "fp16", "chunk": 1}})
    with torch.no_grad():
        assert torch.equal(conv(x), want)  # small integers: every partial sum is exact in fp16
        conv.weight.mul_(1 + 2**-9)
        assert not torch.equal(conv(x), nn.Conv2d.forward(conv, x) if x.dim() == 4 else nn.Conv1d.forward(conv, x))


def test_config_round_trip_and_errors():
    cfg = QuantConfig.coerce({"compute": {"accumulator": "align:13", "chunk": 128},
                              "layers": [{"match": "0", "compute": "quire"}],
                              "ops": [{"match": "LayerNorm", "output": "bfloat16"}]})
    assert QuantConfig.coerce(cfg.to_dict()) == cfg
    assert cfg.to_dict()["ops"] == [{"match": "LayerNorm", "output": "bf16"}]
    assert "compute" not in QuantConfig.coerce({"weights": "int8"}).to_dict()
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Embedding(3, 4))
    plans = dl.model.resolve(net, cfg)
    assert plans["0"].compute == Compute.parse("quire") and plans["2"].compute is None
    with pytest.raises(ValueError, match="Embedding layer cannot have it"):
        dl.model.resolve(net, {"layers": [{"match": "Embedding", "compute": "bf16"}]})
    with pytest.raises(ValueError, match="matches no module"):
        dl.quantize_model(net, {"ops": [{"match": "Softmax", "output": "bf16"}]})
    with pytest.raises(ValueError, match="takes output, not softmax"):
        dl.quantize_model(net, {"ops": [{"match": "LayerNorm", "softmax": "bf16"}]})
    with pytest.raises(ValueError, match="accumulator 'fp99'"):
        QuantConfig.coerce({"compute": {"accumulator": "fp99"}})
    with pytest.raises(ValueError, match="static per-tensor activation scales"):
        dl.quantize_model(nn.Sequential(nn.Linear(4, 4)), {"activations": "int8/tensor/absmax",
                                                            "activation_scales": "dynamic", "compute": "int32"})
    assert "forward" not in net[0].__dict__  # nothing attached by the failed calls


# ---- MiniLM (BERT) --------------------------------------------------------------------------------------------

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Posits have tapered accuracy around one.",
             "Quantization trades precision for size.", "Hello world"]


@pytest.fixture(scope="module")
def minilm(minilm_bert):
    model, tokenizer = minilm_bert
    return model, dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))


def _hidden(model, batch):
    with torch.no_grad():
        return model(**batch).last_hidden_state


def test_bert_attention_matmuls_are_simulated(minilm):
    """BERT self-attention's Q·Kᵀ and A·V go through the compute model: in FP32 (one chunk) the output matches
    the library's attention; quire-free bf16 attention products and rounded softmax / residual adds change it;
    restore gives the model back bit for bit."""
    model, batch = minilm
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    ref = _hidden(model, batch)
    dl.quantize_model(model, {"ops": [{"match": "BertSelfAttention", "compute": {"accumulator": "fp32",
                                                                                  "chunk": 512}}]})
    with recorded_matmuls() as seen:
        fp32 = _hidden(model, batch)
    assert len(seen) == 12  # 6 layers x (Q·Kᵀ, A·V)
    b, n = batch["input_ids"].shape
    assert seen[0] == ((b, 12, n, 32), (b, 12, 32, n)) and seen[1] == ((b, 12, n, n), (b, 12, n, 32))
    assert float((fp32 - ref).abs().max()) < 1e-4
    dl.quantize_model(model, {"ops": [
        {"match": "BertSelfAttention", "compute": {"accumulator": "bf16", "chunk": 8}, "softmax": "bf16",
         "operands": "e4m3"},
        {"match": "re:.*(attention\\.output|layer\\.\\d+\\.output)", "residual": "bf16"},
        {"match": "GELUActivation", "output": "bf16"}]})
    low = _hidden(model, batch)
    assert float((low - ref).abs().max()) > 1e-3
    cos = torch.nn.functional.cosine_similarity(low.reshape(-1, 384), ref.reshape(-1, 384)).min()
    assert float(cos) > 0.9
    dl.restore(model)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert torch.equal(_hidden(model, batch), ref)


def test_energy_prices_the_compute_config():
    layer = nn.Linear(256, 10)
    x = torch.rand(2, 256)
    base = {"weights": "e4m3", "activations": "e4m3"}
    plain = dl.cost.energy(layer, base, example=x)
    bf16 = dl.cost.energy(layer, {**base, "compute": {"accumulator": "bf16", "chunk": 32}}, example=x)
    align = dl.cost.energy(layer, {**base, "compute": {"accumulator": "align:13", "chunk": 128}}, example=x)
    ops = {line.term: line for line in align.rows[0].lines}
    assert ops["acc"].op == "int14 add (align:13)" and ops["acc"].count == 20 * 255
    assert ops["promote"].count == 20 * 2  # one promotion per chunk of 128
    assert {line.op for line in bf16.rows[0].lines if line.term == "acc"} == {"bf16 add (accumulator)"}
    assert align.total_pj < bf16.total_pj < plain.total_pj


def test_energy_prices_the_attention_compute(minilm):
    """An ops rule's operands and compute price BERT attention's Q·Kᵀ and A·V (not only the Linear layers):
    the accumulate adds of those products at the accumulator's width, nothing else changed."""
    model, batch = minilm
    base = {"weights": "e4m3", "activations": "e4m3"}

    def priced(attention):
        ops = [] if attention is None else [{"match": "BertSelfAttention", "operands": "e4m3", **attention}]
        return dl.cost.energy(model, {**base, "ops": ops}, example=batch)

    plain, e4m3, bf16, quire = (priced(a) for a in (None, {}, {"compute": {"accumulator": "bf16", "chunk": 32}},
                                                         {"compute": {"accumulator": "quire"}}))
    name = "encoder.layer.0.attention.self"

    def acc(report):
        row = next(r for r in report.rows if r.name == name)
        return {(x.op, x.count) for x in row.lines if x.term == "acc"}, row

    (fp32_ops, row), (bf16_ops, _), (quire_ops, _) = acc(e4m3), acc(bf16), acc(quire)
    assert {op for op, _ in fp32_ops} == {"fp32 add"} and row.activation == str(dl.Scheme.parse("e4m3"))
    assert {op for op, _ in bf16_ops} == {"bf16 add (accumulator)"}
    assert {op for op, _ in quire_ops} == {"int128 add (quire)"}  # 16 x the 8-bit operands
    assert sum(n for _, n in bf16_ops) == sum(n for _, n in fp32_ops) > 0  # the same K-1 adds per output
    assert e4m3.total_pj < plain.total_pj  # e4m3 operands instead of fp32 ones
    assert bf16.total_pj < e4m3.total_pj  # a bf16 add costs less than an fp32 one
    diff = e4m3.total_pj - quire.total_pj  # the attention adds only: fp32 adds became int128 (quire) adds
    each = [next(x.pj_each for x in acc(r)[1].lines if x.term == "acc") for r in (e4m3, quire)]
    want = sum(n for _, n in fp32_ops) * 6 * (each[0] - each[1])  # 6 layers
    assert diff == pytest.approx(want)
    linear = {r.name: r.total_pj for r in plain.rows if r.name.endswith(("query", "dense"))}
    assert linear and all(r.total_pj == linear[r.name] for r in bf16.rows if r.name in linear)


def test_the_lp_datapath_cell():
    """Seed 001's LP datapath as the study configures it: LP operands, exact (log-domain) products truncated onto
    a fixed(32,16) register, saturating; energy: the LP multiply, its log->linear conversion, a 32-bit add."""
    from dtypelab.experiments.arith import LP_DATAPATH, LP_STORAGE

    g = torch.Generator().manual_seed(0)
    lp = dl.fmt(LP_STORAGE.split("/")[0])
    v = lp.values()
    a, b = v[torch.randint(len(v), (5, 40), generator=g)], v[torch.randint(len(v), (40, 3), generator=g)]
    got = Compute.parse(LP_DATAPATH).matmul(a, b)
    prods = a[:, :, None] * b[None, :, :]
    want = (torch.trunc(prods * 2**16).sum(1) / 2**16).clamp(-(2.0**15), 2.0**15 - 2**-16)
    assert torch.equal(got, want) and not torch.equal(got, a @ b)
    layer = nn.Linear(64, 4)
    r = dl.cost.energy(layer, {"weights": LP_STORAGE, "activations": LP_STORAGE, "compute": LP_DATAPATH},
                       example=torch.rand(2, 64))
    terms = {x.term: x.op for x in r.rows[0].lines}
    assert terms["acc"] == "int32 add (fixed(32,16)/rz)" and "convert" in terms

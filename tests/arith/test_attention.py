"""Simulated attention beyond BERT: Hugging Face GPT-2 attention and torch.nn.MultiheadAttention.

FP32 compute reproduces the unmodified module; a coarse accumulator or FP8 operands move the output onto what an
independent reference computes (per-product loops rounding the running sum, masks built from their definitions);
restore gives the module back bit for bit; the gradient flows straight through."""

from __future__ import annotations

import pytest
import torch
from arith_helpers import recorded_matmuls
from torch import nn

import dtypelab as dl

transformers = pytest.importorskip("transformers")

FP32 = {"accumulator": "fp32", "chunk": 4096}  # one chunk: the float32 rounding of the float64 dot product
FP16 = {"accumulator": "fp16", "chunk": 1}  # the running sum rounded to fp16 after every product


# ---- an independent reference ---------------------------------------------------------------------------------


def _fp16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).double()


def _sequential(a: torch.Tensor, b: torch.Tensor, acc) -> torch.Tensor:
    """``a @ b`` (batched), each output summed one product at a time in float64, the sum rounded by ``acc``."""
    a, b = a.double(), b.double()
    s = torch.zeros(*a.shape[:-1], b.shape[-1], dtype=torch.float64)
    for i in range(a.shape[-1]):
        s = acc(s + a[..., :, i, None] * b[..., i, None, :])
    return s


def _reference(q, k, v, scaling, masked_out, acc, operands):
    """softmax(Q Kᵀ · scaling, masked) V with the products summed by ``acc``; ``masked_out`` True: no attention."""
    if operands is not None:
        q, k, v = (dl.fmt(operands).quantize(t.double()).float() for t in (q, k, v))
    scores = _sequential(q, k.transpose(-1, -2), acc).float() * scaling
    if masked_out is not None:
        scores = scores.masked_fill(masked_out, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    p = probs if operands is None else dl.fmt(operands).quantize(probs.double()).float()
    return _sequential(p, v, acc).float(), probs  # the probabilities as the module returns them: unrounded


def test_sequential_reference_rounds_every_add():
    a = torch.tensor([[1.0, 2.0**-11, 2.0**-11]])
    b = torch.ones(3, 1)
    assert _sequential(a, b, _fp16).item() == 1.0  # each 2^-11 is half an fp16 ulp of 1: ties to even
    assert _sequential(a, b, lambda s: s).item() == 1 + 2.0**-10


# ---- GPT-2 ------------------------------------------------------------------------------------------------------


def _gpt2(impl: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4, bos_token_id=0,
                                  eos_token_id=0, attn_implementation=impl, **kw)
    model = transformers.GPT2Model(cfg).eval()
    with torch.no_grad():  # larger weights than the 0.02 init: attention that is far from uniform
        for block in model.h:
            block.attn.c_attn.weight.mul_(8)
    return model


IDS = torch.randint(64, (2, 11), generator=torch.Generator().manual_seed(1))
PADDED = torch.ones(2, 11, dtype=torch.long)
PADDED[1, 7:] = 0  # right padding: the second text has 7 tokens


def _run(model, mask=None, **kw):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=mask, **kw).last_hidden_state


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_gpt2_fp32_compute_equals_the_library(impl):
    model = _gpt2(impl, scale_attn_by_inverse_layer_idx=True)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    ref = [_run(model), _run(model, PADDED), _run(model, PADDED, use_cache=False)]
    dl.quantize_model(model, {"ops": [{"match": "GPT2Attention", "compute": FP32}]})
    with recorded_matmuls() as calls:
        got = [_run(model), _run(model, PADDED), _run(model, PADDED, use_cache=False)]
    assert calls[:2] == [((2, 4, 11, 8), (2, 4, 8, 11)), ((2, 4, 11, 11), (2, 4, 11, 8))]
    assert len(calls) == 3 * 2 * 2  # 3 forwards x 2 layers x (Q·Kᵀ, A·V)
    for r, g in zip(ref, got, strict=True):
        assert float((r - g).abs().max()) < 1e-5
    assert float((ref[0] - ref[1])[1].abs().max()) > 1e-3  # the padding mask matters (masked keys of text 2)
    dl.restore(model)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert torch.equal(_run(model, PADDED), ref[1])


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_gpt2_coarse_arithmetic_matches_a_reference(impl):
    """fp16 running sums of e4m3 operands in layer 1 (scaled by 1/(sqrt(8) * 2)), fed the inputs the model gives
    that layer: the reference builds the causal and padding mask from the token mask, not transformers' mask."""
    model = _gpt2(impl, scale_attn_by_inverse_layer_idx=True)
    attn = model.h[1].attn
    seen = {}
    attn.register_forward_pre_hook(lambda m, args, kw: seen.update(x=args[0]), with_kwargs=True)
    attn.register_forward_hook(lambda m, args, out: seen.update(out=out))
    for mask in (None, PADDED):
        _run(model, mask)
        fp32 = seen["out"][0]
        dl.quantize_model(model, {"ops": [{"match": "h.1.attn", "compute": FP16, "operands": "e4m3"}]})
        _run(model, mask)
        out, probs = seen["out"]
        dl.restore(model)
        with torch.no_grad():
            q, k, v = (t.view(2, 11, 4, 8).transpose(1, 2) for t in attn.c_attn(seen["x"]).split(32, dim=2))
            keep = torch.ones(11, 11, dtype=torch.bool).tril()[None, None]
            if mask is not None:
                keep = keep & mask.bool()[:, None, None, :]
            ctx, want_probs = _reference(q, k, v, 8**-0.5 / 2, ~keep, _fp16, "e4m3")
            want = attn.c_proj(ctx.transpose(1, 2).reshape(2, 11, 32))
        assert torch.allclose(probs, want_probs, atol=1e-6, rtol=0)  # the mask and scaling
        assert float((out - want).abs().max()) < 1e-5
        assert float((out - fp32).abs().max()) > 1e-3  # the arithmetic moved it


def test_gpt2_softmax_output_rounding_and_gradient():
    model = _gpt2("sdpa")
    x = torch.randn(2, 11, 32)
    attn = model.h[0].attn
    with torch.no_grad():
        ref = attn(x)[0]
    ctx = []
    attn.c_proj.register_forward_pre_hook(lambda m, args: ctx.append(args[0]))
    dl.quantize_model(model, {"ops": [{"match": "re:h\\.0\\.attn", "softmax": "bf16", "output": "e4m3"}]})
    with torch.no_grad():
        out, probs = attn(x)
    assert torch.equal(dl.fmt("bf16").quantize(probs.double()).float(), probs)
    assert torch.equal(dl.fmt("e4m3").quantize(ctx[-1].double()).float(), ctx[-1])  # output: the context
    assert not torch.allclose(out, ref, atol=1e-3)
    # gradient: FP32 compute passes the library's gradient, a bf16 accumulator a nearby one
    xg = x.clone().requires_grad_()
    dl.restore(model)
    attn(xg)[0].square().sum().backward()
    want = xg.grad.clone()
    coarse = {"match": "GPT2Attention", "compute": {"accumulator": "bf16", "chunk": 1}, "operands": "e5m2"}
    for rule, tol in (({"match": "GPT2Attention", "compute": FP32}, 1e-5), (coarse, 0.1)):
        dl.quantize_model(model, {"ops": [rule]})
        xg.grad = None
        attn(xg)[0].square().sum().backward()
        err = float((xg.grad - want).norm() / want.norm())
        assert err < tol and xg.grad.abs().sum() > 0, (rule, err)
    dl.restore(model)


def test_gpt2_refuses_a_filled_cache_cross_attention_and_foreign_fields():
    model = _gpt2("eager")
    dl.quantize_model(model, {"ops": [{"match": "GPT2Attention", "compute": FP32}]})
    with torch.no_grad():
        past = model(input_ids=IDS[:, :5], use_cache=True).cache  # an empty cache is filled
        assert past.get_seq_length() == 5
        with pytest.raises(ValueError, match="without past keys/values"):
            model(input_ids=IDS[:, 5:6], cache=past)
    with pytest.raises(ValueError, match="gpt2-attention.*not residual"):
        dl.quantize_model(model, {"ops": [{"match": "GPT2Attention", "residual": "bf16"}]})
    cross = transformers.GPT2Config(n_embd=32, n_head=4, add_cross_attention=True)
    block = transformers.models.gpt2.modeling_gpt2.GPT2Block(cross, layer_idx=0)
    with pytest.raises(ValueError, match="cross-attention"):
        dl.quantize_model(block, {"ops": [{"match": "GPT2Attention", "compute": FP32}]})
    assert all("forward" not in m.__dict__ for m in block.modules())  # nothing left attached


def test_gpt2_energy_prices_the_attention_products():
    model = _gpt2("sdpa")
    plain = dl.cost.energy(model, None, example={"input_ids": IDS})
    sim = dl.cost.energy(model, {"ops": [{"match": "GPT2Attention", "operands": "e4m3",
                                          "compute": {"accumulator": "bf16", "chunk": 32}}]},
                         example={"input_ids": IDS})
    row = next(r for r in sim.rows if r.name == "h.0.attn")
    terms = {(x.term, x.op): x.count for x in row.lines}
    per_head = 11 * 11 * 8  # Q·Kᵀ and A·V: 11 x 11 x 8 products each, per text and head
    assert terms[("mul", "fp8 mul")] == 2 * 2 * 4 * per_head
    assert terms[("acc", "bf16 add (accumulator)")] == 2 * 4 * (11 * 11 * 7 + 11 * 8 * 10)
    assert sim.total_pj < plain.total_pj


# ---- nn.MultiheadAttention -------------------------------------------------------------------------------------


def _mha(batch_first=True, kdim=None, vdim=None, bias=True):
    torch.manual_seed(0)
    m = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=vdim, bias=bias).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "weight" in name:
                p.mul_(3)
    return m


def _inputs(batch_first, unbatched=False, kdim=16, vdim=16, src=6):
    g = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(3, 5, 16, generator=g), torch.randn(3, src, kdim, generator=g), \
        torch.randn(3, src, vdim, generator=g)
    if unbatched:
        return q[0], k[0], v[0]
    return (q, k, v) if batch_first else (q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))


PAD = torch.tensor([[False] * 6, [False] * 4 + [True] * 2, [False] * 5 + [True]])
CAUSAL = torch.ones(5, 6, dtype=torch.bool).triu(2)  # True: not allowed


CASES = {
    "plain": dict(),
    "self": dict(self_attention=True),  # torch's fast path (one tensor for query, key and value)
    "seq-first": dict(batch_first=False),
    "unbatched": dict(unbatched=True),
    "kdim-vdim": dict(kdim=12, vdim=20),
    "no-bias": dict(bias=False),
    "bool-masks": dict(call=dict(key_padding_mask=PAD, attn_mask=CAUSAL)),
    "float-masks": dict(call=dict(key_padding_mask=PAD.float() * -1e4,
                                  attn_mask=torch.randn(12, 5, 6, generator=torch.Generator().manual_seed(3)))),
    "heads": dict(call=dict(attn_mask=CAUSAL, average_attn_weights=False)),
    "no-weights": dict(batch_first=False, call=dict(key_padding_mask=PAD, need_weights=False)),
    "unbatched-masks": dict(unbatched=True, call=dict(key_padding_mask=PAD[1], attn_mask=CAUSAL)),
}


@pytest.mark.parametrize("case", CASES)
def test_mha_fp32_compute_equals_torch(case):
    c = CASES[case]
    bf = c.get("batch_first", True)
    m = _mha(bf, c.get("kdim"), c.get("vdim"), c.get("bias", True))
    q, k, v = _inputs(bf, c.get("unbatched", False), c.get("kdim") or 16, c.get("vdim") or 16)
    if c.get("self_attention"):
        k = v = q
    sd = {n: t.clone() for n, t in m.state_dict().items()}
    call = c.get("call", {})
    with torch.no_grad():
        ref = m(q, k, v, **call)
    dl.quantize_model(m, {"ops": [{"match": "MultiheadAttention", "compute": FP32}]})
    with torch.no_grad():
        got = m(q, k, v, **call)
    assert "forward" in m.__dict__
    assert got[0].shape == ref[0].shape and float((got[0] - ref[0]).abs().max()) < 1e-5
    if ref[1] is None:
        assert got[1] is None
    else:
        assert got[1].shape == ref[1].shape and float((got[1] - ref[1]).abs().max()) < 1e-6
    dl.restore(m)
    assert "forward" not in m.__dict__
    assert list(m.state_dict()) == list(sd) and all(torch.equal(m.state_dict()[n], t) for n, t in sd.items())
    with torch.no_grad():
        again = m(q, k, v, **call)
    assert torch.equal(again[0], ref[0])


@pytest.mark.parametrize("bf", [True, False])
def test_mha_coarse_arithmetic_matches_a_reference(bf):
    m = _mha(bf)
    q, k, v = _inputs(bf)
    with torch.no_grad():
        fp32 = m(q, k, v, key_padding_mask=PAD, attn_mask=CAUSAL)[0]
    dl.quantize_model(m, {"ops": [{"match": "MultiheadAttention", "compute": FP16, "operands": "e4m3"}]})
    with torch.no_grad():
        out, weights = m(q, k, v, key_padding_mask=PAD, attn_mask=CAUSAL)
    dl.restore(m)
    if not bf:
        q, k, v, out, fp32 = (t.transpose(0, 1) for t in (q, k, v, out, fp32))
    with torch.no_grad():
        w = m.in_proj_weight.chunk(3)
        b = m.in_proj_bias.chunk(3)
        heads = [(x @ wi.T + bi).view(3, -1, 4, 4).transpose(1, 2) for x, wi, bi in zip((q, k, v), w, b, strict=True)]
        masked = CAUSAL[None, None] | PAD[:, None, None, :]
        ctx, probs = _reference(*heads, 0.5, masked, _fp16, "e4m3")
        want = ctx.transpose(1, 2).reshape(3, 5, 16) @ m.out_proj.weight.T + m.out_proj.bias
    assert torch.allclose(weights, probs.mean(1), atol=1e-6, rtol=0)
    assert float((out - want).abs().max()) < 1e-5
    assert float((out - fp32).abs().max()) > 1e-2


def test_mha_takes_the_layer_config_weights_and_gradient():
    """The projections use the weights as the layer config stores them (the simulated FP32 forward equals
    torch's forward of the weight-quantized module); the gradient reaches the inputs and the weights."""
    m = _mha()
    q, k, v = _inputs(True)
    with torch.no_grad():
        ref = m(q, k, v)[0]
    layer = {"weights": "e4m3/channel/absmax", "activations": "e4m3", "activation_scales": "dynamic"}
    dl.quantize_model(m, layer)
    with torch.no_grad():
        stored = m(q, k, v)[0]
    dl.quantize_model(m, {**layer, "ops": [{"match": "MultiheadAttention", "compute": FP32}]})
    with torch.no_grad():
        assert float((m(q, k, v)[0] - stored).abs().max()) < 1e-5
    assert float((stored - ref).abs().max()) > 1e-2  # the layer config did change the projections
    with pytest.raises(ValueError, match="MultiheadAttention layer cannot have it"):
        dl.quantize_model(m, {"layers": [{"match": "MultiheadAttention", "compute": FP32}]})
    dl.restore(m)
    qg = q.clone().requires_grad_()
    m(qg, k, v)[0].sum().backward()
    want, want_w = qg.grad.clone(), m.in_proj_weight.grad.clone()
    m.zero_grad()
    qg.grad = None
    dl.quantize_model(m, {"ops": [{"match": "MultiheadAttention", "compute": FP32}]})
    m(qg, k, v)[0].sum().backward()
    assert torch.allclose(qg.grad, want, atol=1e-5) and torch.allclose(m.in_proj_weight.grad, want_w, atol=1e-4)
    dl.restore(m)


def test_mha_errors_and_energy():
    m = _mha()
    with pytest.raises(ValueError, match="mha.*not residual"):
        dl.quantize_model(m, {"ops": [{"match": "MultiheadAttention", "residual": "bf16"}]})
    odd = nn.MultiheadAttention(16, 4, add_bias_kv=True)
    with pytest.raises(ValueError, match="add_bias_kv"):
        dl.quantize_model(odd, {"ops": [{"match": "MultiheadAttention", "compute": FP32}]})
    assert "forward" not in odd.__dict__
    q, k, v = _inputs(True)
    base = {"weights": "int8/channel/absmax"}
    plain = dl.cost.energy(m, base, example=(q, k, v))
    sim = dl.cost.energy(m, {**base, "ops": [{"match": "MultiheadAttention", "operands": "e4m3",
                                              "compute": {"accumulator": "bf16", "chunk": 8}}]}, example=(q, k, v))
    lines = {(x.term, x.op): x.count for x in sim.rows[0].lines}
    per = 3 * 4 * 5 * 6 * 4  # Q·Kᵀ and A·V: 3 texts x 4 heads x 5 x 6 x 4 products each
    assert lines[("mul", "fp8 mul")] == 2 * per
    assert lines[("acc", "bf16 add (accumulator)")] == 3 * 4 * (5 * 6 * 3 + 5 * 4 * 5)
    proj = {(x.term, x.op): x.count for x in plain.rows[0].lines}
    assert proj[("mul", "fp32 mul")] - 2 * per == lines[("mul", "fp32 mul")]  # the projections: unchanged
    assert sim.total_pj < plain.total_pj

"""A Hugging Face model: the packaged all-MiniLM-L6-v2 (BERT, 22.7 M parameters) quantized, run, restored."""

from __future__ import annotations

import time

import pytest
import torch

import dtypelab as dl

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Posits have tapered accuracy around one.",
             "A sentence embedding model maps text to vectors.", "Quantization trades precision for size.",
             "Integers add cheaply; floating point multiplies cost more energy.", "Hello world"]


@pytest.fixture(scope="module")
def minilm(minilm_bert):
    model, tokenizer = minilm_bert
    batches = [dict(tokenizer(SENTENCES[i:i + 3], padding=True, return_tensors="pt")) for i in (0, 3)]
    return model, batches


def _embed(model, batch):
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].to(h.dtype)
    return torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)


def test_minilm_quantize_report_restore(minilm):
    """Every Linear and Embedding quantized (FP8 weights per channel, static FP8 activations calibrated on real
    sentences), the sentence embeddings stay close, the report covers all 39 layers, and restore gives the model
    back bit for bit."""
    model, batches = minilm
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    ref = [_embed(model, b) for b in batches]
    t = time.perf_counter()
    report = dl.quantize_model(model, {"weights": "e4m3/channel/absmax", "activations": "e4m3/tensor/absmax"},
                               calibration=batches)
    t_quantize = time.perf_counter() - t
    got = [_embed(model, b) for b in batches]
    t = time.perf_counter()
    dl.restore(model)
    t_restore = time.perf_counter() - t

    kinds = [r.type for r in report.layers.values()]
    assert kinds.count("Embedding") == 3 and kinds.count("Linear") == 37  # 36 in the encoder + the pooler
    assert all(r.weight_bits_per_param > 8 for r in report.layers.values())
    assert 3.5 < report.compression < 4
    cos = torch.cat([(a * b).sum(-1) for a, b in zip(ref, got, strict=True)])
    assert float(cos.min()) > 0.99, cos
    assert list(model.state_dict()) == list(sd)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert all(torch.equal(_embed(model, b), r) for b, r in zip(batches, ref, strict=True))
    print(f"MiniLM: quantize {t_quantize:.2f} s, restore {t_restore * 1e3:.1f} ms, min cosine {float(cos.min()):.5f}, "
          f"{report.size_mb:.2f} MB vs {report.fp32_mb:.2f} MB")


def test_minilm_positune_dynamic_activations(minilm):
    """PositTune on a real transformer: posit(6,1) weights with histogram scales per channel, posit(6,1)
    activations whose histogram scale is recomputed on every forward pass; quantizing twice is quantizing once."""
    model, batches = minilm
    ref = [_embed(model, b) for b in batches]
    config = {"weights": "posit(6,1)/channel/log2-hist", "activations": "posit(6,1)/tensor/log2-hist",
              "activation_scales": "dynamic", "layers": [{"match": "*word_embeddings", "weights": None}]}
    report = dl.quantize_model(model, config)
    got = [_embed(model, b) for b in batches]
    again = dl.quantize_model(model, config)
    assert report == again
    assert all(torch.equal(_embed(model, b), g) for b, g in zip(batches, got, strict=True))
    dl.restore(model)
    cos = torch.cat([(a * b).sum(-1) for a, b in zip(ref, got, strict=True)])
    assert float(cos.min()) > 0.9, cos
    assert report.layers["encoder.layer.0.attention.self.query"].activation_scales == "dynamic"
    print(f"MiniLM PositTune posit(6,1): min cosine {float(cos.min()):.4f}, mean {float(cos.mean()):.4f}")


def test_minilm_equalization_folds_value_into_attention_output_and_keeps_fp32(minilm):
    """BERT does not trace with torch.fx: the name rule folds each attention.output.dense's scales into its
    attention.self.value (6 of 37 Linear layers); the rest (post-norm LayerNorms feed the residual too, GELU
    before output.dense) keep the explicit scale. FP32 embeddings unchanged to float tolerance; restore exact."""
    from dtypelab.model.quantize import quant_state

    model, batches = minilm
    ref = [_embed(model, b) for b in batches]
    raw = [model(**b).last_hidden_state.detach() for b in batches]
    dl.quantize_model(model, {"equalize": "smoothquant:0.5", "layers": [{"match": "Embedding", "equalize": None}]},
                      calibration=batches)
    st = quant_state(model)
    assert st.folds == {f"encoder.layer.{i}.attention.output.dense": f"encoder.layer.{i}.attention.self.value"
                        for i in range(6)}
    assert len(st.input_scales) == 37 - 6 and not any(n in st.input_scales for n in st.folds)
    for b, r in zip(batches, ref, strict=True):
        assert torch.allclose(_embed(model, b), r, atol=1e-5)
    dl.restore(model)
    for b, r in zip(batches, raw, strict=True):
        with torch.no_grad():
            assert torch.equal(model(**b).last_hidden_state, r)

"""lm: sliding-window perplexity of any local causal LM, offline, on tiny random GPT-2 (Conv1D, tied embeddings)
and Llama-style models saved with save_pretrained; GPT-2's Conv1D layers are quantized."""

import os
import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dtypelab as dl
from dtypelab import workloads
from dtypelab.model.layers import kind_of
from dtypelab.workloads import lm
from dtypelab.workloads.lm import LocalLM, Window, sliding_windows

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

TEXT = "\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog {i % 7} times, then rests."
                   for i in range(40))


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def _save(model, path):
    torch.manual_seed(0)
    model.save_pretrained(path)
    _tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=300, n_positions=32, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    return _save(GPT2LMHeadModel(cfg), tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=24,
                      bos_token_id=0, eos_token_id=0, pad_token_id=None)
    return _save(LlamaForCausalLM(cfg), tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@given(n=st.integers(2, 300), max_length=st.integers(2, 64), data=st.data())
def test_windows_score_every_token_but_the_first_once(n, max_length, data):
    """Scored positions partition 1..n-1 (no overlap: all but the windows' first tokens); windows fit max_length;
    each scored token has >= max_length - stride tokens of context once the text is that long."""
    stride = data.draw(st.integers(1, max_length))
    windows = sliding_windows(n, max_length, stride)
    scored = [p for w in windows for p in range(w.end - w.scored, w.end)]
    if stride < max_length:
        assert scored == list(range(1, n))
    else:
        assert scored == [p for p in range(1, n) if p % max_length]
    for i, w in enumerate(windows):
        assert 0 <= w.begin < w.end <= n and w.end - w.begin <= max_length and 1 <= w.scored <= w.end - w.begin
        assert w.begin == i * stride
        first_scored = w.end - w.scored
        assert first_scored - w.begin >= min(max_length - stride, first_scored)


def test_windows_reject_bad_arguments():
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(10, 4, 5)
    with pytest.raises(ValueError, match="max_length"):
        sliding_windows(10, 1, 1)
    with pytest.raises(ValueError, match="n_tokens"):
        sliding_windows(10.0, 4, 2)
    assert sliding_windows(2, 2, 2) == [Window(0, 2, 1)]


def _guide_perplexity(model, ids, max_length, stride):
    """The Hugging Face perplexity guide's loop, verbatim in spirit: labels masked with -100, the model's own loss."""
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    seq_len = ids.size(1)
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        valid = int((target_ids[:, 1:] != -100).sum())  # the labels the model's shifted loss averages over
        nll_sum += float(loss) * valid
        n_tokens += valid
        prev_end = end
        if end == seq_len:
            break
    return torch.exp(torch.tensor(nll_sum / n_tokens)).item(), n_tokens


@pytest.mark.parametrize("stride", [8, 32])
def test_perplexity_matches_the_hugging_face_guide(gpt2_dir, text_file, stride):
    w = LocalLM(gpt2_dir, text_file, max_length=32, stride=stride)
    model = w.model()
    metrics = w.evaluate(model)
    ref, n = _guide_perplexity(model, w._test_ids().unsqueeze(0), 32, stride)
    n_ids = len(w._test_ids())
    assert metrics["tokens"] == n == (n_ids - 1 if stride < 32 else n_ids - 1 - (n_ids - 1) // 32)
    assert metrics["perplexity"] == pytest.approx(ref, rel=1e-5)
    assert metrics["nll"] == pytest.approx(torch.tensor(ref).log().item(), rel=1e-5)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)  # the FP32 model against itself


def test_defaults_context_stride_and_held_out_head(gpt2_dir, text_file, tmp_path):
    w = LocalLM(gpt2_dir, text_file)
    assert (w.max_length, w.stride) == (32, 16)
    all_ids = w.encode(TEXT)
    head = min(4 * 32, len(all_ids) // 10)
    assert torch.equal(w._calib_ids(), all_ids[:head]) and torch.equal(w._test_ids(), all_ids[head:])
    assert w.evaluate(w.model())["tokens"] == len(all_ids) - head - 1
    calib = tmp_path / "calib.txt"
    calib.write_text("An entirely different calibration text, a few words long.", encoding="utf-8")
    separate = LocalLM(gpt2_dir, text_file, calib_text=calib)
    assert torch.equal(separate._test_ids(), all_ids)
    assert torch.equal(separate._calib_ids(), separate.encode(calib.read_text()))
    batches = LocalLM(gpt2_dir, text_file, calib_tokens=100).calibration(n_batches=2, batch_size=2)
    assert [tuple(b["input_ids"].shape) for b in batches] == [(2, 32), (1, 32)]  # 100 tokens: 3 windows of 32


def test_conv1d_layers_are_quantized_and_restored(gpt2_dir, text_file):
    """GPT-2's Conv1D layers (not nn.Linear) get weight and activation quantizers; restore is bit-exact."""
    w = LocalLM(gpt2_dir, text_file, max_length=32, stride=16)
    model = w.model()
    fp32 = w.evaluate(model, limit=200)
    names = [n for n, m in model.named_modules() if kind_of(m) is not None and kind_of(m).name == "Conv1D"]
    assert names == [f"transformer.h.{i}.{p}" for i in range(2) for p in ("attn.c_attn", "attn.c_proj",
                                                                            "mlp.c_fc", "mlp.c_proj")]
    config = {"weights": "posit(6,0)/tensor/none", "activations": "posit(6,0)/tensor/none",
              "layers": [{"match": "Embedding", "weights": None}, {"match": "lm_head", "weights": None}]}
    report = dl.quantize_model(model, config, calibration=w.calibration(1))
    assert all(report.layers[n].weight_scheme is not None for n in names)
    grid = set(dl.fmt("posit(6,0)").values().tolist())
    c_fc = model.get_submodule(names[2])
    assert set(c_fc.weight.detach().double().flatten().tolist()) <= grid
    quant = w.evaluate(model, limit=200)
    assert quant["kl"] > 1e-4 and quant["perplexity"] != fp32["perplexity"] and quant["tokens"] == fp32["tokens"]
    dl.restore(model)
    assert w.evaluate(model, limit=200) == fp32


def test_llama_style_model(llama_dir, text_file):
    w = LocalLM(llama_dir, text_file, stride=12)
    assert w.max_length == 24
    model = w.model()
    fp32 = w.evaluate(model)
    assert 1.0 < fp32["perplexity"] < 3 * 300 and fp32["kl"] == pytest.approx(0.0, abs=1e-6)
    dl.quantize_model(model, {"weights": "e4m3/tensor/none", "activations": "e4m3/tensor/none",
                              "activation_scales": "dynamic", "layers": [{"match": "Embedding", "weights": None}]})
    quant = w.evaluate(model)
    assert quant["kl"] > 0 and quant["perplexity"] != fp32["perplexity"]
    logits = w.run(model, w.calibration(1, batch_size=2)[0])
    assert logits.shape == (2, 24, 300) and not logits.requires_grad


def test_kl_reference_is_cached_and_recomputed_beyond_the_budget(gpt2_dir, text_file, monkeypatch):
    w = LocalLM(gpt2_dir, text_file, max_length=32, stride=16)
    model = w.model()
    dl.quantize_model(model, {"weights": "posit(6,1)/tensor/none", "layers": [
        {"match": "Embedding", "weights": None}, {"match": "lm_head", "weights": None}]})
    cached = w.evaluate(model)
    assert len(w._ref) == len(sliding_windows(len(w._test_ids()), 32, 16))
    monkeypatch.setattr(lm, "REF_CACHE_BYTES", 0)
    fresh = LocalLM(gpt2_dir, text_file, max_length=32, stride=16)
    assert fresh.evaluate(model) == cached and fresh._ref == {}
    monkeypatch.setattr(lm, "LOGITS_PER_BATCH", 1)  # one window per forward pass: the same numbers
    one_by_one = fresh.evaluate(model)
    assert one_by_one["tokens"] == cached["tokens"]
    assert one_by_one["perplexity"] == pytest.approx(cached["perplexity"], rel=1e-5)


def test_registry_pickle_and_mode(gpt2_dir, text_file):
    assert {"lm", "pydoc-gpt"} <= set(workloads.names())
    w = workloads.get("lm", model=str(gpt2_dir), text=str(text_file))
    assert isinstance(w, LocalLM) and w.primary_metric == "perplexity" and w.higher_is_better is False
    model = w.model()
    first = w.evaluate(model, limit=64)
    clone = pickle.loads(pickle.dumps(w))
    assert clone._pristine is None and clone._ref is None
    assert clone.evaluate(clone.model(), limit=64) == first
    model.train()
    w.evaluate(model, limit=40)
    assert model.training  # evaluate restores the caller's mode


def test_bad_arguments_name_the_problem(gpt2_dir, text_file, tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        LocalLM(tmp_path, text_file)
    with pytest.raises(ValueError, match="is not a file"):
        LocalLM(gpt2_dir, tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        LocalLM(gpt2_dir, empty)
    with pytest.raises(ValueError, match="max_length"):
        LocalLM(gpt2_dir, text_file, max_length=64)
    with pytest.raises(ValueError, match="stride"):
        LocalLM(gpt2_dir, text_file, max_length=16, stride=17)
    with pytest.raises(ValueError, match="calib_tokens"):
        LocalLM(gpt2_dir, text_file, calib_tokens=1)
    w = LocalLM(gpt2_dir, text_file)
    with pytest.raises(ValueError, match="limit"):
        w.evaluate(w.model(), limit=1)
    short = tmp_path / "short.txt"
    short.write_text("hi", encoding="utf-8")
    with pytest.raises(ValueError, match="too few"):
        LocalLM(gpt2_dir, short)._test_ids()


def test_the_sweep_command_runs_a_local_gpt2(gpt2_dir, text_file, tmp_path):
    """``dtypelab sweep -w lm --lm-model DIR --text FILE``: GPT-2's lm_head is tied to its token embedding, so
    the sweep keeps it in FP32 with the Embedding (a tied weight has one format) and quantizes every Conv1D."""
    import json

    from typer.testing import CliRunner

    from dtypelab.cli import app

    args = ["sweep", "-w", "lm", "--lm-model", str(gpt2_dir), "--text", str(text_file), "--max-length", "16",
            "--stride", "8", "-f", "posit(8,1)", "--scaling", "none", "--runs-dir", str(tmp_path), "--name", "g"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "g" / "results.json").read_text())["results"]
    (row,) = rows
    assert row["workload"] == "lm" and row["primary_metric"] == "perplexity" and not row["higher_is_better"]
    assert row["bits_per_weight"] == 8.0 and row["size_mb"] < row["fp32_size_mb"] and row["metrics"]["perplexity"] > 1
    bad = CliRunner().invoke(app, ["sweep", "-w", "digits-vgg", "--text", str(text_file), "--runs-dir",
                                   str(tmp_path)])
    assert bad.exit_code == 2 and "go with -w lm" in bad.output
    for wrong, says in ((["--lm-model", str(tmp_path)], "not a directory with a config.json"),
                        (["--stride", "0"], "stride")):
        args_wrong = ["sweep", "-w", "lm", "--lm-model", str(gpt2_dir), "--text", str(text_file), *wrong,
                      "--runs-dir", str(tmp_path), "--name", "bad"]
        result = CliRunner().invoke(app, args_wrong)
        assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "bad" / "results.json").exists()

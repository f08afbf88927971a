"""pydoc-gpt: the documentation corpus (read with ast, never imported), its fixed split, the cached tokenizer,
deterministic cached training on tiny settings, the unigram baseline, export to the lm workload; and the real
model, trained into the user cache on first use."""

import json
import os
import subprocess
import sys

import pytest
import torch

import dtypelab as dl
from dtypelab.workloads import pydoc_gpt
from dtypelab.workloads.lm import LocalLM, sliding_windows
from dtypelab.workloads.pydoc_gpt import PydocGPT, Settings, build_corpus, train, unigram_perplexity

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

USER_CACHE = os.environ.get("DTYPELAB_CACHE")
TINY = Settings(vocab_size=320, n_embd=16, n_layer=1, n_head=2, steps=3, batch_size=2, warmup=1)


@pytest.fixture(scope="module")
def corpus(tmp_cache):
    return build_corpus()


def test_corpus_is_read_not_imported(tmp_path):
    """Building the corpus imports no stdlib module it reads (``this`` would print the Zen of Python)."""
    code = ("import sys; from dtypelab.workloads.pydoc_gpt import build_corpus; c = build_corpus(); "
            "print(sorted(m for m in ('this', 'antigravity', 'tkinter', 'turtle', 'smtplib') if m in sys.modules), "
            "len(c.train))")
    env = dict(os.environ, DTYPELAB_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.startswith("[] ") and int(out.split()[-1]) > 100


def test_corpus_split_is_fixed_and_by_document(corpus):
    again = build_corpus()  # from the cache file now
    assert again == corpus
    stats = corpus.stats()
    n = sum(s["documents"] for s in stats.values())
    assert stats["test"]["documents"] == len(range(pydoc_gpt.TEST_SLOT, n, pydoc_gpt.SPLIT_PERIOD))
    assert stats["calibration"]["documents"] == len(range(pydoc_gpt.CALIB_SLOT, n, pydoc_gpt.SPLIT_PERIOD))
    assert not set(corpus.test) & set(corpus.train) and not set(corpus.calibration) & set(corpus.train)
    from pydoc_data.topics import topics

    texts = set(corpus.train) | set(corpus.test) | set(corpus.calibration)
    assert topics["assert"].strip() in texts  # a reference topic, whole
    assert stats["train"]["chars"] > 1_000_000


def test_docstrings_in_source_order():
    import ast

    tree = ast.parse('"""mod"""\nclass A:\n    """a"""\n    def f(self):\n        """f"""\ndef g():\n    """g"""\n')
    assert pydoc_gpt._docstrings(tree) == ["mod", "a", "f", "g"]


def test_settings_validate_and_key_on_every_field():
    assert Settings().key("x") != Settings().key("y") != Settings(seed=1).key("y")
    for bad in ({"vocab_size": 100}, {"steps": 0}, {"lr": 0.0}, {"n_head": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Settings(**bad)


def test_tokenizer_is_cached_and_round_trips(tmp_cache, corpus):
    w = PydocGPT(TINY)
    tok = w.tokenizer
    assert tok.get_vocab_size() == TINY.vocab_size and tok.token_to_id(pydoc_gpt.EOT) == 0
    assert len(list(tmp_cache.glob("pydoc-gpt-tokenizer-*.json"))) == 1
    assert PydocGPT(TINY).tokenizer.to_str() == tok.to_str()
    doc = corpus.test[0]
    assert tok.decode(tok.encode(doc).ids) == doc
    ids = w.token_ids("test")
    assert int((ids == 0).sum()) == len(corpus.test) and int(ids[-1]) == 0
    with pytest.raises(ValueError, match="split"):
        w.token_ids("valid")


def test_train_once_deterministically_then_load(tmp_cache, monkeypatch):
    w = PydocGPT(TINY)
    model = w.model()
    hist = json.loads(w.history_path.read_text())
    assert hist["step"] == [1, 2, 3] and len(hist["train_loss"]) == 3
    assert hist["key"] in w.weights_path.name and hist["tokens"]["test"] == len(w.token_ids("test"))
    assert hist["test_perplexity"] == pytest.approx(w.evaluate(model)["perplexity"], rel=1e-6)
    state, again = train(TINY, w.token_ids("train"))
    assert again["train_loss"] == hist["train_loss"]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model must not be retrained")

    monkeypatch.setattr(pydoc_gpt, "train", no_training)
    cached = PydocGPT(TINY).model()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), cached.state_dict().values(),
                                                  strict=True))


def test_evaluate_calibration_and_quantize(tmp_cache):
    w = PydocGPT(TINY)
    model = w.model()
    fp32 = w.evaluate(model, limit=600)
    assert fp32["tokens"] == 599 - 2 and fp32["kl"] == pytest.approx(0.0, abs=1e-6)
    batches = w.calibration(n_batches=2, batch_size=3)
    assert [tuple(b["input_ids"].shape) for b in batches] == [(3, 256), (3, 256)]
    dl.quantize_model(model, {"weights": "posit(6,1)/tensor/none", "activations": "posit(6,1)/tensor/none",
                              "layers": [{"match": "Embedding", "weights": None}]}, calibration=batches)
    quant = w.evaluate(model, limit=600)
    assert quant["kl"] > 0 and quant["perplexity"] != fp32["perplexity"]


def test_unigram_baseline_is_the_add_one_unigram_model():
    train_ids, test_ids = torch.tensor([0, 1, 1, 1, 2]), torch.tensor([2, 1, 3])
    p = {1: 4 / 9, 3: 1 / 9}  # counts + 1 over vocab 4: [2, 4, 2, 1] / 9; the first test token is not scored
    expected = torch.tensor([p[1], p[3]]).log().mean().neg().exp().item()
    assert unigram_perplexity(train_ids, test_ids, 4) == pytest.approx(expected)


def test_export_loads_in_the_lm_workload(tmp_cache, tmp_path, corpus):
    """The exported directory is an ordinary Hugging Face model: lm scores the same tokens the same way."""
    w = PydocGPT(TINY)
    directory = w.export(tmp_path / "pydoc-gpt")
    text = tmp_path / "doc.txt"
    text.write_text(corpus.test[0], encoding="utf-8")
    other = LocalLM(directory, text, calib_tokens=2, stride=128)
    ids = other.encode(corpus.test[0])
    assert ids.tolist() == w.tokenizer.encode(corpus.test[0]).ids
    assert other.max_length == 256
    expected = w._fp32()(input_ids=ids[:256].unsqueeze(0)).logits
    torch.testing.assert_close(other.run(other.model(), {"input_ids": ids[:256].unsqueeze(0)}), expected)


def test_loss_curve_plot(tmp_cache, tmp_path):
    assert PydocGPT(TINY).plot_loss_curve(tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_full_model_is_a_real_language_model(monkeypatch):
    """The main job's model: trained into the user cache on first use (about 15 min wall / 520 s CPU on 2 shared
    CPUs under load 6-11), as `make run` would, then only loaded. Its test perplexity is far below the unigram
    baseline on the same tokens."""
    if USER_CACHE is None:
        monkeypatch.delenv("DTYPELAB_CACHE", raising=False)
    else:
        monkeypatch.setenv("DTYPELAB_CACHE", USER_CACHE)
    w = PydocGPT()
    metrics = w.evaluate(w.model())
    assert metrics["tokens"] == sum(w.scored for w in sliding_windows(pydoc_gpt.EVAL_TOKENS, 256, 256))
    unigram = w.unigram_perplexity()
    assert metrics["perplexity"] < unigram / 2.5  # measured: 120.1 against 362.6
    assert w.history()["test_perplexity"] == pytest.approx(metrics["perplexity"], rel=1e-6)

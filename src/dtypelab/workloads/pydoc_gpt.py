"""``pydoc-gpt``: a small GPT-2 trained on first use on Python's own documentation, judged by perplexity.

Text (read, never imported): the ``pydoc_data.topics`` reference texts (one document per distinct topic) and the
docstrings of the standard library's modules, read from the sources with ``ast`` (one document per ``.py``
file: its module, class and function docstrings in source order, ``inspect.cleandoc``-ed, joined by blank
lines; test packages, ``lib2to3`` and ``site-packages`` left out). Documents are sorted by name and split by
position: index ``i % 20 == 3`` is test, ``i % 20 == 13`` is calibration, the rest train. Documents are
joined with the end-of-text token.

Tokenizer: a byte-level BPE (``tokenizers``, 1,024 tokens) trained on the train split. Model: transformers'
``GPT2LMHeadModel`` (context 256, 4 layers, width 128, 4 heads, untied output layer: 1.09 M parameters), trained
with AdamW on 400 batches of 8 random 256-token windows of the train split, seeded and deterministic (same
machine and thread count). Everything is cached in :func:`~dtypelab.workloads.base.cache_dir` under keys that
hash this file's source, the :class:`Settings` and the text, with the loss curve beside the weights.

Evaluation: non-overlapping windows of 256 tokens (stride 256, the Hugging Face guide's non-overlapping
variant, as the seed's GPT-2 figures; see :func:`dtypelab.workloads.lm.sliding_windows`) over the first
:data:`EVAL_TOKENS` test tokens.

Example:
    >>> Settings().context
    256
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import logging
import math
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dtypelab.workloads.base import TrainedOnFirstUse, atomic_write, cache_dir, torch_threads
from dtypelab.workloads.lm import CausalLMWorkload

__all__ = ["Settings", "Corpus", "PydocGPT", "build_corpus", "train", "unigram_perplexity", "plot_loss_curve"]

log = logging.getLogger(__name__)

SPLIT_PERIOD, TEST_SLOT, CALIB_SLOT = 20, 3, 13
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "lib2to3", "__pycache__"})
EOT = "<|endoftext|>"
#: how many test tokens an evaluation scores (a fixed slice: one sweep cell takes seconds)
EVAL_TOKENS = 16384
EVAL_STRIDE = 256
CALIB_TOKENS = 16 * 256


def _source_key() -> hashlib._Hash:
    return hashlib.sha256(Path(__file__).read_bytes())


@dataclass(frozen=True)
class Corpus:
    """The documents of each split (lists of strings, in name order) and the hash of all of them."""

    train: tuple[str, ...]
    calibration: tuple[str, ...]
    test: tuple[str, ...]
    sha256: str

    def stats(self) -> dict[str, dict[str, int]]:
        """Documents and characters per split."""
        return {s: {"documents": len(getattr(self, s)), "chars": sum(map(len, getattr(self, s)))}
                for s in ("train", "calibration", "test")}


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if not EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1]))


def _docstrings(tree: ast.AST) -> list[str]:
    """Docstrings of the module, classes and functions of ``tree``, in source order."""
    out: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                out.append(doc)
        stack.extend(reversed(list(ast.iter_child_nodes(node))))
    return out


def _documents() -> dict[str, str]:
    """Every document by name: ``topic:<key>`` and ``module:<path relative to the stdlib>``."""
    from pydoc_data.topics import topics

    docs: dict[str, str] = {}
    seen: set[str] = set()
    for key in sorted(topics):
        text = topics[key].strip()
        if text and text not in seen:
            seen.add(text)
            docs[f"topic:{key}"] = text
    root = _stdlib_root()
    for path in _stdlib_files(root):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError) as exc:  # a few stdlib files are deliberately not Python 3
            log.debug("skipping %s: %s", path, exc)
            continue
        parts = _docstrings(tree)
        if parts:
            docs[f"module:{path.relative_to(root).as_posix()}"] = "\n\n".join(parts)
    return docs


def build_corpus() -> Corpus:
    """Read and split the documentation (cached in ``pydoc-gpt-corpus-<key>.json``, keyed by this file, the Python
    version and the stdlib files' names and sizes).

    Example:
        >>> c = build_corpus()
        >>> len(c.train) > 10 * len(c.test) > 0
        True
    """
    root = _stdlib_root()
    h = _source_key()
    h.update(sys.version.encode())
    for p in _stdlib_files(root):
        h.update(f"{p.relative_to(root).as_posix()}:{p.stat().st_size}\n".encode())
    path = cache_dir() / f"pydoc-gpt-corpus-{h.hexdigest()[:16]}.json"
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Corpus(tuple(data["train"]), tuple(data["calibration"]), tuple(data["test"]), data["sha256"])
        except (ValueError, KeyError) as exc:  # a corrupt cache entry is rebuilt
            log.warning("rebuilding unreadable corpus cache %s: %s", path, exc)
    splits: dict[str, list[str]] = {"train": [], "calibration": [], "test": []}
    digest = hashlib.sha256()
    for i, (name, text) in enumerate(sorted(_documents().items())):
        slot = i % SPLIT_PERIOD
        splits["test" if slot == TEST_SLOT else "calibration" if slot == CALIB_SLOT else "train"].append(text)
        digest.update(f"{slot}\x00{name}\x00{text}\x01".encode())
    corpus = Corpus(tuple(splits["train"]), tuple(splits["calibration"]), tuple(splits["test"]), digest.hexdigest())
    payload = dict(splits, sha256=corpus.sha256)
    atomic_write(path, lambda t: t.write_text(json.dumps(payload), encoding="utf-8"))
    return corpus


@dataclass(frozen=True)
class Settings:
    """Tokenizer, model and training of ``pydoc-gpt``; every field enters the cache key.

    Example:
        >>> Settings(steps=3).key() != Settings().key()
        True
        >>> Settings(n_embd=100, n_head=3)
        Traceback (most recent call last):
        ...
        ValueError: Settings.n_embd (100) must be a multiple of n_head (3)
    """

    vocab_size: int = 1024
    context: int = 256
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    steps: int = 400
    batch_size: int = 8
    lr: float = 5e-3
    warmup: int = 20
    weight_decay: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for field in ("vocab_size", "context", "n_embd", "n_layer", "n_head", "steps", "batch_size", "warmup",
                      "seed"):
            value = getattr(self, field)
            low = 0 if field in ("seed", "warmup") else 257 if field == "vocab_size" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Settings.{field} must be an int >= {low}, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"Settings.n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"Settings.lr must be > 0 and weight_decay >= 0, got {self.lr!r}, {self.weight_decay!r}")

    def key(self, text_sha256: str = "") -> str:
        """A 16-hex-digit hash of this file's source, these settings and the text's hash."""
        h = _source_key()
        h.update(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        h.update(text_sha256.encode())
        return h.hexdigest()[:16]

    def gpt2_config(self) -> Any:
        """The ``GPT2Config`` of the model (no dropout, untied output layer, token 0 is end-of-text)."""
        from transformers import GPT2Config

        return GPT2Config(vocab_size=self.vocab_size, n_positions=self.context, n_embd=self.n_embd,
                          n_layer=self.n_layer, n_head=self.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                          tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)


def train_tokenizer(corpus: Corpus, vocab_size: int) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on the train split (token 0 is ``<|endoftext|>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(corpus.train), trainer)
    return tok


def encode_documents(tokenizer: Any, docs: tuple[str, ...]) -> torch.Tensor:
    """The documents' token ids, each followed by the end-of-text token, as one 1-D LongTensor."""
    eot = tokenizer.token_to_id(EOT)
    ids: list[int] = []
    for enc in tokenizer.encode_batch(list(docs)):
        ids.extend(enc.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


def unigram_perplexity(train_ids: torch.Tensor, test_ids: torch.Tensor, vocab_size: int) -> float:
    """Perplexity on ``test_ids[1:]`` (the tokens an evaluation scores) of the add-one unigram model of ``train_ids``.

    Example:
        >>> import torch
        >>> round(unigram_perplexity(torch.tensor([0, 0, 1]), torch.tensor([1, 0, 0]), 2), 3)  # p(0) = 3/5
        1.667
    """
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0
    logp = counts.log() - counts.sum().log()
    return math.exp(float(-logp[test_ids[1:]].mean()))


def _windows(ids: torch.Tensor, n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(ids) - length, (n,), generator=gen)
    return torch.stack([ids[s : s + length] for s in starts.tolist()])


def train(settings: Settings, train_ids: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the GPT-2 on random windows of ``train_ids``, deterministically; returns ``(state_dict, history)``.

    ``history`` holds the per-step ``train_loss``, the settings, wall-clock ``seconds``, ``cpu_seconds`` and
    ``threads``. Uses every CPU the process may use (restoring torch's thread count after).
    """
    import torch.nn.functional as F
    from tqdm.auto import tqdm
    from transformers import GPT2LMHeadModel

    s = settings
    history: dict[str, Any] = {"step": [], "train_loss": [], "settings": dataclasses.asdict(s)}
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch_threads() as threads:
        torch.manual_seed(s.seed)
        gen = torch.Generator().manual_seed(s.seed)
        model = GPT2LMHeadModel(s.gpt2_config()).train()
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.95))

        def lr_at(step: int) -> float:
            if step < s.warmup:
                return (step + 1) / s.warmup
            t = (step - s.warmup) / max(1, s.steps - s.warmup)
            return 0.1 + 0.45 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        bar = tqdm(range(s.steps), desc="training pydoc-gpt", unit="step", disable=None)
        for step in bar:
            x = _windows(train_ids, s.batch_size, s.context + 1, gen)
            logits = model(input_ids=x[:, :-1]).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            history["step"].append(step + 1)
            value = loss.item()
            history["train_loss"].append(value)
            bar.set_postfix(loss=f"{value:.3f}")
    history["seconds"] = time.perf_counter() - start
    history["cpu_seconds"] = time.process_time() - cpu_start
    history["threads"] = threads
    history["parameters"] = sum(p.numel() for p in model.parameters())
    history["torch"] = torch.__version__
    log.info("pydoc-gpt trained in %.1f s: final train loss %.3f", history["seconds"], history["train_loss"][-1])
    return model.state_dict(), history


class PydocGPT(TrainedOnFirstUse, CausalLMWorkload):
    """The ``pydoc-gpt`` workload; primary metric ``perplexity`` (lower is better).

    Example:
        >>> w = PydocGPT()
        >>> w.name, w.primary_metric, w.higher_is_better
        ('pydoc-gpt', 'perplexity', False)
    """

    name = "pydoc-gpt"
    #: the default sweep's columns: PositTune's table, with int8 and MXFP8 for reference
    sweep_cells = ("fp32", "e4m3", "posit(8,0)", "posit(8,1)", "posit(6,0)", "posit(6,1)", "lp(6,1,2,0)",
                   "int8/channel", "mxfp8")
    max_length = 256
    stride = EVAL_STRIDE
    _REBUILDABLE = ("_pristine", "_ref", "_corpus", "_tokenizer", "_ids")

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.max_length = self.settings.context
        self.stride = min(EVAL_STRIDE, self.settings.context)
        self._corpus: Corpus | None = None
        self._tokenizer: Any = None
        self._ids: dict[str, torch.Tensor] | None = None

    # -- text -------------------------------------------------------------------------------------
    @property
    def corpus(self) -> Corpus:
        """The split documentation (see :func:`build_corpus`), loaded once."""
        if self._corpus is None:
            self._corpus = build_corpus()
        return self._corpus

    @property
    def tokenizer(self) -> Any:
        """The BPE tokenizer, trained on first use and cached in ``pydoc-gpt-tokenizer-<key>.json``."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            h = _source_key()
            h.update(f"{self.settings.vocab_size}:{self.corpus.sha256}".encode())
            path = cache_dir() / f"pydoc-gpt-tokenizer-{h.hexdigest()[:16]}.json"
            if not path.exists():
                tok = train_tokenizer(self.corpus, self.settings.vocab_size)
                atomic_write(path, lambda t: t.write_text(tok.to_str(), encoding="utf-8"))
            self._tokenizer = Tokenizer.from_file(str(path))
        return self._tokenizer

    def token_ids(self, split: str) -> torch.Tensor:
        """The token ids of ``split`` (``train``, ``calibration`` or ``test``; all of it, not the evaluation slice)."""
        if split not in ("train", "calibration", "test"):
            raise ValueError(f"split must be 'train', 'calibration' or 'test', got {split!r}")
        if self._ids is None:
            self._ids = {}
        if split not in self._ids:
            self._ids[split] = encode_documents(self.tokenizer, getattr(self.corpus, split))
        return self._ids[split]

    def _test_ids(self) -> torch.Tensor:
        return self.token_ids("test")[:EVAL_TOKENS]

    def _calib_ids(self) -> torch.Tensor:
        return self.token_ids("calibration")[:CALIB_TOKENS]

    def unigram_perplexity(self) -> float:
        """The baseline: the train split's add-one unigram model on the tokens ``evaluate`` scores."""
        return unigram_perplexity(self.token_ids("train"), self._test_ids(), self.settings.vocab_size)

    # -- model and cache --------------------------------------------------------------------------
    @property
    def weights_path(self) -> Path:
        """``<cache>/pydoc-gpt-<key>.pt``."""
        return cache_dir() / f"pydoc-gpt-{self.settings.key(self.corpus.sha256)}.pt"

    def _new_model(self) -> nn.Module:
        from transformers import GPT2LMHeadModel

        return GPT2LMHeadModel(self.settings.gpt2_config())

    def _train(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Train, then add the test and unigram perplexities and the corpus facts to the history (the loss curve);
        the trained model is kept as the pristine one."""
        state, history = train(self.settings, self.token_ids("train"))
        model = self._new_model()
        model.load_state_dict(state)
        self._pristine = model.eval()
        history["test_perplexity"] = self.evaluate(model)["perplexity"]
        history["unigram_perplexity"] = self.unigram_perplexity()
        history["key"] = self.settings.key(self.corpus.sha256)
        history["corpus"] = self.corpus.stats()
        history["tokens"] = {s: len(self.token_ids(s)) for s in ("train", "calibration", "test")}
        return state, history

    def _build_model(self) -> nn.Module:
        self.ensure_trained()  # training keeps the trained model as the pristine one: no need to load it again
        return self._pristine if self._pristine is not None else super()._build_model()

    def plot_loss_curve(self, path: str | Path) -> Path:
        """Plot the training loss curve to a PNG (see :func:`plot_loss_curve`)."""
        return plot_loss_curve(self.history(), path)

    def export(self, directory: str | Path) -> Path:
        """Write the model and its tokenizer with ``save_pretrained``, loadable by the ``lm`` workload.

        Example:
            >>> PydocGPT().export("/tmp/pydoc-gpt")  # doctest: +SKIP
        """
        from transformers import PreTrainedTokenizerFast

        directory = Path(directory)
        self._fp32().save_pretrained(directory)
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=self.tokenizer, eos_token=EOT, bos_token=EOT)
        tokenizer.save_pretrained(directory)
        return directory


def _moving_mean(xs: list[float], k: int) -> Iterator[float]:
    total = 0.0
    for i, x in enumerate(xs):
        total += x - (xs[i - k] if i >= k else 0.0)
        yield total / min(i + 1, k)


def plot_loss_curve(history: dict[str, Any], path: str | Path) -> Path:
    """Training cross-entropy per step (and its 10-step moving mean) as a PNG.

    Example:
        >>> import tempfile, pathlib
        >>> h = {"step": [1, 2, 3], "train_loss": [7.0, 6.0, 5.5]}
        >>> plot_loss_curve(h, pathlib.Path(tempfile.mkdtemp()) / "c.png").suffix
        '.png'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(history["step"], history["train_loss"], alpha=0.4, label="train loss")
    ax.plot(history["step"], list(_moving_mean(history["train_loss"], 10)), label="10-step mean")
    ax.set(title="pydoc-gpt training", xlabel="step", ylabel="cross-entropy (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return atomic_write(path, lambda t: fig.savefig(t, format="png"))

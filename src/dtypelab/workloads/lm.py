"""``lm``: any causal language model on disk (Hugging Face format), judged by sliding-window perplexity.

``get("lm", model="./gpt2", text="wiki.test.raw")`` loads the model and its tokenizer with
``local_files_only=True`` (nothing is ever downloaded) and scores the text the way the Hugging Face perplexity
guide does: windows of ``max_length`` tokens (default: the model's context) that start every ``stride`` tokens
(default ``max_length // 2``); each window scores only the tokens the previous windows did not, so with
``stride < max_length`` every token after the first is scored exactly once, with at least ``max_length - stride``
tokens of left context once the text is that long (see :func:`sliding_windows`; ``stride == max_length`` is the
guide's non-overlapping variant).

Metrics: ``perplexity`` (primary, lower is better) = exp(mean NLL); ``nll`` (mean negative log-likelihood in
nats); ``tokens`` (how many were scored); ``kl`` (mean over scored tokens of KL(P_fp32 || P_model), the
quantized next-token distribution's divergence from the FP32 model's, in nats: the fidelity metric).

transformers' GPT-2 ``Conv1D`` (a linear layer whose weight is stored ``(in, out)``) is registered as the layer
kind ``"Conv1D"`` when a language-model workload first hands out a model (or by :func:`register_conv1d`), so
``quantize_model`` reaches GPT-2's attention and MLP layers.

Example:
    >>> [(w.begin, w.end, w.scored) for w in sliding_windows(10, max_length=4, stride=2)]
    [(0, 4, 3), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
"""

from __future__ import annotations

import abc
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dtypelab.model.layers import LayerKind, register_layer_kind
from dtypelab.workloads.base import Workload

__all__ = ["Window", "sliding_windows", "CausalLMWorkload", "LocalLM", "register_conv1d", "offline"]

log = logging.getLogger(__name__)

#: the FP32 reference log-probabilities kept in memory for ``kl`` (beyond this they are recomputed per evaluation)
REF_CACHE_BYTES = 1 << 30
#: the most logits (batch x length x vocabulary) one forward pass of the evaluation may hold
LOGITS_PER_BATCH = 1 << 25


def offline() -> None:
    """Tell huggingface_hub and transformers never to reach the network (unless the user already said otherwise)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def register_conv1d() -> LayerKind:
    """Register transformers' ``Conv1D`` (GPT-2's linear layers, weight ``(in, out)``) as a quantizable kind.

    Its forward argument ``x`` is the activation. Per-channel weight granularity on axis 0 is per *input*
    feature for this kind (the weight is transposed relative to ``nn.Linear``); per-tensor schemes are the same.

    Example:
        >>> from dtypelab.model.layers import kind_of
        >>> from transformers.pytorch_utils import Conv1D
        >>> _ = register_conv1d()
        >>> kind_of(Conv1D(4, 3)).name
        'Conv1D'
    """
    from transformers.pytorch_utils import Conv1D

    return register_layer_kind(LayerKind("Conv1D", Conv1D, lambda m: [(m, "weight")], activation_args=("x",)))


@dataclass(frozen=True)
class Window:
    """One evaluation window: tokens ``[begin, end)`` go in, the last ``scored`` of them are scored."""

    begin: int
    end: int
    scored: int


def sliding_windows(n_tokens: int, max_length: int, stride: int) -> list[Window]:
    """The Hugging Face guide's sliding windows over ``n_tokens`` tokens: each token scored at most once.

    A window scores the tokens after the previous window's end; its own first token has no context inside the
    window, so with ``stride == max_length`` (no overlap) each window's first token is not scored, exactly as in
    the guide (whose non-overlapping GPT-2 figure, 19.44 on WikiText-2, is the seed's FP32 number). With
    ``stride < max_length`` every token but the text's first is scored exactly once.

    Example:
        >>> sliding_windows(5, max_length=8, stride=4)
        [Window(begin=0, end=5, scored=4)]
        >>> sliding_windows(1, 8, 4)
        Traceback (most recent call last):
        ...
        ValueError: perplexity needs at least 2 tokens, got 1
    """
    for label, value, low in (("n_tokens", n_tokens, 0), ("max_length", max_length, 2), ("stride", stride, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an int >= {low}, got {value!r}")
    if n_tokens < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {n_tokens}")
    if stride > max_length:
        raise ValueError(f"stride ({stride}) must be at most max_length ({max_length}): a larger one skips tokens")
    windows: list[Window] = []
    prev_end = 1  # the first token has no context: it is never scored
    for begin in range(0, n_tokens, stride):
        end = min(begin + max_length, n_tokens)
        scored = min(end - prev_end, end - begin - 1)
        if scored > 0:  # a last window of one token (no overlap) has nothing to score
            windows.append(Window(begin, end, scored))
        prev_end = end
        if end == n_tokens:
            break
    return windows


def _batches(windows: Sequence[Window], vocab: int) -> Iterator[list[tuple[int, Window]]]:
    """Consecutive windows of equal length, as many per batch as :data:`LOGITS_PER_BATCH` allows."""
    group: list[tuple[int, Window]] = []
    for i, w in enumerate(windows):
        length = w.end - w.begin
        room = max(1, LOGITS_PER_BATCH // (length * vocab))
        if group and (group[0][1].end - group[0][1].begin != length or len(group) >= room):
            yield group
            group = []
        group.append((i, w))
    if group:
        yield group


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


class CausalLMWorkload(Workload):
    """Perplexity of a causal LM on fixed token ids; subclasses provide the model and ``_test_ids``/``_calib_ids``.

    A batch is ``{"input_ids": LongTensor (N, L)}``; ``run`` returns the logits ``(N, L, vocab)``.
    ``evaluate(model, limit=k)`` scores the first ``k`` test tokens.
    """

    primary_metric = "perplexity"
    higher_is_better = False
    max_length: int = 0
    stride: int = 0
    _REBUILDABLE: tuple[str, ...] = ("_pristine", "_ref")
    _ref: dict[Window, torch.Tensor] | None = None

    @abc.abstractmethod
    def _test_ids(self) -> torch.Tensor:
        """The test text's token ids (1-D LongTensor)."""

    @abc.abstractmethod
    def _calib_ids(self) -> torch.Tensor:
        """The calibration text's token ids (1-D LongTensor)."""

    # -- interface --------------------------------------------------------------------------------
    def model(self) -> nn.Module:
        """A fresh FP32 copy of the model (GPT-2's ``Conv1D`` registered as a quantizable kind first)."""
        register_conv1d()
        return super().model()

    def calibration(self, n_batches: int = 4, batch_size: int = 4) -> list[dict[str, torch.Tensor]]:
        """``n_batches`` batches of ``batch_size`` consecutive, non-overlapping calibration windows (fewer if the
        calibration text runs out; a text shorter than one window gives one shorter window)."""
        ids = self._calib_ids()
        length = min(self.max_length, len(ids))
        rows = [ids[i : i + length] for i in range(0, len(ids) - length + 1, length)]
        return [{"input_ids": torch.stack(rows[i : i + batch_size])}
                for i in range(0, min(len(rows), n_batches * batch_size), batch_size)]

    def run(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token logits ``(N, L, vocab)`` of one batch, on the model's device."""
        with torch.no_grad():
            return model(input_ids=batch["input_ids"].to(_device(model))).logits

    def _log_probs(self, model: nn.Module, ids: torch.Tensor,
                   group: list[tuple[int, Window]]) -> Iterator[tuple[Window, torch.Tensor, torch.Tensor]]:
        """Per window of ``group``: (window, log-probabilities of its scored positions (scored, V), targets)."""
        x = torch.stack([ids[w.begin : w.end] for _, w in group])
        logits = self.run(model, {"input_ids": x}).float().cpu()
        length = x.shape[1]
        for row, (_, w) in enumerate(group):
            pred = logits[row, length - 1 - w.scored : length - 1]
            yield w, torch.log_softmax(pred, dim=-1), x[row, length - w.scored :]

    def _reference(self, ids: torch.Tensor, group: list[tuple[int, Window]]) -> dict[Window, torch.Tensor]:
        """The FP32 model's log-probabilities of each window of ``group`` (cached up to :data:`REF_CACHE_BYTES`)."""
        if self._ref is None:
            self._ref = {}
        missing = [(i, w) for i, w in group if w not in self._ref]
        out = {w: self._ref[w] for _, w in group if w in self._ref}
        if missing:
            used = sum(t.numel() * t.element_size() for t in self._ref.values())
            for w, logp, _ in self._log_probs(self._fp32(), ids, missing):
                out[w] = logp
                size = logp.numel() * logp.element_size()
                if used + size <= REF_CACHE_BYTES:
                    self._ref[w] = logp
                    used += size
        return out

    def evaluate(self, model: nn.Module, limit: int | None = None) -> dict[str, float]:
        """``perplexity``, ``nll``, ``tokens`` and ``kl`` on the test tokens (the first ``limit`` when given)."""
        ids = self._test_ids()
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 2:
                raise ValueError(f"limit must be an int >= 2 (test tokens), got {limit!r}")
            ids = ids[:limit]
        windows = sliding_windows(len(ids), self.max_length, self.stride)
        vocab = int(self._fp32().get_output_embeddings().weight.shape[0])
        nll_sum = kl_sum = 0.0
        n = 0
        was_training = model.training
        model.eval()
        try:
            for group in _batches(windows, vocab):
                ref = self._reference(ids, group)
                for w, logp, target in self._log_probs(model, ids, group):
                    r = ref[w]
                    nll_sum += float(-logp.gather(1, target.unsqueeze(1)).double().sum())
                    kl_sum += float((r.exp() * (r - logp)).sum(dtype=torch.float64))
                    n += w.scored
        finally:
            model.train(was_training)
        nll = nll_sum / n
        return {"perplexity": math.exp(nll), "nll": nll, "tokens": float(n), "kl": max(kl_sum / n, 0.0)}


def _read_text(path: str | os.PathLike[str], what: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"{what} {str(p)!r} is not a file; give a UTF-8 text file (e.g. wiki.test.raw)")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"{what} {str(p)!r} is empty")
    return text


class LocalLM(CausalLMWorkload):
    """The ``lm`` workload: a local Hugging Face causal LM and its tokenizer, sliding-window perplexity on a text.

    Args:
        model: a directory written by ``save_pretrained`` (config, weights, tokenizer files).
        text: the evaluation text file (UTF-8), tokenised as one sequence.
        calib_text: a separate calibration text; without one, the first ``calib_tokens`` tokens of ``text``
            (default: 4 windows, at most a tenth of the text) are held out for calibration and not scored.
        max_length: window length (default and maximum: the model's context).
        stride: window step (default ``max_length // 2``).
        device: where the model runs (``"cpu"``, ``"cuda"``, ...).

    Example:
        >>> LocalLM(model="/nonexistent", text="/nonexistent.txt")
        Traceback (most recent call last):
        ...
        ValueError: lm model '/nonexistent' is not a directory with a config.json (save_pretrained's output)
    """

    name = "lm"
    _REBUILDABLE = ("_pristine", "_ref", "_tokenizer", "_ids")

    def __init__(self, model: str | os.PathLike[str], text: str | os.PathLike[str],
                 calib_text: str | os.PathLike[str] | None = None, max_length: int | None = None,
                 stride: int | None = None, calib_tokens: int | None = None, device: str = "cpu") -> None:
        self.path = Path(model).expanduser()
        if not (self.path / "config.json").is_file():
            raise ValueError(f"lm model {str(model)!r} is not a directory with a config.json "
                             "(save_pretrained's output)")
        self.text_path = Path(text).expanduser()
        _read_text(self.text_path, "lm text")
        self.calib_path = None if calib_text is None else Path(calib_text).expanduser()
        if self.calib_path is not None:
            _read_text(self.calib_path, "lm calibration text")
        if calib_tokens is not None and (isinstance(calib_tokens, bool) or not isinstance(calib_tokens, int)
                                         or calib_tokens < 2):
            raise ValueError(f"calib_tokens must be an int >= 2, got {calib_tokens!r}")
        self.calib_tokens = calib_tokens
        self.device = torch.device(device)
        offline()
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(self.path), local_files_only=True)
        context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if max_length is None:
            if not context:
                raise ValueError(f"lm model {str(model)!r}: its config states no context length; pass max_length")
            max_length = int(context)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2 \
                or (context and max_length > context):
            raise ValueError(f"max_length must be an int in [2, {context or 'the model context'}], got {max_length!r}")
        self.max_length = max_length
        self.stride = max(1, max_length // 2) if stride is None else stride
        sliding_windows(2, self.max_length, self.stride)  # validates the stride
        self._tokenizer: Any = None
        self._ids: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def tokenizer(self) -> Any:
        """The model's own tokenizer, loaded offline once."""
        if self._tokenizer is None:
            offline()
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        return self._tokenizer

    def encode(self, text: str) -> torch.Tensor:
        """``text`` as one 1-D LongTensor of token ids (the tokenizer's defaults, as in the Hugging Face guide)."""
        return torch.tensor(self.tokenizer(text, verbose=False)["input_ids"], dtype=torch.long)

    def _split(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._ids is None:
            ids = self.encode(_read_text(self.text_path, "lm text"))
            if self.calib_path is not None:
                self._ids = ids, self.encode(_read_text(self.calib_path, "lm calibration text"))
            else:
                head = self.calib_tokens if self.calib_tokens is not None else min(4 * self.max_length, len(ids) // 10)
                if len(ids) - head < 2 or head < 2:
                    raise ValueError(f"lm text {str(self.text_path)!r} has {len(ids)} tokens: too few to hold out "
                                     f"{head} for calibration and score the rest; pass calib_text")
                self._ids = ids[head:], ids[:head]
        return self._ids

    def _test_ids(self) -> torch.Tensor:
        return self._split()[0]

    def _calib_ids(self) -> torch.Tensor:
        return self._split()[1]

    def _build_model(self) -> nn.Module:
        offline()
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(self.path), local_files_only=True)
        return model.float().to(self.device).eval()

    def describe(self) -> str:
        return (f"{self.name}: {self.path.name} on {self.text_path.name}, perplexity (lower is better), "
                f"windows of {self.max_length} every {self.stride}")

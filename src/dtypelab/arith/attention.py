"""Attention with simulated arithmetic: the two activation x activation products of a softmax attention, Q·Kᵀ
and A·V, computed by a :class:`~dtypelab.arith.compute.Compute`, their operands rounded by a scheme, the
probabilities and the attention context rounded to formats.

Every attention here takes the same ``ops:`` fields (:mod:`dtypelab.arith.ops` attaches them):

* ``compute``: how Q·Kᵀ and A·V are summed (``{accumulator: bf16, chunk: 32}``, ``quire`` ...; none: FP32 matmul);
* ``operands``: a scheme Q, K, V and the probabilities are rounded to before their products (dynamic scales);
* ``softmax``: the format the probabilities are rounded to;
* ``output``: the format the attention context (A·V, heads merged) is rounded to -- the module's result for
  BERT, the input of the output projection for GPT-2 and ``nn.MultiheadAttention``.

The algorithm is the eager one, ``softmax(Q Kᵀ · scaling + mask) V``, with the mask as the module's library
applies it. With grad enabled, each simulated step passes the gradient of its FP32 function straight through.

==============================  ==================================================================================
module                          what is simulated
==============================  ==================================================================================
``BertSelfAttention``           encoder self-attention: Q·Kᵀ and A·V (boolean or additive mask as given)
``GPT2Attention``               causal self-attention, no past keys/values (an empty cache is filled as the
                                library does; a cache holding earlier tokens, or cross-attention, is a
                                ValueError): Q·Kᵀ and A·V; the causal and padding mask as transformers gives it
                                (additive for eager, boolean for sdpa, or none: then the causal mask is applied
                                here, as sdpa's ``is_causal`` does); the ``c_attn`` / ``c_proj`` Conv1D
                                projections run as the layer config makes them (weights, activations, and
                                a layer ``compute:``: Conv1D is a compute kind)
``nn.MultiheadAttention``       Q·Kᵀ and A·V of the forward recomputed from its projection weights (packed
                                ``in_proj_weight`` or separate ``q/k/v_proj_weight``, as quantized by the layer
                                config); the projections are FP32 ``F.linear`` dot products; ``batch_first``,
                                unbatched inputs, ``key_padding_mask`` and ``attn_mask`` (bool or float),
                                ``need_weights``, ``average_attn_weights``; ``bias_k`` / ``add_zero_attn`` are a
                                ValueError
==============================  ==================================================================================

Example:
    >>> import torch
    >>> mha = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    >>> x = torch.randn(2, 5, 16)
    >>> sim = MultiheadAttentionForward(mha, {"compute": {"accumulator": "fp32", "chunk": 4}})
    >>> bool(torch.allclose(sim(x, x, x)[0], mha(x, x, x)[0], atol=1e-5))
    True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dtypelab.arith.compute import Compute
from dtypelab.arith.numbers import rounder, straight_through
from dtypelab.schemes import Scheme, fake_quantize


class AttentionForward:
    """The fields every simulated attention takes and the steps they round (subclasses give the algorithm)."""

    def __init__(self, module: nn.Module, spec: dict[str, Any]) -> None:
        self.module = module
        self.compute = Compute.parse(spec["compute"]) if spec.get("compute") else None
        self.operands = Scheme.parse(spec["operands"]) if spec.get("operands") else None
        self.softmax = rounder(spec["softmax"]) if spec.get("softmax") else None
        self.output = rounder(spec["output"]) if spec.get("output") else None

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` (batched) with the operands rounded and the sums of ``compute``."""
        if self.operands is not None:
            a, b = fake_quantize(a, self.operands), fake_quantize(b, self.operands)
        if self.compute is None:
            return torch.matmul(a, b)
        return straight_through(self.compute.matmul(a, b, dtype=a.dtype), lambda: torch.matmul(a, b), (a, b))

    def probabilities(self, scores: torch.Tensor, p: float) -> torch.Tensor:
        """``dropout(round(softmax(scores)))``, ``p`` the dropout probability (0 in eval)."""
        probs = F.softmax(scores, dim=-1)
        if self.softmax is not None:
            probs = straight_through(self.softmax(probs.double()).to(probs.dtype), lambda: probs, (probs,))
        return F.dropout(probs, p=p, training=p > 0)

    def context(self, ctx: torch.Tensor) -> torch.Tensor:
        """The attention context (heads merged) rounded to ``output``."""
        if self.output is None:
            return ctx
        return straight_through(self.output(ctx.double()).to(ctx.dtype), lambda: ctx, (ctx,))


class BertAttentionForward(AttentionForward):
    """BERT self-attention with simulated Q·Kᵀ and A·V, rounded softmax and context (the eager algorithm:
    ``softmax(Q Kᵀ * scaling + mask) V``)."""

    def __call__(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 cache: Any = None, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.module
        if cache is not None or kwargs.get("past_key_values") is not None \
                or kwargs.get("encoder_hidden_states") is not None:
            raise ValueError("simulated BERT attention supports encoder self-attention only (no cache, no "
                             "cross-attention)")
        shape = hidden_states.shape[:-1]
        heads = (*shape, -1, m.attention_head_size)
        q = m.query(hidden_states).view(heads).transpose(1, 2)
        k = m.key(hidden_states).view(heads).transpose(1, 2)
        v = m.value(hidden_states).view(heads).transpose(1, 2)
        scores = self.matmul(q, k.transpose(2, 3)) * m.scaling
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            else:
                scores = scores + attention_mask
        probs = self.probabilities(scores, m.dropout.p if m.training else 0.0)
        ctx = self.context(self.matmul(probs, v).transpose(1, 2).reshape(*shape, -1).contiguous())
        return ctx, probs


class GPT2AttentionForward(AttentionForward):
    """Hugging Face GPT-2 causal self-attention with simulated Q·Kᵀ and A·V (transformers' eager algorithm):
    ``c_proj(round(softmax(Q Kᵀ * scaling + mask) V))``, ``scaling`` = ``head_dim ** -0.5`` if
    ``scale_attn_weights``, divided by ``layer_idx + 1`` if ``scale_attn_by_inverse_layer_idx``; with
    ``reorder_and_upcast_attn`` the scores are float32 whatever the model's dtype."""

    def __init__(self, module: nn.Module, spec: dict[str, Any]) -> None:
        if getattr(module, "is_cross_attention", False):
            raise ValueError("simulated GPT-2 attention supports self-attention only; this GPT2Attention is a "
                             "cross-attention (match the self-attention modules, e.g. 're:.*\\.attn')")
        super().__init__(module, spec)
        m = module
        self.scaling = m.head_dim ** -0.5 if m.scale_attn_weights else 1.0
        if m.scale_attn_by_inverse_layer_idx:
            self.scaling /= float(m.layer_idx + 1)

    def _cached(self, cache: Any, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An empty cache is filled with this call's keys and values (as the library does); one that holds
        earlier tokens is refused."""
        if cache is None:
            return k, v
        layer_cache = getattr(cache, "self_attention_cache", cache)  # an EncoderDecoderCache's self part
        idx = self.module.layer_idx
        if layer_cache.get_seq_length(idx) > 0:
            raise ValueError("simulated GPT-2 attention supports self-attention without past keys/values; this "
                             f"call's cache already holds {layer_cache.get_seq_length(idx)} tokens of layer {idx} "
                             "(generation with a cache is not simulated: call the model with use_cache=False "
                             "on the whole sequence)")
        return layer_cache.update(k, v, idx)

    def __call__(self, hidden_states: torch.Tensor, cache: Any = None, attention_mask: torch.Tensor | None = None,
                 encoder_hidden_states: torch.Tensor | None = None, encoder_attention_mask: Any = None,
                 output_attentions: bool | None = False, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.module
        if encoder_hidden_states is not None:
            raise ValueError("simulated GPT-2 attention supports self-attention only (no encoder_hidden_states)")
        cache = cache if cache is not None else kwargs.get("past_key_values")
        q, k, v = m.c_attn(hidden_states).split(m.split_size, dim=2)
        heads = (*hidden_states.shape[:-1], -1, m.head_dim)
        q, k, v = (t.view(heads).transpose(1, 2) for t in (q, k, v))
        k, v = self._cached(cache, k, v)
        if m.reorder_and_upcast_attn:
            q, k = q.float(), k.float()
        scores = self.matmul(q, k.transpose(-1, -2)) * self.scaling
        if attention_mask is None:  # sdpa without padding: its is_causal
            if m.is_causal and q.shape[-2] > 1:
                n, s = q.shape[-2], k.shape[-2]
                causal = torch.ones(n, s, dtype=torch.bool, device=q.device).tril(s - n)
                scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
        elif attention_mask.dtype == torch.bool:  # sdpa: True = attend
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        elif attention_mask.is_floating_point() and attention_mask.dim() == 4:  # eager: additive
            scores = scores + attention_mask
        else:
            raise ValueError(f"simulated GPT-2 attention takes the 4-D additive (eager) or boolean (sdpa) mask "
                             f"transformers builds, got a {attention_mask.dim()}-D {attention_mask.dtype} mask "
                             f"(attn_implementation {getattr(m.config, '_attn_implementation', '?')!r}); load "
                             "the model with attn_implementation='eager' or 'sdpa'")
        probs = self.probabilities(scores, m.attn_dropout.p if m.training else 0.0).to(v.dtype)
        ctx = self.matmul(probs, v).transpose(1, 2)
        ctx = self.context(ctx.reshape(*ctx.shape[:-2], -1).contiguous())
        return m.resid_dropout(m.c_proj(ctx)), probs


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True: masked out) as torch makes it additive: -inf where True, 0 elsewhere."""
    if mask is None or mask.is_floating_point():
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))


class MultiheadAttentionForward(AttentionForward):
    """``nn.MultiheadAttention`` recomputed from its weights: FP32 q/k/v projections (``F.linear``, the weights as
    the layer config quantizes them), simulated Q·Kᵀ and A·V, ``softmax(Q Kᵀ * head_dim**-0.5 + mask) V``
    (the scaling after the product, where torch scales Q before it), the context rounded to ``output``, then the
    FP32 output projection."""

    def __init__(self, module: nn.Module, spec: dict[str, Any]) -> None:
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("simulated nn.MultiheadAttention supports neither add_bias_kv nor add_zero_attn")
        super().__init__(module, spec)

    def _projections(self, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.module
        if m._qkv_same_embed_dim:
            ws = m.in_proj_weight.chunk(3)
        else:
            ws = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)
        bs = (None,) * 3 if m.in_proj_bias is None else m.in_proj_bias.chunk(3)
        return F.linear(query, ws[0], bs[0]), F.linear(key, ws[1], bs[1]), F.linear(value, ws[2], bs[2])

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                 attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                 is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        m = self.module
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint (as nn.MultiheadAttention)")
        batched = query.dim() == 3
        if not batched:  # -> batch first, batch of one
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not m.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, length, emb = query.shape
        src, heads, hd = key.shape[1], m.num_heads, m.head_dim
        q, k, v = self._projections(query, key, value)
        q, k, v = (t.reshape(n, t.shape[1], heads, hd).transpose(1, 2) for t in (q, k, v))
        scores = self.matmul(q, k.transpose(-1, -2)) * hd ** -0.5  # [n, heads, length, src]
        mask = _additive(attn_mask, scores.dtype)
        if mask is not None:
            scores = scores + (mask.view(n, heads, length, src) if mask.dim() == 3 else mask)
        pad = _additive(key_padding_mask, scores.dtype)
        if pad is not None:
            scores = scores + pad.view(n, 1, 1, src)
        probs = self.probabilities(scores, m.dropout if m.training else 0.0)
        ctx = self.context(self.matmul(probs, v).transpose(1, 2).reshape(n, length, emb))
        out = F.linear(ctx, m.out_proj.weight, m.out_proj.bias)
        out = out.squeeze(0) if not batched else out if m.batch_first else out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = probs.mean(dim=1) if average_attn_weights else probs
        return out, weights if batched else weights.squeeze(0)


__all__ = ["AttentionForward", "BertAttentionForward", "GPT2AttentionForward", "MultiheadAttentionForward"]

"""Count the dot products of one forward pass: which layer, how many, how long, with a weight or not.

A :class:`~torch.overrides.TorchFunctionMode` sees every ``F.linear``, ``F.conv1d/2d/3d``, ``F.embedding``,
``matmul``/``@``/``mm``/``bmm``/``addmm``/``baddbmm``, ``F.scaled_dot_product_attention`` and
``F.multi_head_attention_forward`` call (the last one is counted from its arguments: q/k/v projections,
``Q K^T``, ``A V`` and the output projection, since its insides run below the mode). Forward hooks on every
module keep the stack of running modules, so each call is attributed to a layer:

* an operand that is a planned layer's stored weight (by identity) -> that layer, as weight x activation;
* else the innermost planned module that is running -> that layer (weight x activation for linear/conv,
  activation x activation for matmuls, as the attention products of ``nn.MultiheadAttention``);
* else the innermost running module, unquantized (e.g. a BERT self-attention's ``Q K^T``).

Example:
    >>> import torch
    >>> recs = count(torch.nn.Linear(128, 10), torch.randn(1, 128), {})
    >>> [(r.layer, r.op, r.outputs, r.k, r.bias) for r in recs]
    [('', 'linear', 10, 128, True)]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from dtypelab.model.layers import kind_of, raw_weight


@dataclass(frozen=True)
class OpRecord:
    """One counted operation: ``outputs`` dot products of length ``k`` (so ``outputs * k`` multiplies).

    ``a_elems`` are the elements of the activation operand, ``b_elems`` of the other (the weight when
    ``weight`` is true, else a second activation); ``scores`` counts attention scores (scaled by 1/sqrt(d)).
    ``planned`` says ``layer`` is a layer of the quantization plan.
    """

    layer: str
    op: str
    outputs: int
    k: int
    bias: bool
    a_elems: int
    b_elems: int
    weight: bool
    planned: bool
    scores: int = 0

    @property
    def macs(self) -> int:
        return self.outputs * self.k


@dataclass(frozen=True)
class _Dot:
    op: str
    outputs: int
    k: int
    bias: bool
    a_elems: int
    b_elems: int
    tensors: tuple[Any, ...] = ()  # operands to look up as planned weights
    scores: int = 0
    is_weight_op: bool = False  # the second operand is by construction a weight (linear, conv, embedding)


def _numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _linear(args: tuple, kw: dict, out: Any) -> list[_Dot]:
    x, w = args[0], args[1] if len(args) > 1 else kw["weight"]
    b = args[2] if len(args) > 2 else kw.get("bias")
    return [_Dot("linear", out.numel(), w.shape[-1], b is not None, x.numel(), w.numel(), (w,), is_weight_op=True)]


def _conv(name: str) -> Callable[[tuple, dict, Any], list[_Dot]]:
    def handler(args: tuple, kw: dict, out: Any) -> list[_Dot]:
        x, w = args[0], args[1] if len(args) > 1 else kw["weight"]
        b = args[2] if len(args) > 2 else kw.get("bias")
        return [_Dot(name, out.numel(), w[0].numel(), b is not None, x.numel(), w.numel(), (w,), is_weight_op=True)]
    return handler


def _embedding(args: tuple, kw: dict, out: Any) -> list[_Dot]:
    w = args[1] if len(args) > 1 else kw["weight"]  # only the rows gathered are read (and dequantized)
    return [_Dot("embedding", out.numel(), 0, False, 0, out.numel(), (w,), is_weight_op=True)]


def _matmul(name: str, swap: bool = False) -> Callable[[tuple, dict, Any], list[_Dot]]:
    def handler(args: tuple, kw: dict, out: Any) -> list[_Dot]:
        a, b = (args[1], args[0]) if swap else (args[0], args[1] if len(args) > 1 else kw["other"])
        return [_Dot(name, max(out.numel(), 1), a.shape[-1], False, a.numel(), b.numel(), (b, a))]
    return handler


def _addmm(name: str) -> Callable[[tuple, dict, Any], list[_Dot]]:
    def handler(args: tuple, kw: dict, out: Any) -> list[_Dot]:
        a = args[1] if len(args) > 1 else kw["mat1"] if "mat1" in kw else kw["batch1"]
        b = args[2] if len(args) > 2 else kw["mat2"] if "mat2" in kw else kw["batch2"]
        return [_Dot(name, out.numel(), a.shape[-1], True, a.numel(), b.numel(), (b, a))]
    return handler


def _sdpa(args: tuple, kw: dict, out: Any) -> list[_Dot]:
    q, k, v = (args[i] if len(args) > i else kw[n] for i, n in enumerate(("query", "key", "value")))
    rows, e, s, ev = q.numel() // q.shape[-1], q.shape[-1], k.shape[-2], v.shape[-1]
    return [_Dot("sdpa Q·K^T", rows * s, e, False, q.numel(), k.numel(), scores=rows * s),
            _Dot("sdpa A·V", rows * ev, s, False, rows * s, v.numel())]


_MHA_SIG = inspect.signature(F.multi_head_attention_forward)


def _mha(args: tuple, kw: dict, out: Any) -> list[_Dot]:
    p = _MHA_SIG.bind(*args, **kw).arguments
    q, k, v, heads = p["query"], p["key"], p["value"], p["num_heads"]
    batch = q.shape[1] if q.dim() == 3 else 1
    length, src, emb = q.shape[0], k.shape[0], q.shape[-1]
    kdim, vdim = k.shape[-1], v.shape[-1]
    src += int(p.get("bias_k") is not None) + int(bool(p.get("add_zero_attn", False)))
    bias = p.get("in_proj_bias") is not None
    if p.get("use_separate_proj_weight", False):
        wq, wk, wv = p["q_proj_weight"], p["k_proj_weight"], p["v_proj_weight"]
    else:
        wq = wk = wv = p["in_proj_weight"]
    head, wo = emb // heads, p["out_proj_weight"]
    n_q, n_kv, n_scores = length * batch * emb, src * batch * emb, batch * heads * length * src
    w_elems = wq.numel() // 3 if wq is wk else wq.numel()
    return [
        _Dot("mha q-proj", n_q, emb, bias, q.numel(), w_elems, (wq,), is_weight_op=True),
        _Dot("mha k-proj", n_kv, kdim, bias, k.numel(), w_elems, (wk,), is_weight_op=True),
        _Dot("mha v-proj", n_kv, vdim, bias, v.numel(), w_elems, (wv,), is_weight_op=True),
        _Dot("mha Q·K^T", n_scores, head, False, n_q, n_kv, scores=n_scores),
        _Dot("mha A·V", n_q, src, False, n_scores, n_kv),
        _Dot("mha out-proj", n_q, emb, p.get("out_proj_bias") is not None, n_q, wo.numel(), (wo,),
             is_weight_op=True),
    ]


HANDLERS: dict[Any, Callable[[tuple, dict, Any], list[_Dot]]] = {
    F.linear: _linear,
    F.conv1d: _conv("conv1d"), F.conv2d: _conv("conv2d"), F.conv3d: _conv("conv3d"),
    F.embedding: _embedding,
    torch.matmul: _matmul("matmul"), torch.Tensor.matmul: _matmul("matmul"),
    torch.Tensor.__matmul__: _matmul("matmul"), torch.Tensor.__rmatmul__: _matmul("matmul", swap=True),
    torch.mm: _matmul("mm"), torch.Tensor.mm: _matmul("mm"),
    torch.bmm: _matmul("bmm"), torch.Tensor.bmm: _matmul("bmm"),
    torch.addmm: _addmm("addmm"), torch.Tensor.addmm: _addmm("addmm"),
    torch.baddbmm: _addmm("baddbmm"), torch.Tensor.baddbmm: _addmm("baddbmm"),
    F.scaled_dot_product_attention: _sdpa,
    F.multi_head_attention_forward: _mha,
}


class _Counter(TorchFunctionMode):
    def __init__(self, owners: Mapping[int, str], planned: Mapping[int, str], stack: list[tuple[str, nn.Module]]):
        super().__init__()
        self.owners, self.planned, self.stack = owners, planned, stack
        self.records: list[OpRecord] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        handler = HANDLERS.get(func)
        if handler is not None:
            for dot in handler(args, kwargs, out):
                self.records.append(self._attribute(dot))
        return out

    def _attribute(self, d: _Dot) -> OpRecord:
        for t in d.tensors:
            if isinstance(t, torch.Tensor) and id(t) in self.owners:
                a_elems, b_elems = (d.a_elems, d.b_elems) if t is d.tensors[0] else (d.b_elems, d.a_elems)
                return OpRecord(self.owners[id(t)], d.op, d.outputs, d.k, d.bias, a_elems, b_elems, True, True,
                                d.scores)
        for _name, module in reversed(self.stack):
            if id(module) in self.planned:
                return OpRecord(self.planned[id(module)], d.op, d.outputs, d.k, d.bias, d.a_elems, d.b_elems,
                                d.is_weight_op, True, d.scores)
        name = self.stack[-1][0] if self.stack else ""
        return OpRecord(name, d.op, d.outputs, d.k, d.bias, d.a_elems, d.b_elems, d.is_weight_op, False, d.scores)


def layer_weights(module: nn.Module) -> list[torch.Tensor]:
    """The stored weight tensors of a quantizable layer (its kind's registry entry; MHA: all projections)."""
    kind = kind_of(module)
    return [] if kind is None else [raw_weight(owner, attr) for owner, attr in kind.weights(module)]


def _pop(stack: list) -> None:
    if stack:
        stack.pop()


def count(model: nn.Module, example: Any, plans: Mapping[str, nn.Module]) -> list[OpRecord]:
    """Run ``model`` once on ``example`` (a tensor, a tuple of arguments or a dict of keyword arguments) under
    ``torch.no_grad`` and return every counted operation. ``plans`` maps layer names to their modules."""
    planned = {id(m): name for name, m in plans.items()}
    owners = {id(w): name for name, m in plans.items() for w in layer_weights(m)}
    stack: list[tuple[str, nn.Module]] = []
    handles = []
    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(lambda mod, _a, _n=name: stack.append((_n, mod))))
        handles.append(m.register_forward_hook(lambda *_: _pop(stack), always_call=True))
    counter = _Counter(owners, planned, stack)
    try:
        with torch.no_grad(), counter:
            if isinstance(example, Mapping):
                model(**example)
            elif isinstance(example, tuple):
                model(*example)
            else:
                model(example)
    finally:
        for h in handles:
            h.remove()
    return counter.records


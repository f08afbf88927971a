"""Put simulated arithmetic into a model: the dot products of Linear / Conv1d / Conv2d layers and of transformers'
GPT-2 ``Conv1D`` (:data:`COMPUTE_KINDS`; their config's ``compute:``), and the ops of a transformer (the config's
``ops:`` rules).

An ``ops:`` rule matches modules of any type -- a glob on the module name, ``re:REGEX``, or a class name such as
``LayerNorm``, ``GELUActivation``, ``BertSelfAttention`` -- and says what their results are rounded to. Which
fields a module takes is its op kind (:data:`OP_KINDS`, first match wins):

==================  ==========================================  ===============================================
kind                modules                                     fields
==================  ==========================================  ===============================================
``bert-attention``  Hugging Face BERT self-attention            ``compute`` (of Q·Kᵀ and A·V), ``operands`` (a
                    (``BertSelfAttention``: MiniLM)             scheme for Q, K, V and the probabilities),
                                                                ``softmax``, ``output``
``gpt2-attention``  Hugging Face GPT-2 self-attention           the same four fields (``output``: the context,
                    (``GPT2Attention``: pydoc-gpt), no past     the input of ``c_proj``)
                    keys/values
``mha``             ``nn.MultiheadAttention``                   the same four fields (``output``: the context,
                                                                the input of ``out_proj``)
``bert-residual``   ``BertSelfOutput``, ``BertOutput``          ``residual`` (the add before the LayerNorm),
                                                                ``output``
``module``          any other module (LayerNorm, GELU, ReLU,    ``output``
                    Softmax, ...)
==================  ==========================================  ===============================================

The attention kinds are :mod:`dtypelab.arith.attention` (what each simulates and refuses).
Everything is attached to the model copy as instance ``forward`` overrides and forward hooks and taken off again
by :func:`dtypelab.restore` (the model comes back bit for bit). With grad enabled, a simulated layer passes the
gradient of its FP32 function straight through.

Example:
    >>> import torch, dtypelab as dl
    >>> net = torch.nn.Sequential(torch.nn.Linear(64, 4), torch.nn.LayerNorm(4))
    >>> x = torch.randn(2, 64)
    >>> _ = dl.quantize_model(net, {"compute": {"accumulator": "bf16", "chunk": 16},
    ...                             "ops": [{"match": "LayerNorm", "output": "e4m3"}]})
    >>> bool((dl.fmt("e4m3").quantize(net(x).double()) == net(x).double()).all())
    True
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dtypelab.arith.attention import BertAttentionForward, GPT2AttentionForward, MultiheadAttentionForward
from dtypelab.arith.compute import Compute
from dtypelab.arith.numbers import Rounder, rounder, straight_through
from dtypelab.arith.rules import COMPUTE_KINDS, OpRule
from dtypelab.model.layers import module_type, raw_weight
from dtypelab.model.methods import TRANSPOSED
from dtypelab.schemes import PerAxis, PerTensor, Scheme

# ---- op kinds ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpKind:
    """A kind of module an ``ops:`` rule can round: which fields it takes and how they are attached."""

    name: str
    matches: Callable[[nn.Module], bool]
    fields: tuple[str, ...]
    attach: Callable[[nn.Module, dict[str, Any]], Callable[[], None]]  # -> undo


def _class_names(module: nn.Module) -> list[str]:
    return [c.__name__ for c in module_type(module).__mro__]


def _is_bert_attention(m: nn.Module) -> bool:
    return "BertSelfAttention" in _class_names(m) and all(hasattr(m, a) for a in ("query", "key", "value"))


def _is_gpt2_attention(m: nn.Module) -> bool:
    return "GPT2Attention" in _class_names(m) and all(hasattr(m, a) for a in ("c_attn", "c_proj", "head_dim"))


def _is_multihead_attention(m: nn.Module) -> bool:
    return isinstance(m, nn.MultiheadAttention)


def _is_bert_residual(m: nn.Module) -> bool:
    names = _class_names(m)
    return ("BertSelfOutput" in names or "BertOutput" in names) and hasattr(m, "LayerNorm") and hasattr(m, "dense")


def _override(module: nn.Module, forward: Callable[..., Any]) -> Callable[[], None]:
    if "forward" in module.__dict__:
        raise ValueError(f"{type(module).__name__} already has its own forward override; dtypelab cannot wrap it")
    module.__dict__["forward"] = forward

    def undo() -> None:
        module.__dict__.pop("forward", None)
    return undo


def _round_tree(out: Any, r: Rounder, where: str) -> Any:
    if isinstance(out, torch.Tensor):
        return r(out.double()).to(out.dtype) if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_round_tree(o, r, where) for o in out)
    raise TypeError(f"{where}: output rounding needs a tensor (or a tuple of tensors), got {type(out).__name__}")


def _attach_output(module: nn.Module, spec: dict[str, Any]) -> Callable[[], None]:
    r = rounder(spec["output"])
    where = f"module {type(module).__name__}"
    handle = module.register_forward_hook(lambda m, args, out: _round_tree(out, r, where))
    return handle.remove


def _attacher(forward: Callable[[nn.Module, dict[str, Any]], Callable[..., Any]]) \
        -> Callable[[nn.Module, dict[str, Any]], Callable[[], None]]:
    """An op kind's ``attach``: the module's forward replaced by ``forward(module, spec)``."""
    return lambda module, spec: _override(module, forward(module, spec))


class BertResidualForward:
    """``LayerNorm(round(dropout(dense(h)) + input))``, then the output rounding."""

    def __init__(self, module: nn.Module, spec: dict[str, Any]) -> None:
        self.module = module
        self.residual = rounder(spec["residual"]) if spec.get("residual") else None
        self.output = rounder(spec["output"]) if spec.get("output") else None

    def __call__(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        m = self.module
        h = m.dropout(m.dense(hidden_states)) + input_tensor
        if self.residual is not None:
            h = straight_through(self.residual(h.double()).to(h.dtype), lambda: h, (h,))
        out = m.LayerNorm(h)
        if self.output is not None:
            out = straight_through(self.output(out.double()).to(out.dtype), lambda: out, (out,))
        return out


ATTENTION_FIELDS = ("compute", "operands", "softmax", "output")

OP_KINDS: list[OpKind] = [
    OpKind("bert-attention", _is_bert_attention, ATTENTION_FIELDS, _attacher(BertAttentionForward)),
    OpKind("gpt2-attention", _is_gpt2_attention, ATTENTION_FIELDS, _attacher(GPT2AttentionForward)),
    OpKind("mha", _is_multihead_attention, ATTENTION_FIELDS, _attacher(MultiheadAttentionForward)),
    OpKind("bert-residual", _is_bert_residual, ("residual", "output"), _attacher(BertResidualForward)),
    OpKind("module", lambda m: True, ("output",), _attach_output),
]


def register_op_kind(kind: OpKind) -> None:
    """Add an op kind, tried before the ones registered earlier (the catch-all ``module`` stays last)."""
    OP_KINDS.insert(0, kind)


def op_kind(module: nn.Module) -> OpKind:
    return next(k for k in OP_KINDS if k.matches(module))


def _rule_modules(pattern: str, modules: dict[str, nn.Module]) -> list[str]:
    if pattern.startswith("re:"):
        rx = re.compile(pattern[3:])
        return [n for n in modules if rx.fullmatch(n)]
    by_type = [n for n, m in modules.items() if pattern in _class_names(m)]
    return by_type or [n for n in modules if n and fnmatch.fnmatchcase(n, pattern)]


def resolve_ops(model: nn.Module, rules: list[OpRule]) -> dict[str, dict[str, Any]]:
    """``{module name: fields}`` of the ``ops:`` rules (a later rule's field wins); ValueError for a rule that
    matches nothing or a field a matched module's kind does not take."""
    modules = dict(model.named_modules())
    out: dict[str, dict[str, Any]] = {}
    for rule in rules:
        names = _rule_modules(rule.match, modules)
        if not names:
            raise ValueError(f"ops rule match {rule.match!r} matches no module; give a glob on the module name, "
                             "'re:REGEX' or a class name (e.g. LayerNorm, GELUActivation, BertSelfAttention)")
        fields = rule.fields()
        for n in names:
            kind = op_kind(modules[n])
            bad = sorted(set(k for k, v in fields.items() if v is not None) - set(kind.fields))
            if bad:
                raise ValueError(f"ops rule {rule.match!r}: module {n!r} ({type(modules[n]).__name__}, op kind "
                                 f"{kind.name}) takes {', '.join(kind.fields)}, not {', '.join(bad)}")
            out.setdefault(n, {}).update(fields)
    return {n: {k: v for k, v in f.items() if v is not None} for n, f in out.items()
            if any(v is not None for v in f.values())}


# ---- layers ------------------------------------------------------------------------------------------------------


class LayerForward:
    """A Linear / Conv1d / Conv2d / GPT-2 ``Conv1D`` forward whose dot products are ``compute``'s (weights and
    inputs as the layer's parametrizations and hooks give them).

    A ``Conv1D`` (a kind in :data:`dtypelab.model.methods.TRANSPOSED`: ``y = x W + b``, ``W`` stored
    ``(in, out)``) hands its stored weight to the matmul as it is; its output channels are the weight's columns
    (fixed-point weight scales: per tensor or ``channel:1``).
    """

    def __init__(self, name: str, module: nn.Module, compute: Compute, weight_scheme: Scheme | None = None,
                 activation: Any = None) -> None:
        self.name, self.module, self.compute = name, module, compute
        self.kind = next(k for k in COMPUTE_KINDS if k in _class_names(module))
        self.transposed = self.kind in TRANSPOSED
        self.weight_scheme, self.activation = weight_scheme, activation
        if self.kind not in ("Linear", *TRANSPOSED):
            if module.groups != 1 or module.padding_mode != "zeros" or \
                    (isinstance(module.padding, str) and module.padding != "valid"):
                raise ValueError(f"layer {name!r}: simulated {self.kind} supports groups=1 and zero padding given "
                                 f"as numbers (or 'valid'); got groups={module.groups}, padding={module.padding!r}")
        if compute.needs_scales:
            self._check_scales()

    def _check_scales(self) -> None:
        what = f"layer {self.name!r}"
        w = self.weight_scheme
        out_axis = 1 if self.transposed else 0  # where the stored weight's output channels are
        if w is not None and w.has_scales and w.granularity not in (PerTensor(), PerAxis(out_axis)):
            raise ValueError(f"{what}: a fixed-point accumulator needs weight scales per tensor or per output "
                             f"channel ({PerAxis(out_axis)} of a {self.kind}'s stored weight), got {w}")
        q = self.activation
        if q is not None and q.scheme.has_scales and (q.dynamic or q.scales.numel() != 1):
            raise ValueError(f"{what}: a fixed-point accumulator needs static per-tensor activation scales "
                             f"(activation_scales: static), got {q.scheme}"
                             f"{' with dynamic scales' if q.dynamic else ''}")

    def _scales(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(input scale, weight scale per output channel) of the fixed-point register's units."""
        if not self.compute.needs_scales:
            return 1.0, 1.0
        sx: torch.Tensor | float = 1.0
        q = self.activation
        if q is not None and q.scheme.has_scales:
            sx = q.scales.double().reshape(())
        sw: torch.Tensor | float = 1.0
        w = self.weight_scheme
        if w is not None and w.has_scales:
            raw = raw_weight(self.module, "weight").detach()
            sw = w.compute_scales(raw).double().reshape(-1)
        return sx, sw

    def __call__(self, input: torch.Tensor) -> torch.Tensor:
        m = self.module
        w, b = m.weight, m.bias
        sx, sw = self._scales()
        if self.kind == "Linear" or self.transposed:
            x2 = input.reshape(-1, input.shape[-1])
            wt = w if self.transposed else w.T  # [in, out]: a view, no copy
            y = self.compute.matmul(x2, wt, bias=b, scales=(sx, sw), dtype=input.dtype)
            y = y.reshape(*input.shape[:-1], wt.shape[1])
            return straight_through(y, lambda: F.linear(input, wt.T, b), (input, w, b))
        return straight_through(self._conv(input, w, b, sx, sw), lambda: m._conv_forward(input, w, b), (input, w, b))

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, sx: Any, sw: Any) -> torch.Tensor:
        m = self.module
        pad = (0,) * len(m.kernel_size) if m.padding == "valid" else m.padding
        one_d = self.kind == "Conv1d"
        if one_d:
            x, w = x.unsqueeze(2), w.unsqueeze(2)
            kernel, stride, pad, dil = (1, *m.kernel_size), (1, *m.stride), (0, *pad), (1, *m.dilation)
        else:
            kernel, stride, dil = m.kernel_size, m.stride, m.dilation
        cols = F.unfold(x, kernel, dilation=dil, padding=pad, stride=stride)  # [N, C*kh*kw, L]
        hgt = (x.shape[2] + 2 * pad[0] - dil[0] * (kernel[0] - 1) - 1) // stride[0] + 1
        wid = (x.shape[3] + 2 * pad[1] - dil[1] * (kernel[1] - 1) - 1) // stride[1] + 1
        bias = None if b is None else b.reshape(-1, 1)
        # rows of the product are output channels (weight scales), columns positions (the input's one scale)
        y = self.compute.matmul(w.reshape(w.shape[0], -1), cols, bias=bias, scales=(sw, sx), dtype=x.dtype)
        y = y.reshape(x.shape[0], w.shape[0], hgt, wid)
        return y.squeeze(2) if one_d else y


# ---- everything, attached and taken off ------------------------------------------------------------------------


@dataclass
class ArithState:
    """The arithmetic attached to a model: layer forwards (by name) and op rules, with what undoes them."""

    layers: dict[str, LayerForward] = field(default_factory=dict)
    ops: dict[str, dict[str, Any]] = field(default_factory=dict)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def attach(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        try:
            for lf in self.layers.values():
                self._undo.append(_override(lf.module, lf))
            for name, spec in self.ops.items():
                self._undo.append(op_kind(modules[name]).attach(modules[name], spec))
        except BaseException:
            self.detach(model)
            raise

    def detach(self, model: nn.Module) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def build(model: nn.Module, plans: Mapping[str, Any], op_specs: dict[str, dict[str, Any]],
          activations: Mapping[str, Any]) -> ArithState | None:
    """The :class:`ArithState` of resolved plans (their ``compute``) and ``ops:`` specs; None if there is none."""
    layers = {name: LayerForward(name, p.module, p.compute, p.weight, activations.get(name))
              for name, p in plans.items() if getattr(p, "compute", None) is not None}
    if not layers and not op_specs:
        return None
    return ArithState(layers, dict(op_specs))


__all__ = ["OpRule", "OpKind", "OP_KINDS", "register_op_kind", "op_kind", "resolve_ops",
           "LayerForward", "BertAttentionForward", "GPT2AttentionForward", "MultiheadAttentionForward",
           "BertResidualForward", "ArithState", "build", "COMPUTE_KINDS"]

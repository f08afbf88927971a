"""Input transforms of a Linear layer (equalization, Hadamard rotation) and folding them into the op before it.

A Linear layer ``y = x Wᵀ`` keeps its FP32 function when its input becomes ``x T`` and its weight ``W T⁻ᵀ``:

* equalization (:mod:`dtypelab.model.equalize`): ``T = diag(1/s)``, so ``x / s`` and ``W · diag(s)``;
* rotation (``rotate: hadamard[:SEED]``, QuaRot / SpinQuant style): ``T = R`` orthogonal, so ``x R`` and ``W R``,
  with ``R = diag(±1) · blockdiag(H_b) / √b`` — random signs (seeded) times Sylvester Hadamard blocks of the
  largest power of two ``b`` dividing the width (384 = 3 · 128: blocks of 128). An outlier channel's energy
  is spread over its block, so a 4-bit grid wastes less of its range on it.

**Folding**: instead of transforming the input on every forward pass (an explicit forward pre-hook), the op
that produces the input is changed so it already outputs ``y T``: a preceding ``Linear`` (rows and bias:
``W₁ ← Tᵀ W₁``, ``b₁ ← b₁ T``) or, for a diagonal ``T``, a preceding ``LayerNorm``'s affine weight and bias
(divided by ``s``). Where the preceding op is found (:func:`find_hosts`):

1. **torch.fx**, where the model traces (``torch.fx.symbolic_trace``): the layer's input node, walking back
   through single-user ``Identity`` / ``contiguous`` nodes (and, for a diagonal ``T`` with ``s > 0``, ReLU and
   dropout, since ``relu(y / s) = relu(y) / s`` and a mask is elementwise; a rotation passes ``Dropout(p=0)``
   only), must be a ``Linear`` or ``LayerNorm`` module called once whose output has no other user (a residual
   connection or a second consumer is another user: no fold).
2. **Hugging Face BERT** (which does not trace with ``torch.fx``): the name rule ``P.attention.self.value ->
   P.attention.output.dense`` under a module whose class name ends in ``SelfAttention``, for a diagonal ``T``
   only (``softmax(QKᵀ)·(V/s) = (softmax(QKᵀ)·V)/s``, and the heads' split and merge keep the channel order).
   BERT's LayerNorms are post-norm: each feeds the next block *and* the residual, so ``attention.output.LayerNorm
   -> intermediate.dense`` (and ``output.LayerNorm`` -> the next ``query/key/value``) cannot fold exactly;
   ``intermediate.dense -> output.dense`` has a GELU between. Those layers keep the explicit transform.

A host whose weight is tied elsewhere, or that has ``bias: int32``, keeps the explicit path; so does every
layer with ``fold: false`` in the config. The fold is a parametrization of the host's weight and bias (their
stored values are never changed), so ``restore`` is bit-exact.

Example:
    >>> import torch
    >>> r = hadamard(8, seed=0)
    >>> torch.allclose(r @ r.T, torch.eye(8), atol=1e-6), torch.allclose(r.abs(), torch.full((8, 8), 8 ** -0.5))
    (True, True)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

HADAMARD_SEED = 0


def hadamard(n: int, seed: int = HADAMARD_SEED, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``n × n`` orthogonal ``diag(±1) · blockdiag(H_b) / √b``, ``b`` the largest power of two dividing ``n``.

    Example:
        >>> hadamard(2, seed=1).abs().mul(2 ** 0.5).round().tolist()
        [[1.0, 1.0], [1.0, 1.0]]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a Hadamard rotation needs a positive width, got {n!r}")
    b = n & -n
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < b:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    signs = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed)).to(torch.float64) * 2 - 1
    r = torch.block_diag(*[h] * (n // b)) / b ** 0.5
    return (signs[:, None] * r).to(dtype)


def rotation_spec(spec: str) -> str:
    """The canonical ``rotate`` option: ``hadamard`` or ``hadamard:SEED`` (an integer >= 0).

    Example:
        >>> rotation_spec("Hadamard"), rotation_spec("hadamard:7")
        ('hadamard', 'hadamard:7')
    """
    if not isinstance(spec, str):
        raise TypeError(f"rotate must be a name such as 'hadamard', got {type(spec).__name__}")
    name, _, arg = spec.strip().lower().partition(":")
    if name != "hadamard" or (arg and not arg.isdigit()):
        raise ValueError(f"unknown rotation {spec!r}; valid: hadamard, hadamard:SEED (SEED an integer >= 0)")
    return "hadamard" if not arg or int(arg) == HADAMARD_SEED else f"hadamard:{int(arg)}"


def rotation(spec: str, width: int) -> Transform:
    """The rotation ``spec`` (:func:`rotation_spec`) of a layer with ``width`` input features."""
    _, _, arg = rotation_spec(spec).partition(":")
    return Transform(rotation=hadamard(width, int(arg) if arg else HADAMARD_SEED))


# ---- what a transform does to the layer, its input, and the op before it ------------------------------------------


@dataclass(frozen=True)
class Transform:
    """An input transform ``x -> x T`` of a Linear layer: ``scales`` (``T = diag(1/s)``) or ``rotation`` (``T = R``).
    ``transposed``: the layer's weight is stored ``(in, out)`` (GPT-2's ``Conv1D``; scales only), so its rows
    are the input channels."""

    scales: torch.Tensor | None = None
    rotation: torch.Tensor | None = None
    transposed: bool = False

    @property
    def diagonal(self) -> bool:
        return self.scales is not None

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """``x T`` (along the last axis)."""
        if self.diagonal:
            return x / self.scales.to(x.device, x.dtype)
        return x @ self.rotation.to(x.device, x.dtype)

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        """The layer's own weight ``W T⁻ᵀ`` (columns; rows when ``transposed``)."""
        if self.diagonal:
            s = self.scales.to(w.device, w.dtype)
            return w * s[:, None] if self.transposed else w * s
        return w @ self.rotation.to(w.device, w.dtype)

    def output(self, t: torch.Tensor) -> torch.Tensor:
        """A host's weight rows or bias (dim 0 is the output channel) so that the host outputs ``y T``."""
        if self.diagonal:
            s = self.scales.to(t.device, t.dtype)
            return t / s.reshape(-1, *[1] * (t.dim() - 1))
        r = self.rotation.to(t.device, t.dtype)
        return (r.T @ t.reshape(t.shape[0], -1)).reshape(t.shape)

    def __str__(self) -> str:
        return f"{self.scales.numel()} input channel scales" if self.diagonal else \
            f"{self.rotation.shape[0]}-wide rotation"


@dataclass(frozen=True)
class Host:
    """The op a layer's input transform folds into: ``module`` (called ``name``), a ``Linear`` or ``LayerNorm``."""

    name: str
    module: nn.Module

    @property
    def attrs(self) -> tuple[str, ...]:
        return tuple(a for a in ("weight", "bias") if getattr(self.module, a, None) is not None)


# ---- finding the preceding op ---------------------------------------------------------------------------------------

_PASS_METHODS = ("contiguous",)
_DIAGONAL_FUNCTIONS = (torch.relu, torch.nn.functional.relu, torch.nn.functional.dropout)


def _passes(node: torch.fx.Node, modules: dict[str, nn.Module], diagonal: bool) -> bool:
    """Whether ``f(y T) = f(y) T`` for the node's op ``f``: identities always; ReLU and dropout (an elementwise
    mask) for a positive diagonal ``T``; a rotation passes a Dropout module only with ``p = 0``."""
    if node.op == "call_method":
        return node.target in _PASS_METHODS
    if node.op == "call_function":
        return diagonal and node.target in _DIAGONAL_FUNCTIONS
    m = modules.get(node.target) if node.op == "call_module" else None
    return isinstance(m, nn.Identity) or (isinstance(m, nn.Dropout) and (diagonal or m.p == 0)) or \
        (diagonal and isinstance(m, nn.ReLU))


def _module_host(module: nn.Module, width: int, diagonal: bool) -> bool:
    if isinstance(module, nn.Linear):
        return module.out_features == width
    if isinstance(module, nn.LayerNorm):
        return diagonal and module.elementwise_affine and tuple(module.normalized_shape) == (width,)
    return False


def _fx_hosts(model: nn.Module, layers: dict[str, tuple[int, bool]]) -> dict[str, str] | None:
    """``{layer: host name}`` from the torch.fx graph, or None where the model does not trace."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as e:  # noqa: BLE001 - any tracing failure means: use the name rules
        log.debug("torch.fx cannot trace %s (%s): name rules only", type(model).__name__, e)
        return None
    calls: dict[str, list[torch.fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    modules = dict(model.named_modules())
    out = {}
    for name, (width, diagonal) in layers.items():
        if len(calls.get(name, [])) != 1:
            continue
        node = calls[name][0].args[0] if calls[name][0].args else None
        while isinstance(node, torch.fx.Node) and len(node.users) == 1 and _passes(node, modules, diagonal):
            node = node.args[0]
        if isinstance(node, torch.fx.Node) and node.op == "call_module" and len(node.users) == 1 \
                and len(calls[node.target]) == 1 and _module_host(modules[node.target], width, diagonal):
            out[name] = node.target
    return out


_BERT_OUTPUT = re.compile(r"(?P<prefix>(?:.*\.)?attention)\.output\.dense")


def _bert_hosts(model: nn.Module, layers: dict[str, tuple[int, bool]]) -> dict[str, str]:
    """The Hugging Face BERT name rule: ``P.attention.self.value -> P.attention.output.dense`` (diagonal only)."""
    modules = dict(model.named_modules())
    out = {}
    for name, (width, diagonal) in layers.items():
        m = _BERT_OUTPUT.fullmatch(name)
        if not diagonal or m is None:
            continue
        attn, value = modules.get(m["prefix"] + ".self"), modules.get(m["prefix"] + ".self.value")
        if attn is not None and type(attn).__name__.endswith("SelfAttention") and isinstance(value, nn.Linear) \
                and value.out_features == width:
            out[name] = m["prefix"] + ".self.value"
    return out


HOST_RULES: tuple[Callable[[nn.Module, dict[str, tuple[int, bool]]], dict[str, str] | None], ...] = (
    _fx_hosts, _bert_hosts)


def _tied(model: nn.Module, host: nn.Module) -> bool:
    ids = {id(getattr(host, a)) for a in ("weight", "bias") if getattr(host, a, None) is not None}
    return any(id(p) in ids for m in model.modules() if m is not host for p in m.parameters(recurse=False))


def find_hosts(model: nn.Module, transforms: dict[str, Transform], refuse: set[str] = frozenset()
               ) -> dict[str, Host]:
    """``{layer: Host}`` for the layers (Linear, by name) whose transform folds into the op before them: the
    first rule of :data:`HOST_RULES` that applies (torch.fx if the model traces, else the BERT name rule); a host
    serves one layer, is not in ``refuse`` (e.g. ``bias: int32`` layers), and has no tied parameters."""
    if not transforms:
        return {}
    layers = {n: (int(t.scales.numel() if t.diagonal else t.rotation.shape[0]), t.diagonal)
              for n, t in transforms.items()}
    found: dict[str, str] = {}
    for rule in HOST_RULES:
        got = rule(model, layers)
        if got is not None:
            found = got
            break
    modules = dict(model.named_modules())
    hosts, used = {}, set()
    for layer, host in found.items():
        if host in refuse or host in used or _tied(model, modules[host]):
            continue
        used.add(host)
        hosts[layer] = Host(host, modules[host])
    return hosts


__all__ = ["Transform", "Host", "hadamard", "rotation", "rotation_spec", "find_hosts", "HOST_RULES", "HADAMARD_SEED"]

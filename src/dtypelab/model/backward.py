"""Backward quantization: each layer's error, weight gradient and saved activations in their own formats.

A config's ``backward:`` section (:class:`dtypelab.model.config.BackwardSpec`, per layer like the forward) gives up
to three schemes, each with its own rounding (microxcaling's ``*_bp`` formats, QPyTorch's ``backward_number``):

* ``error``: the gradient w.r.t. the layer's input, as the layer passes it back. A forward pre-hook puts an
  identity :class:`RoundGrad` on each floating input: its backward returns ``fake_quantize(grad, scheme)``, so the
  layer before it receives exactly the scheme applied to the FP32 gradient;
* ``weight_grad``: the gradient w.r.t. each of its weights, rounded by a hook on the stored weight tensor (the
  parametrization's original, where the forward is quantized) before it reaches ``.grad``;
* ``saved``: the input the layer saves for its backward, stored rounded: inside the layer's forward a
  ``saved_tensors_hooks`` pair rounds every saved tensor that is a view of the layer's input (not its weights),
  so the weight gradient is computed from ``Q(x)``.

Layers without a ``backward`` section keep the straight-through FP32 backward of fake quantization.
:func:`attach_backward` attaches the hooks and returns the :class:`BackwardState` that removes them; attach it
after :func:`dtypelab.quantize_model`, so that the inputs it sees are those the layer computes with (after its
activation quantizer). Stochastic schemes draw from ``generator``.

Example:
    >>> import torch, dtypelab as dl
    >>> layer, x = torch.nn.Linear(4, 4), torch.randn(3, 4, requires_grad=True)
    >>> fp32 = torch.autograd.grad(layer(x).square().sum(), x)[0]
    >>> state = attach_backward(layer, {"backward": {"error": "int4/tensor/absmax"}})
    >>> rounded = torch.autograd.grad(layer(x).square().sum(), x)[0]
    >>> torch.equal(rounded, dl.fake_quantize(fp32, "int4/tensor/absmax")), torch.equal(rounded, fp32)
    (True, False)
    >>> state.remove()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dtypelab.model.config import QuantConfig, resolve
from dtypelab.model.layers import kind_of, raw_weight
from dtypelab.model.quantize import BACKWARD_ATTR as STATE_ATTR
from dtypelab.model.quantize import InputHook
from dtypelab.schemes import Scheme, fake_quantize

__all__ = ["RoundGrad", "attach_backward", "BackwardState", "backward_state"]



class RoundGrad(torch.autograd.Function):
    """Identity forward; the backward rounds the incoming gradient by ``scheme``.

    Example:
        >>> x = torch.tensor([0.3, -1.0], requires_grad=True)
        >>> y = RoundGrad.apply(x, Scheme.parse("int2/tensor/absmax"), None)
        >>> torch.autograd.grad(y, x, torch.tensor([0.3, -1.0]))[0].tolist()
        [0.0, -1.0]
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scheme: Scheme, generator: torch.Generator | None) -> torch.Tensor:
        ctx.scheme, ctx.generator = scheme, generator
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return fake_quantize(grad, ctx.scheme, generator=ctx.generator), None, None


class ErrorRounding(InputHook):
    """Forward pre-hook putting :class:`RoundGrad` on a layer's floating inputs that need a gradient."""

    def __init__(self, scheme: Scheme, arg_names: tuple[str, ...], generator: torch.Generator | None) -> None:
        self.scheme, self.arg_names, self.generator = scheme, arg_names, generator

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return RoundGrad.apply(x, self.scheme, self.generator) if x.requires_grad else x


class SavedRounding:
    """Forward pre-hook + forward hook: during the layer's forward, saved tensors that share storage with one of
    its floating inputs are stored as ``fake_quantize(t, scheme)``."""

    def __init__(self, scheme: Scheme, arg_names: tuple[str, ...], generator: torch.Generator | None) -> None:
        self.scheme, self.arg_names, self.generator = scheme, arg_names, generator
        self._active: list[tuple[Any, set[int]]] = []

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        inputs = self._active[-1][1]
        if t.is_floating_point() and t.untyped_storage().data_ptr() in inputs:
            return fake_quantize(t.detach(), self.scheme, generator=self.generator)
        return t

    def before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        values = [*args[: len(self.arg_names)], *(kwargs[n] for n in self.arg_names if n in kwargs)]
        inputs = {v.untyped_storage().data_ptr() for v in values
                  if isinstance(v, torch.Tensor) and v.is_floating_point()}
        hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        hooks.__enter__()
        self._active.append((hooks, inputs))

    def after(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self._active:
            self._active.pop()[0].__exit__(None, None, None)


@dataclass
class BackwardState:
    """The hooks :func:`attach_backward` put on a model; :meth:`remove` takes them off."""

    model: nn.Module
    plans: dict[str, Any]
    _handles: list[Any] = field(default_factory=list)

    def remove(self) -> None:
        """Take every hook off (the model's backward is straight-through FP32 again)."""
        for h in reversed(self._handles):
            h.remove()
        self._handles.clear()
        if self.model.__dict__.get(STATE_ATTR) is self:
            del self.model.__dict__[STATE_ATTR]


def backward_state(model: nn.Module) -> BackwardState | None:
    """The :class:`BackwardState` attached to ``model``, or None."""
    return model.__dict__.get(STATE_ATTR)


def attach_backward(model: nn.Module, config: QuantConfig | Mapping[str, Any] | str | os.PathLike,
                    generator: torch.Generator | None = None) -> BackwardState:
    """Attach the config's ``backward`` schemes to ``model``'s layers (replacing hooks attached before).

    Raises:
        ValueError: a bad config (as :func:`dtypelab.model.config.resolve`), or tied weights given different
            ``weight_grad`` schemes; nothing is attached then.
    """
    plans = {n: p for n, p in resolve(model, config).items() if p.backward is not None}
    weight_hooks: dict[int, tuple[str, torch.Tensor, Scheme]] = {}
    for name, plan in plans.items():
        if plan.backward.weight_grad is None:
            continue
        scheme = Scheme.parse(plan.backward.weight_grad)
        for owner, attr in kind_of(plan.module).weights(plan.module):
            w = raw_weight(owner, attr)
            if id(w) in weight_hooks and weight_hooks[id(w)][2] != scheme:
                raise ValueError(f"layer {name!r}: its {attr} is tied to layer {weight_hooks[id(w)][0]!r}'s, but the "
                                 f"weight_grad schemes differ ({scheme} vs {weight_hooks[id(w)][2]}): give them one")
            weight_hooks.setdefault(id(w), (name, w, scheme))
    previous = backward_state(model)
    if previous is not None:
        previous.remove()
    state = BackwardState(model, plans)
    for plan in plans.values():
        args = kind_of(plan.module).activation_args
        if plan.backward.error is not None and args:
            hook = ErrorRounding(Scheme.parse(plan.backward.error), args, generator)
            state._handles.append(plan.module.register_forward_pre_hook(hook, with_kwargs=True))
        if plan.backward.saved is not None and args:
            saved = SavedRounding(Scheme.parse(plan.backward.saved), args, generator)
            state._handles.append(plan.module.register_forward_pre_hook(saved.before, with_kwargs=True))
            state._handles.append(plan.module.register_forward_hook(saved.after, with_kwargs=True, always_call=True))
    for _, w, scheme in weight_hooks.values():
        state._handles.append(w.register_hook(lambda g, s=scheme: fake_quantize(g, s, generator=generator)))
    model.__dict__[STATE_ATTR] = state
    return state

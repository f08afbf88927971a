"""Which module types are quantized, and what of them: one registry entry per layer kind.

A layer kind names the module type, the weights it owns (``(owner, attribute)`` pairs: MultiheadAttention's
packed ``in_proj_weight`` or separate ``q/k/v_proj_weight``, plus ``out_proj.weight``), and which forward
inputs are its activations. Adding a kind is one :func:`register_layer_kind` call, not an if-ladder.

Example:
    >>> import torch
    >>> kind = kind_of(torch.nn.Linear(3, 2))
    >>> kind.name, [attr for _, attr in kind.weights(torch.nn.Linear(3, 2))]
    ('Linear', ['weight'])
    >>> kind_of(torch.nn.ReLU()) is None
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

WeightRefs = list[tuple[nn.Module, str]]


@dataclass(frozen=True)
class LayerKind:
    """A quantizable module type.

    Attributes:
        name: the type name rules match (``"Linear"``).
        cls: the module class (subclasses match too).
        weights: module -> the ``(owner, attribute)`` weight tensors to quantize.
        activation_args: names of the forward arguments that are activations, in positional order
            (empty: the inputs are not activations, e.g. Embedding's integer indices).
        owns_children: the kind quantizes its submodules itself (their own plans are not made).
    """

    name: str
    cls: type[nn.Module]
    weights: Callable[[nn.Module], WeightRefs]
    activation_args: tuple[str, ...] = ("input",)
    owns_children: bool = False


LAYER_KINDS: dict[str, LayerKind] = {}


def register_layer_kind(kind: LayerKind) -> LayerKind:
    """Add a quantizable layer kind (later registrations of the same name replace earlier ones)."""
    LAYER_KINDS[kind.name] = kind
    return kind


def _own_weight(m: nn.Module) -> WeightRefs:
    return [(m, "weight")]


def _mha_weights(m: nn.Module) -> WeightRefs:
    names = ["in_proj_weight"] if m._qkv_same_embed_dim else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    return [(m, n) for n in names] + [(m.out_proj, "weight")]


register_layer_kind(LayerKind("Linear", nn.Linear, _own_weight))
register_layer_kind(LayerKind("Conv1d", nn.Conv1d, _own_weight))
register_layer_kind(LayerKind("Conv2d", nn.Conv2d, _own_weight))
register_layer_kind(LayerKind("Embedding", nn.Embedding, _own_weight, activation_args=()))
register_layer_kind(LayerKind("MultiheadAttention", nn.MultiheadAttention, _mha_weights,
                              activation_args=("query", "key", "value"), owns_children=True))


def module_type(module: nn.Module) -> type[nn.Module]:
    """The module's class as the user built it (before parametrizations swapped it)."""
    return parametrize.type_before_parametrizations(module)


def kind_of(module: nn.Module) -> LayerKind | None:
    """The registered kind of ``module`` (nearest class in its MRO), or None."""
    for cls in module_type(module).__mro__:
        for kind in LAYER_KINDS.values():
            if kind.cls is cls:
                return kind
    return None


def raw_weight(owner: nn.Module, attr: str) -> torch.Tensor:
    """The stored (unquantized) tensor behind ``owner.attr``, parametrized or not."""
    if parametrize.is_parametrized(owner, attr):
        return owner.parametrizations[attr].original
    return getattr(owner, attr)


__all__ = ["LayerKind", "LAYER_KINDS", "register_layer_kind", "kind_of", "module_type", "raw_weight"]

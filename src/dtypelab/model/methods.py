"""How a layer's weights are rounded: one registry entry per method (``weights: {scheme: ..., method: NAME}``).

* ``rtn`` (the default) — round to nearest: the weight is fake-quantized from its current value on every use
  (scales from the current weight; the model still trains).
* ``gptq`` — :mod:`dtypelab.model.gptq`: rounded once, at ``quantize_model``, with the Hessian of the layer's
  calibration inputs; the scales are those of the original weight, then fixed. Linear layers.

A method that rounds once (``round`` not None) needs the layer's calibration inputs: ``quantize_model``
gathers them in the same calibration pass as the activations', before anything is changed.

Example:
    >>> sorted(WEIGHT_METHODS), weight_method("gptq").kinds
    (['gptq', 'rtn'], ('Linear',))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dtypelab.model.gptq import gptq, hessian
from dtypelab.schemes import Scheme

Rounder = Callable[[torch.Tensor, Scheme, list[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class WeightMethod:
    """A weight rounding method.

    Attributes:
        name: its config name.
        round: ``(weight, scheme, inputs) -> rounded weight`` (same shape and dtype, on the scheme's grid
            under the original weight's scales), run once with the layer's calibration inputs; None rounds
            to nearest on every use.
        kinds: the layer kinds it supports (empty: every kind).
    """

    name: str
    round: Rounder | None = None
    kinds: tuple[str, ...] = ()

    @property
    def needs_inputs(self) -> bool:
        """Whether it needs the layer's calibration inputs."""
        return self.round is not None


WEIGHT_METHODS: dict[str, WeightMethod] = {}


def register_weight_method(method: WeightMethod) -> WeightMethod:
    """Add a weight rounding method (a later registration of the same name replaces it)."""
    WEIGHT_METHODS[method.name] = method
    return method


def weight_method(name: str) -> WeightMethod:
    """The method called ``name``; a miss lists the valid ones.

    Example:
        >>> weight_method("RTN").needs_inputs
        False
    """
    if not isinstance(name, str):
        raise TypeError(f"a weight method must be a name, got {type(name).__name__}")
    found = WEIGHT_METHODS.get(name.strip().lower())
    if found is None:
        raise ValueError(f"unknown weight method {name!r}; valid: {', '.join(WEIGHT_METHODS)}")
    return found


def _gptq(weight: torch.Tensor, scheme: Scheme, inputs: list[torch.Tensor]) -> torch.Tensor:
    return gptq(weight, scheme, hessian(inputs).to(weight.device))


register_weight_method(WeightMethod("rtn"))
register_weight_method(WeightMethod("gptq", _gptq, kinds=("Linear",)))

__all__ = ["WeightMethod", "WEIGHT_METHODS", "register_weight_method", "weight_method"]

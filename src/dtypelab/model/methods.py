"""How a layer's weights are rounded: one registry entry per method (``weights: {scheme: ..., method: NAME}``).

* ``rtn`` (the default) — round to nearest: the weight is fake-quantized from its current value on every use
  (scales from the current weight; the model still trains).
* ``gptq`` — :mod:`dtypelab.model.gptq`: rounded once, at ``quantize_model``, with the Hessian of the layer's
  calibration inputs; the scales are those of the original weight, then fixed. Linear, Conv1d and Conv2d
  layers (a convolution's inputs are its ``unfold``-ed patches: :data:`INPUT_ROWS`; ``groups=1``, numeric
  padding with zeros), and transformers' GPT-2 ``Conv1D`` (weight stored ``(in, out)``: :data:`TRANSPOSED`).

A method that rounds once (``round`` not None) needs the layer's calibration inputs: ``quantize_model``
gathers them in the same calibration pass as the activations', before anything is changed.

Example:
    >>> sorted(WEIGHT_METHODS), weight_method("gptq").kinds
    (['gptq', 'rtn'], ('Linear', 'Conv1d', 'Conv2d', 'Conv1D'))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dtypelab.model.gptq import gptq, hessian
from dtypelab.model.layers import kind_of
from dtypelab.schemes import Scheme

Rounder = Callable[[nn.Module, torch.Tensor, Scheme, list[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class WeightMethod:
    """A weight rounding method.

    Attributes:
        name: its config name.
        round: ``(module, weight, scheme, inputs) -> rounded weight`` (same shape and dtype, on the scheme's
            grid under the original weight's scales), run once with the layer's calibration inputs; None
            rounds to nearest on every use.
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


def _linear_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def _conv_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Conv1d/Conv2d input's patches as rows ``[N · positions, in · kernel]`` (the weight's column order)."""
    if module.groups != 1 or isinstance(module.padding, str) or module.padding_mode != "zeros":
        raise ValueError(f"GPTQ on a {type(module).__name__} needs groups=1 and numeric zero padding, got "
                         f"groups={module.groups}, padding={module.padding!r}, padding_mode={module.padding_mode!r}")
    one_d = x.dim() in (2, 3) and len(module.kernel_size) == 1
    if one_d:  # Conv1d as a Conv2d of height 1 (an unbatched input gets a batch axis)
        x = (x if x.dim() == 3 else x[None])[:, :, None, :]
        pair = {k: (1, *getattr(module, k)) if k != "padding" else (0, *module.padding)
                for k in ("kernel_size", "dilation", "padding", "stride")}
    else:
        x = x if x.dim() == 4 else x[None]
        pair = {k: getattr(module, k) for k in ("kernel_size", "dilation", "padding", "stride")}
    cols = torch.nn.functional.unfold(x, **pair)  # [N, in · kernel, positions]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


INPUT_ROWS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "Linear": _linear_rows, "Conv1d": _conv_rows, "Conv2d": _conv_rows, "Conv1D": _linear_rows}
#: layer kinds whose weight is stored ``(in, out)`` (``y = x W``)
TRANSPOSED = frozenset({"Conv1D"})


def _gptq(module: nn.Module, weight: torch.Tensor, scheme: Scheme, inputs: list[torch.Tensor]) -> torch.Tensor:
    kind = kind_of(module).name
    h = hessian(INPUT_ROWS[kind](module, x) for x in inputs).to(weight.device)
    return gptq(weight, scheme, h, transposed=kind in TRANSPOSED)


register_weight_method(WeightMethod("rtn"))
register_weight_method(WeightMethod("gptq", _gptq, kinds=tuple(INPUT_ROWS)))

__all__ = ["WeightMethod", "WEIGHT_METHODS", "register_weight_method", "weight_method", "INPUT_ROWS", "TRANSPOSED"]

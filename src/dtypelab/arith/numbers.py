"""What a product, an accumulator or an op's output is rounded to: a :class:`Rounder` (float64 -> float64).

A spec is ``exact`` (no rounding: float64), ``fp32`` (IEEE single, round to nearest even: a float32 cast), or any
dtypelab format with an optional rounding after a slash: ``bf16``, ``fp(5,10)``, ``posit(16,1)``,
``e4m3/rz``, ``bf16/sr8`` (:mod:`dtypelab.kernels.rounding`).

Example:
    >>> import torch
    >>> rounder("bf16")(torch.tensor([1 + 2**-9], dtype=torch.float64)).tolist()
    [1.0]
    >>> rounder("fp32").bits, rounder("posit(8,1)").kind
    (32, 'posit')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dtypelab.formats import Domain, FloatFormat, Integer, LogPosit, Posit, fmt
from dtypelab.kernels.accumulate import FP32 as FP32_GRID
from dtypelab.kernels.accumulate import FloatGrid
from dtypelab.kernels.rounding import Rounding

EXACT_WORDS = ("exact", "fp64", "float64")
FP32_WORDS = ("fp32", "float32")


@dataclass(frozen=True)
class Rounder:
    """Rounds float64 tensors to a number format; ``bits`` and ``kind`` (fp, posit, lp, int, exact) price it."""

    spec: str
    bits: int
    kind: str
    fn: Callable[[torch.Tensor], torch.Tensor] = field(compare=False, repr=False)
    grid: FloatGrid | None = field(default=None, compare=False, repr=False)  # the same rounding, for fused kernels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def __str__(self) -> str:
        return self.spec

    @property
    def exact(self) -> bool:
        return self.kind == "exact"


def _grid(f: object, rounding: Rounding) -> FloatGrid | None:
    """The float grid of a signed float format with infinities, subnormals and negative zero, rounded to
    nearest even (finite values saturating, as ``quantize`` does); None for any other format or rounding."""
    if isinstance(f, FloatFormat) and f.domain == Domain.EXTENDED and f.signed and f.subnormals \
            and f.negative_zero and f.precision >= 2 and rounding == Rounding():
        return FloatGrid(f.precision, math.frexp(f.min_positive)[1] - 1, f.max, saturate=True)
    return None


def _fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).to(x.dtype)


_KINDS = ((Posit, "posit"), (LogPosit, "lp"), (FloatFormat, "fp"), (Integer, "int"))


def rounder(spec: str | Rounder) -> Rounder:
    """The rounder of ``spec`` (see the module docstring); ValueError naming a spec that does not parse."""
    if isinstance(spec, Rounder):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"number format {spec!r}: give 'exact', 'fp32' or a dtypelab format such as 'bf16', "
                         "'fp(5,10)', 'posit(16,1)', optionally with a rounding: 'bf16/rz'")
    text = spec.strip()
    low = text.lower()
    if low in EXACT_WORDS:
        return Rounder("exact", 64, "exact", lambda x: x)
    if low in FP32_WORDS:
        return Rounder("fp32", 32, "fp", _fp32, FP32_GRID)
    name, _, mode = text.partition("/")
    if name.strip().lower() in FP32_WORDS:
        if Rounding.parse(mode) != Rounding():
            raise ValueError(f"number format {spec!r}: fp32 rounds to nearest even only (a float32 cast); "
                             "give 'fp32' or a dtypelab format with a rounding such as 'bf16/rz'")
        return Rounder("fp32", 32, "fp", _fp32, FP32_GRID)
    try:
        f = fmt(name.strip())
        rounding = Rounding.parse(mode or None)
    except ValueError as e:
        raise ValueError(f"number format {spec!r} does not parse: {e}") from None
    kind = next((k for cls, k in _KINDS if isinstance(f, cls)), "codebook")
    canonical = str(f) if rounding == Rounding() else f"{f}/{rounding}"
    return Rounder(canonical, f.bits, kind, lambda x: f.quantize(x, rounding=rounding), _grid(f, rounding))


def straight_through(sim: torch.Tensor, exact: Callable[[], torch.Tensor],
                     inputs: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
    """``sim`` forward and the gradient of ``exact()`` backward, where a gradient is wanted (else just ``sim``).

    Example:
        >>> x = torch.tensor([1.1], requires_grad=True)
        >>> y = straight_through(x.detach().round(), lambda: 3 * x, (x,))
        >>> y.backward(); y.item(), x.grad.item()
        (1.0, 3.0)
    """
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        y = exact()
        return y + (sim.to(y.dtype) - y).detach()
    return sim


__all__ = ["Rounder", "rounder", "straight_through"]

"""How scales are stored: not at all (``none``), as float32 (``fp32``), or in any number format (``e8m0``,
``e4m3``, ``bf16`` ...), optionally relative to one float32 scale per tensor (``e4m3+fp32``: NVFP4). A stored
scale is what the arithmetic uses, so scales are rounded to their storage before any element is divided by
them.

A format whose positive values are all powers of two (E8M0) stores a scale rounded *up* to its next value, so
that nothing clips (what OCP MX and the lab's power-of-two scales do), and a scale above its largest value is
NaN; any other format rounds to nearest, never to zero (a scale below its smallest positive value becomes that
value).

Example:
    >>> import torch
    >>> st = scale_storage("e8m0")
    >>> str(st), st.bits, st.pow2, st.store(torch.tensor([0.3, 4.0], dtype=torch.float64)).tolist()
    ('e8m0', 8, True, [0.5, 4.0])
    >>> scale_storage("e4m3").store(torch.tensor([0.3, 1e-9], dtype=torch.float64)).tolist()
    [0.3125, 0.001953125]
    >>> small = torch.tensor([3e-5, 1e-6], dtype=torch.float64)
    >>> scale_storage("e4m3").store(small).tolist(), scale_storage("e4m3+fp32").store(small).tolist()
    ([0.001953125, 0.001953125], [2.9999999242136255e-05, 1.0044642522188951e-06])
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from dtypelab.formats import Format, fmt

log = logging.getLogger(__name__)


class ScaleStorage:
    """Base of the scale storages (frozen dataclasses with a canonical ``str``)."""

    bits: int  # per group
    pow2: bool  # every stored scale is a power of two (a scaled product is then a shift)
    tensor_bits: int = 0  # stored once per tensor (a second-level scale)

    def store(self, s: torch.Tensor) -> torch.Tensor:
        """Positive float64 scales -> the stored values (float64)."""
        raise NotImplementedError


@dataclass(frozen=True)
class NoScale(ScaleStorage):
    """No scale is stored: every scale is 1."""

    bits: int = 0
    pow2: bool = True

    def __str__(self) -> str:
        return "none"

    def store(self, s: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(s)


FLOAT32_TINY, FLOAT32_MAX = 2.0**-149, float(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class Float32Scale(ScaleStorage):
    """IEEE float32 scales, clamped to float32's positive range (``[2^-149, max]``): a scale of a float64
    tensor beyond it would turn every element into NaN; clamped, the elements saturate instead (and a warning is
    logged)."""

    bits: int = 32
    pow2: bool = False

    def __str__(self) -> str:
        return "fp32"

    def store(self, s: torch.Tensor) -> torch.Tensor:
        clamped = s.clamp(FLOAT32_TINY, FLOAT32_MAX)
        if bool(((clamped != s) & ~torch.isnan(s)).any()):
            log.warning("%d scale(s) beyond float32's range were clamped to [2^-149, %g]: those groups saturate",
                        int(((clamped != s) & ~torch.isnan(s)).sum()), FLOAT32_MAX)
        return clamped.float().double()


@dataclass(frozen=True)
class FormatScale(ScaleStorage):
    """Scales stored as codes of ``format`` (at most 16 bits: its value table is searched). With
    ``tensor_scale`` (spelled ``FORMAT+fp32``), NVIDIA's NVFP4 layout: the group scales are stored relative to
    one float32 scale per tensor, ``g = float32(max(s) / format.max)``, as ``float32(g * Q(s / g))``, so the
    format's range follows the tensor's instead of clipping small tensors to its smallest value."""

    format: Format
    tensor_scale: bool = False
    bits: int = field(init=False)
    pow2: bool = field(init=False)
    tensor_bits: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensor_bits", 32 if self.tensor_scale else 0)
        v = self.format.values()  # raises naming the format when it has no value table
        positive = v[v > 0]
        if not positive.numel():
            raise ValueError(f"scale format {self.format} has no positive value to store a scale in")
        object.__setattr__(self, "bits", self.format.bits)
        object.__setattr__(self, "pow2", bool((torch.frexp(positive).mantissa == 0.5).all()))

    def __str__(self) -> str:
        return f"{self.format}+fp32" if self.tensor_scale else str(self.format)

    def store(self, s: torch.Tensor) -> torch.Tensor:
        s = s.to(torch.float64)
        if self.tensor_scale:
            finite = s[torch.isfinite(s)]
            top = float(finite.max()) if finite.numel() else 1.0
            g = FP32.store(torch.tensor([top / self.format.max], dtype=torch.float64))
            return FP32.store(g * FormatScale(self.format).store(s / g))  # the product, as float32 hardware has it
        if self.pow2:  # round up: the smallest stored value >= s; NaN past the largest
            v = self.format.values()
            v = v[v > 0].to(s.device)
            i = torch.searchsorted(v, s.contiguous()).clamp(max=v.numel() - 1)
            up = v[i]
            return torch.where(torch.isnan(s) | (s > v[-1]), torch.full_like(up, math.nan), up)
        q = self.format.quantize(s)
        return torch.where(q > 0, q, torch.full_like(q, self.format.min_positive))


NONE, FP32 = NoScale(), Float32Scale()


def scale_storage(spec: str | Format | ScaleStorage) -> ScaleStorage:
    """``none``, ``fp32``, or any format spec of at most 16 bits, optionally ``+fp32`` (a ScaleStorage or Format
    passes through)."""
    if isinstance(spec, ScaleStorage):
        return spec
    if isinstance(spec, str):
        return _parsed(spec.strip().lower())
    return FormatScale(fmt(spec))


@lru_cache(maxsize=64)
def _parsed(text: str) -> ScaleStorage:
    if text in ("none", "fp32"):
        return NONE if text == "none" else FP32
    if text.endswith("+fp32"):
        return FormatScale(fmt(text.removesuffix("+fp32")), tensor_scale=True)
    return FormatScale(fmt(text))


__all__ = ["ScaleStorage", "NoScale", "Float32Scale", "FormatScale", "scale_storage", "NONE", "FP32"]

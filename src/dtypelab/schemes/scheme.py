"""Scheme = format + granularity + scale rule (+ how scales are stored).

Canonical string: ``FORMAT/GRANULARITY/SCALE[/SCALE_FORMAT]`` (the last part only when it is not the rule's
default), e.g. ``posit(6,1)/channel/log2-hist``, ``nf4/block:64/absmax``, ``e4m3/block:32/mx``. A bare
format means ``FORMAT/tensor/none``. Aliases: ``mxfp8``, ``mxfp6``, ``mxfp4``, ``mxint8``, ``nvfp4``.

Scales multiply: ``x ≈ Q(x / s) * s`` (for unsigned integers ``(Q(x / s + zp) - zp) * s`` with
``zp = 2^(n-1)``). Scale formats: ``none`` (no scale stored), ``fp32``, ``e8m0`` (a power of two as an
8-bit biased exponent, rounded up so nothing clips; the default for ``pow2`` and ``mx``), or any format
spec (e.g. ``e4m3`` for NVFP4-style scales).

Example:
    >>> import torch, dtypelab as dl
    >>> s = dl.Scheme(format="posit(6,1)", granularity="channel", scale="log2-energy")
    >>> str(s), dl.Scheme.parse(str(s)) == s
    ('posit(6,1)/channel/log2-energy', True)
    >>> str(dl.Scheme.parse("mxfp8"))
    'e4m3/block:32/mx'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from dtypelab.formats import Format, fmt
from dtypelab.schemes.granularity import Granularity, Layout
from dtypelab.schemes.scales import ANY_DTYPE, MX_ELEMENTS, RULES, ElementRange, element_range

ALIASES = {
    "mxfp8": "e4m3/block:32/mx", "mxfp8_e5m2": "e5m2/block:32/mx", "mxfp6": "e3m2/block:32/mx",
    "mxfp6_e2m3": "e2m3/block:32/mx", "mxfp4": "e2m1/block:32/mx", "mxint8": "int8/block:32/mx",
    "nvfp4": "e2m1/block:16/absmax/e4m3",
}
E8M0 = "e8m0"


def _default_scale_format(scale: str) -> str:
    return "none" if scale == "none" else E8M0 if scale in ("pow2", "mx") else "fp32"


@dataclass(frozen=True)
class Scheme:
    """How a tensor is quantized. ``format``/``granularity`` accept spec strings."""

    format: Format
    granularity: Granularity = field(default_factory=Granularity)
    scale: str = "none"
    scale_format: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", fmt(self.format))
        object.__setattr__(self, "granularity", Granularity.parse(self.granularity))
        if self.scale not in RULES:
            raise ValueError(f"unknown scale rule {self.scale!r}; valid: {', '.join(RULES)}")
        sf = (self.scale_format or _default_scale_format(self.scale)).strip().lower()
        if sf not in ("none", "fp32", E8M0):
            sf = str(fmt(sf))  # any format may store scales; raises naming the valid forms
        if (sf == "none") != (self.scale == "none"):
            raise ValueError(f"scale_format 'none' goes with scale 'none' only (got scale={self.scale!r}, "
                             f"scale_format={sf!r})")
        object.__setattr__(self, "scale_format", sf)
        if self.scale == "mx":
            if str(self.format) not in MX_ELEMENTS:
                raise ValueError(f"mx scaling needs an MX element format ({', '.join(MX_ELEMENTS)}), "
                                 f"got {self.format}")
            if self.granularity.kind != "block":
                raise ValueError(f"mx scaling shares one exponent per block: use granularity block:32, "
                                 f"got {self.granularity}")

    @classmethod
    def parse(cls, spec: str | Scheme) -> Scheme:
        """Parse ``FORMAT[/GRANULARITY[/SCALE[/SCALE_FORMAT]]]`` or an alias."""
        if isinstance(spec, Scheme):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"a scheme spec must be a string or Scheme, got {type(spec).__name__}")
        text = spec.strip().lower().replace(" ", "")
        parts = ALIASES.get(text, text).split("/")
        if len(parts) > 4 or not parts[0]:
            raise ValueError(f"bad scheme {spec!r}: expected FORMAT[/GRANULARITY[/SCALE[/SCALE_FORMAT]]], e.g. "
                             "'posit(6,1)/channel/log2-hist', or one of " + ", ".join(ALIASES))
        names = ("format", "granularity", "scale", "scale_format")
        return cls(**dict(zip(names, parts, strict=False)))

    def __str__(self) -> str:
        text = f"{self.format}/{self.granularity}/{self.scale}"
        if self.scale_format != _default_scale_format(self.scale):
            text += f"/{self.scale_format}"
        return text

    @property
    def element_range(self) -> ElementRange:
        return element_range(self.format)

    @property
    def scale_bits(self) -> int:
        """Bits stored per scale."""
        sf = self.scale_format
        return 0 if sf == "none" else 32 if sf == "fp32" else 8 if sf == E8M0 else fmt(sf).bits

    # ---- the arithmetic, on rows [groups, size] -------------------------------------------------------------

    def quantize_rows(self, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Q of already-scaled rows, in the rows' dtype (saturating; MX clips to ±max first); ``out`` may be
        ``rows`` itself."""
        rng = self.element_range
        if self.scale == "mx":
            rows = rows.clamp(-rng.max, rng.max)
        if rng.zero_point:
            return self.format.quantize(rows + rng.zero_point, out=out).sub_(rng.zero_point)
        return self.format.quantize(rows, out=out)

    def row_scales(self, rows: torch.Tensor) -> torch.Tensor:
        """Stored scales ``[groups]`` (float64) for rows, by the rule, then rounded to the scale format
        (MX scales come out of their rule E8M0-exact)."""
        rows = rows.detach() if self.scale in ANY_DTYPE else rows.detach().to(torch.float64)
        s = RULES[self.scale](rows, self.element_range, self.quantize_rows)
        return s if self.scale == "mx" else store_scales(s, self.scale_format)

    def group(self, x: torch.Tensor) -> tuple[torch.Tensor, Layout]:
        return self.granularity.group(x)

    def compute_scales(self, x: torch.Tensor) -> torch.Tensor:
        """Scales of ``x``'s groups: 0-d for tensor, broadcastable along the axis for channel, else ``[groups]``."""
        rows, _ = self.group(x)
        s = self.row_scales(rows)
        if self.granularity.kind == "tensor":
            return s.reshape(())
        if self.granularity.kind == "channel":
            shape = [1] * x.dim()
            shape[self.granularity.axis] = -1
            return s.reshape(shape)
        return s


def store_scales(s: torch.Tensor, scale_format: str) -> torch.Tensor:
    """Round scales to how they are stored (float64 tensor of the stored values)."""
    if scale_format == "none":
        return torch.ones_like(s)
    if scale_format == "fp32":
        return s.float().double()
    if scale_format == E8M0:
        k = torch.ceil(torch.log2(s))
        out = torch.exp2(k.clamp(-127, 127))
        return torch.where(torch.isnan(s) | (k > 127), torch.full_like(out, math.nan), out)
    f = fmt(scale_format)
    q = f.quantize(s.to(torch.float64))
    return torch.where(q > 0, q, torch.full_like(q, f.min_positive))
